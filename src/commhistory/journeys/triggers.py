"""Journey triggers that fire from the stored history, and wakes on new behaviour.

:func:`run_triggers` is what a host calls on a schedule (every few minutes, or
from ``commhistory journey triggers``): for each journey it reads what was
stored since that journey's **trigger mark** (table
``journey_trigger_marks``, migration 0016) and enrolls the contacts the
trigger names, a batch at a time through
:func:`~commhistory.journeys.engine.enroll_batch` (what
:func:`~commhistory.journeys.engine.enroll` does per trigger, with a constant
number of statements per batch):

* **activity**: each new activity of the trigger's name whose plain
  properties carry the trigger's ``properties``; the trigger id is the
  activity id, the entry properties are the activity's plain properties (so
  ``match`` goals work), the entry instant is ``occurred_at``;
* **event**: each new message event of the type (not flagged ``machine``; of
  the ``campaign`` and ``channel`` when given); the trigger id is the event id;
* **segment**: each contact who entered the saved segment between two of its
  snapshots (the run takes one at ``now`` unless one was taken for that
  instant); the trigger id is ``segment:<name>:<snapshot id>:<contact id>``
  (the snapshot that showed the entry), the entry instant that snapshot's
  ``at``;
* **date**: each contact whose current value of the ``date`` attribute, plus
  ``offset_days`` (yearly with ``annual``, from the date's own year on;
  29 February on 28 February in other years), at the local time ``at`` in
  the contact's zone, falls in ``(the last run's now, now]``; the trigger id is
  ``date:<attribute>:<the local date it fires>:<contact id>``.

**Which rows are new.** Activities and events are read by their stored-at
sequence (``stored_seq``, migration 0014), as the analytics export reads them:
a mark says "every row stored below this bound and happened at or before this
instant was read". A row stored late with an earlier time is read by the next
run; a row that happened after the run's ``now`` (a simulated clock) waits for
a run whose ``now`` is past it. Nothing older than ``max_age`` before ``now``
fires a trigger (a late import of old history starts no journey); the first
run of a journey reads back ``max_age`` (default one day).

**Retries.** Each batch of enrollments is one transaction and every trigger id
is derived from the triggering record, so a run repeated after a crash (or
twice) enrolls nobody twice; the mark moves only after a source was read to
its end.

**Wakes.** The same run reads the behaviour stored since the wake mark (key
``*``): events, activities and consent ledger entries, per contact the earliest
instant (events and activities by a range of their ``stored_seq`` index,
migration 0018: from the watermark, or from the lowest row stored before it
that happened after the last run's ``now``, kept as the wake key's ``pending``
mark); and the contacts who left a saved segment named by a ``segment_exit``
goal (a snapshot is taken for each such segment too). The active enrollments of
those contacts that wait at a branch, or whose journey version has goals, get
``wake_at`` set to that instant (unless they wake earlier already), so the next
:func:`~commhistory.journeys.engine.due` goes on from the behaviour without
waiting for the hourly recheck.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final
from zoneinfo import ZoneInfo

import attrs

from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.journeys.definition import (
    ActivityTrigger,
    BranchStep,
    DateTrigger,
    EventTrigger,
    Journey,
    SegmentExitGoal,
    SegmentTrigger,
)
from commhistory.journeys.engine import enroll_batch, save_journey
from commhistory.normalize.time import from_micros, to_micros
from commhistory.segments.saved import snapshot
from commhistory.store.journeys import TriggerMark, TriggerRecord, WakeScope
from commhistory.store.protocol import Repository
from commhistory.store.segments import SnapshotInfo

__all__ = [
    "DEFAULT_MAX_AGE",
    "WAKE_KEY",
    "TriggerReport",
    "anniversary",
    "date_fires",
    "require_date_attribute",
    "run_triggers",
]

DEFAULT_MAX_AGE: Final = dt.timedelta(days=1)
"""How far back a trigger reads; nothing that happened longer ago than this fires it."""

WAKE_KEY: Final = "*"
"""The journey key of the wake feeds' marks (no journey key can be ``*``)."""

_UTC: Final = ZoneInfo("UTC")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PLAIN = (str, int, bool)


@attrs.frozen(kw_only=True)
class TriggerReport:
    """What one :func:`run_triggers` call did.

    Attributes:
        read: Per journey key, the triggering records (or segment entries, or
            date occurrences) read.
        enrolled: Per journey key, the enrollments this call stored.
        kept_out: Per journey key, the triggers the re-entry policy refused.
        woken: How many contacts had new behaviour (or left a segment); their
            active enrollments that wait at a branch or have goals were woken.
        snapshots: The segment snapshots this call took (ids).

    .. versionadded:: 0.4.0
    """

    read: Mapping[str, int] = attrs.field(factory=dict)
    enrolled: Mapping[str, int] = attrs.field(factory=dict)
    kept_out: Mapping[str, int] = attrs.field(factory=dict)
    woken: int = 0
    snapshots: tuple[str, ...] = ()


def _aware(value: object, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidInputError(field=field, reason="must be a timezone-aware datetime")
    # The store keeps microseconds: compare marks and instants at that precision.
    return from_micros(to_micros(value))


def _check_clock(mark: TriggerMark | None, now: dt.datetime, key: str) -> None:
    if mark is not None and mark.until is not None and mark.until > now:
        raise InvalidInputError(
            field="now", reason=f"is earlier than the last trigger run of journey {key!r}"
        )


def _chunks(items: Sequence[_Entry], size: int) -> Iterator[Sequence[_Entry]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_Entry = tuple[str, str, dt.datetime, Mapping[str, object]]
"""One enrollment to make: contact id, trigger id, entry instant, entry properties."""


@attrs.define
class _Run:
    """One call's state: the repository, the clock, the bound, the snapshots taken."""

    repo: Repository
    now: dt.datetime
    since: dt.datetime
    bound: int
    batch_size: int
    zone_of: Callable[[str], ZoneInfo]
    read: dict[str, int] = attrs.field(factory=dict)
    enrolled: dict[str, int] = attrs.field(factory=dict)
    kept_out: dict[str, int] = attrs.field(factory=dict)
    taken: list[str] = attrs.field(factory=list)
    shots: dict[str, list[SnapshotInfo]] = attrs.field(factory=dict)
    members: dict[str, frozenset[str]] = attrs.field(factory=dict)

    def enroll(self, journey: Journey, entries: Sequence[_Entry]) -> None:
        """Enroll *entries* in batches, each one transaction of a constant number of statements.

        Triggers stored already (a retried run) are skipped: neither enrolled
        nor kept out.
        """
        key = journey.key
        self.read[key] = self.read.get(key, 0) + len(entries)
        for chunk in _chunks(entries, self.batch_size):
            done = enroll_batch(self.repo, journey, chunk)
            if done.enrolled:
                self.enrolled[key] = self.enrolled.get(key, 0) + len(done.enrolled)
            if done.kept_out:
                self.kept_out[key] = self.kept_out.get(key, 0) + len(done.kept_out)

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        """The segment's snapshots up to now, by ``at``; one at ``now`` is taken if missing."""
        if name not in self.shots:
            stored = self.repo.segment_store.snapshots(name)
            if not any(s.at == self.now for s in stored):
                info = snapshot(self.repo, name, at=self.now)
                self.taken.append(info.snapshot_id)
                stored = [*stored, info]
            self.shots[name] = sorted(
                (s for s in stored if s.at <= self.now),
                key=lambda s: (s.at, s.taken_at, s.snapshot_id),
            )
        return self.shots[name]

    def ids(self, snapshot_id: str) -> frozenset[str]:
        """A snapshot's members (read once per call)."""
        if snapshot_id not in self.members:
            self.members[snapshot_id] = frozenset(
                self.repo.segment_store.snapshot_members(snapshot_id)
            )
        return self.members[snapshot_id]

    def pairs(
        self, name: str, mark: TriggerMark | None
    ) -> tuple[list[tuple[SnapshotInfo, SnapshotInfo]], TriggerMark]:
        """The consecutive snapshot pairs after the mark's snapshot, and the mark after them.

        Without a mark (or when its snapshot is gone) the pairs start at the
        snapshot before the latest: changes before a journey's first run do not count.
        """
        shots = self.snapshots(name)
        ids = [s.snapshot_id for s in shots]
        if mark is not None and mark.snapshot_id in ids:
            first = ids.index(mark.snapshot_id)
        else:
            first = len(shots) - 2
        pairs = [(shots[k - 1], shots[k]) for k in range(max(first + 1, 1), len(shots))]
        last = shots[-1].snapshot_id if shots else None
        return pairs, TriggerMark(until=self.now, snapshot_id=last)


def _records(
    run: _Run,
    read: Callable[[tuple[dt.datetime, str] | None], list[TriggerRecord]],
) -> Iterator[list[TriggerRecord]]:
    """The batches a keyset-paged store read returns."""
    start: tuple[dt.datetime, str] | None = None
    while True:
        rows = read(start)
        if rows:
            yield rows
        if len(rows) < run.batch_size:
            return
        start = (rows[-1].occurred_at, rows[-1].record_id)


def _plain(values: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in values.items() if isinstance(v, _PLAIN)}


def _activity(
    run: _Run, journey: Journey, trigger: ActivityTrigger, mark: TriggerMark | None
) -> TriggerMark:
    store = run.repo.journey_store

    def read(start: tuple[dt.datetime, str] | None) -> list[TriggerRecord]:
        return store.trigger_activities(
            trigger.name, after=mark, before=run.bound, since=run.since, until=run.now,
            start=start, limit=run.batch_size,
        )  # fmt: skip

    for rows in _records(run, read):
        entries: list[_Entry] = [
            (r.contact_id, r.record_id, r.occurred_at, _plain(r.properties))
            for r in rows
            if all(r.properties.get(k) == v for k, v in trigger.properties.items())
        ]
        run.enroll(journey, entries)
    return TriggerMark(watermark=max(run.bound, mark.watermark if mark else 0), until=run.now)


def _event(
    run: _Run, journey: Journey, trigger: EventTrigger, mark: TriggerMark | None
) -> TriggerMark:
    store = run.repo.journey_store

    def read(start: tuple[dt.datetime, str] | None) -> list[TriggerRecord]:
        return store.trigger_events(
            trigger.event, campaign=trigger.campaign, channel=trigger.channel, after=mark,
            before=run.bound, since=run.since, until=run.now, start=start, limit=run.batch_size,
        )  # fmt: skip

    for rows in _records(run, read):
        run.enroll(journey, [(r.contact_id, r.record_id, r.occurred_at, {}) for r in rows])
    return TriggerMark(watermark=max(run.bound, mark.watermark if mark else 0), until=run.now)


def _segment(
    run: _Run, journey: Journey, trigger: SegmentTrigger, mark: TriggerMark | None
) -> TriggerMark:
    pairs, after = run.pairs(trigger.segment, mark)
    for before, current in pairs:
        if current.at < run.since:
            continue  # too old to start a journey now
        entered = sorted(run.ids(current.snapshot_id) - run.ids(before.snapshot_id))
        name = trigger.segment
        run.enroll(
            journey,
            [(c, f"segment:{name}:{current.snapshot_id}:{c}", current.at, {}) for c in entered],
        )
    return after


def anniversary(value: dt.date, year: int) -> dt.date:
    """*value*'s month and day in *year*; 29 February is 28 February in a common year.

    .. versionadded:: 0.4.0
    """
    if value.month == 2 and value.day == 29 and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return value.replace(year=year)


def _days(first: dt.date, last: dt.date) -> Iterable[dt.date]:
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


def require_date_attribute(repo: Repository, trigger: DateTrigger) -> None:
    """Check that a date trigger names a declared plain ``date`` attribute.

    Raises:
        InvalidInputError: It does not (``field="trigger.attribute"``).

    .. versionadded:: 0.4.0
    """
    declared = {d.name: d for d in repo.attribute_store.definitions()}
    d = declared.get(trigger.attribute)
    if d is None or d.type != "date" or d.personal:
        raise InvalidInputError(
            field="trigger.attribute", reason="must name a declared plain date attribute"
        )


def date_fires(
    trigger: DateTrigger, value: dt.date, zone: ZoneInfo, after: dt.datetime, until: dt.datetime
) -> list[tuple[dt.date, dt.datetime]]:
    """When a date trigger fires for a contact whose attribute is *value*, in ``(after, until]``.

    Each local date it fires on (``value`` plus ``offset_days``; with
    ``annual``, its anniversary in every year from ``value``'s own on, 29
    February on 28 February in common years) at the trigger's ``at`` in
    *zone*, with that instant in UTC, in time order. The live trigger and the
    dry-run replay both use it.

    .. versionadded:: 0.4.0
    """
    # Every zone is within a day of UTC: two days of margin hold every local fire date.
    first = (after - dt.timedelta(days=2)).date()
    last = (until + dt.timedelta(days=2)).date()
    offset = dt.timedelta(days=trigger.offset_days)
    if trigger.annual:
        years = range(max(value.year, first.year - 1), last.year + 2)
        days = [anniversary(value, y) + offset for y in years]
    else:
        days = [value + offset]
    out: list[tuple[dt.date, dt.datetime]] = []
    for day in days:
        fire = dt.datetime.combine(day, trigger.at, tzinfo=zone).astimezone(dt.UTC)
        if after < fire <= until:
            out.append((day, fire))
    return out


def _date(
    run: _Run, journey: Journey, trigger: DateTrigger, mark: TriggerMark | None
) -> TriggerMark:
    repo = run.repo
    require_date_attribute(repo, trigger)
    lo = run.since if mark is None or mark.until is None else max(run.since, mark.until)
    done = TriggerMark(until=run.now)
    if lo >= run.now:
        return done
    # Every zone is within a day of UTC: two days of margin hold every local fire date.
    first = (lo - dt.timedelta(days=2)).date()
    last = (run.now + dt.timedelta(days=2)).date()
    offset = dt.timedelta(days=trigger.offset_days)
    store = repo.journey_store
    if trigger.annual:
        month_days: set[str] | None = None
        if (last - first).days <= 366:
            month_days = set()
            for day in _days(first, last):
                base = day - offset
                month_days.add(base.strftime("%m-%d"))
                if (base.month, base.day) == (2, 28) and not calendar.isleap(base.year):
                    month_days.add("02-29")
        values = store.date_values(trigger.attribute, month_days=month_days)
    else:
        values = store.date_values(trigger.attribute, between=(first - offset, last - offset))
    entries: list[_Entry] = []
    for contact_id, value in values:
        for day, fire in date_fires(trigger, value, run.zone_of(contact_id), lo, run.now):
            tid = f"date:{trigger.attribute}:{day.isoformat()}:{contact_id}"
            entries.append((contact_id, tid, fire, {}))
    entries.sort(key=lambda e: (e[2], e[1]))
    run.enroll(journey, entries)
    return done


_SOURCES: Final = {
    ActivityTrigger: "activity",
    EventTrigger: "event",
    SegmentTrigger: "segment",
    DateTrigger: "date",
}


def _wake(run: _Run) -> int:
    """Wake the active enrollments of contacts with new behaviour; return how many contacts."""
    store = run.repo.journey_store
    scopes: list[WakeScope] = []
    exits: dict[str, list[WakeScope]] = {}
    for key, version in store.active_versions():
        text = store.definition(key, version)
        if text is None:
            continue
        journey = Journey.loads(text)
        if journey.goals:
            scopes.append(WakeScope(key, version))
            for goal in journey.goals:
                if isinstance(goal, SegmentExitGoal):
                    exits.setdefault(goal.segment, []).append(WakeScope(key, version))
            continue
        branches = tuple(s.id for s in journey.steps if isinstance(s, BranchStep))
        if branches:
            scopes.append(WakeScope(key, version, branches))
    marks = store.trigger_marks(WAKE_KEY)
    behaviour = marks.get("behaviour")
    _check_clock(behaviour, run.now, WAKE_KEY)
    held = marks.get("pending")
    feed = store.wake_feed(
        after=behaviour,
        pending=None if held is None else held.watermark,
        before=run.bound,
        since=run.since,
        until=run.now,
    )
    instants = feed.instants
    woken = set(instants)
    items = sorted(instants.items())
    for i in range(0, len(items), run.batch_size):
        with run.repo.transaction():
            store.wake(dict(items[i : i + run.batch_size]), scopes)
    new = {
        "behaviour": TriggerMark(
            watermark=max(run.bound, behaviour.watermark if behaviour else 0), until=run.now
        ),
        # Where the next wake read starts: rows stored below the bound that
        # happened after now are read once their time comes.
        "pending": TriggerMark(watermark=feed.pending, until=run.now),
    }
    for segment, reach in sorted(exits.items()):
        try:
            pairs, after = run.pairs(segment, marks.get(f"exit:{segment}"))
        except NotFoundError:
            continue  # not a saved segment: nobody can leave it
        left: dict[str, dt.datetime] = {}
        for before, current in pairs:
            for contact_id in run.ids(before.snapshot_id) - run.ids(current.snapshot_id):
                left.setdefault(contact_id, current.at)
        woken |= set(left)
        with run.repo.transaction():
            store.wake(left, reach)
        new[f"exit:{segment}"] = after
    store.save_trigger_marks(WAKE_KEY, new, at=run.now)
    return len(woken)


def run_triggers(
    repo: Repository,
    journeys: Iterable[Journey],
    now: dt.datetime,
    *,
    zone_of: Callable[[str], ZoneInfo] | None = None,
    max_age: dt.timedelta | None = DEFAULT_MAX_AGE,
    batch_size: int = 1000,
    wake: bool = True,
) -> TriggerReport:
    """Fire the journeys' triggers from what was stored since their last run; wake on behaviour.

    Each journey is stored (:func:`~commhistory.journeys.engine.save_journey`)
    and new contacts enroll into that version. See the module documentation
    for what each trigger reads and the trigger ids it uses.

    Args:
        repo: The repository.
        journeys: The live journeys, one version per key.
        now: The run's instant (aware; a simulated clock is fine). Nothing that
            happened after it is read.
        zone_of: The contact's time zone, for date triggers; default UTC.
        max_age: Nothing that happened longer than this before ``now`` fires a
            trigger (``None``: no limit; a first run then reads all the history).
        batch_size: Enrollments per transaction, and rows per read.
        wake: Also read the behaviour feeds and wake enrollments.

    Returns:
        What was read, enrolled and woken.

    Raises:
        InvalidInputError: ``now`` is naive or earlier than a journey's last
            run; two journeys share a key; a date trigger names no declared
            plain ``date`` attribute; ``batch_size`` is not positive.
        NotFoundError: A segment trigger names no saved segment.

    .. versionadded:: 0.4.0
    """
    now = _aware(now, "now")
    size: object = batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInputError(field="batch_size", reason="must be a positive integer")
    chosen: dict[str, Journey] = {}
    for journey in journeys:
        if journey.key in chosen:
            raise InvalidInputError(
                field="journeys", reason=f"two versions of journey {journey.key!r}; pass one"
            )
        chosen[journey.key] = journey
    store = repo.journey_store
    run = _Run(
        repo=repo,
        now=now,
        since=_EPOCH if max_age is None else now - max_age,
        bound=store.stored_bound(),
        batch_size=batch_size,
        zone_of=zone_of if zone_of is not None else (lambda _c: _UTC),
    )
    for key, journey in chosen.items():
        save_journey(repo, journey)
        source = _SOURCES[type(journey.trigger)]
        mark = store.trigger_marks(key).get(source)
        _check_clock(mark, now, key)
        trigger = journey.trigger
        if isinstance(trigger, ActivityTrigger):
            after = _activity(run, journey, trigger, mark)
        elif isinstance(trigger, EventTrigger):
            after = _event(run, journey, trigger, mark)
        elif isinstance(trigger, SegmentTrigger):
            after = _segment(run, journey, trigger, mark)
        else:
            after = _date(run, journey, trigger, mark)
        store.save_trigger_marks(key, {source: after}, at=now)
    woken = _wake(run) if wake else 0
    return TriggerReport(
        read=run.read,
        enrolled=run.enrolled,
        kept_out=run.kept_out,
        woken=woken,
        snapshots=tuple(run.taken),
    )
