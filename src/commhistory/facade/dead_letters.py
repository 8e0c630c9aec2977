"""Replaying dead letters: parse the kept raw lines again and store what now parses.

:func:`replay_dead_letters` is what ``CommHistory.replay_dead_letters`` runs. Each
letter's raw text goes through the reader ``validate`` and ``import`` use
(:func:`commhistory.convert.reparse`), as a JSON line or, for a letter of a
``.csv``/``.tsv`` source, as a row under the header given. In one unit of work:

* letters that now parse are deleted and their records ingested under their
  source (so the consent feed and batch hooks run as for an import); what the
  store still refuses (an erased contact, a conflicting message id) becomes a
  new dead letter, as on import;
* letters that still fail stay, with their new field and reason;
* CSV letters are left untouched when no header is given.

**Webhook letters** (:class:`~commhistory.store.dead_letters.WebhookLetter`: a
provider event, or a body, kept with the provider's name and the adapter's
version) are not canonical lines. They are handed to the adapter *adapters*
returns for their provider (:meth:`WebhookAdapter.reparse_dead_letter
<commhistory.providers.WebhookAdapter.reparse_dead_letter>`), which parses them
again with today's mapping, without checking the signature again (it was
checked on receipt; the kept payload is the verified one, encrypted at rest).
This module imports no provider: the caller passes the resolver
(``commhistory dead-letters replay`` passes the provider registry's).

* a letter whose event now parses is deleted and its records ingested under
  its source (``webhook:<provider>``); records carry the provider's
  deterministic ids, so an event stored twice (two replays racing, the
  provider retrying) is counted as a duplicate, never stored twice;
* a letter of a whole body that now parses is deleted and *every* line of the
  body ingested, as receipt would have done: events that still fail become
  dead letters of their own;
* a letter that still fails stays, with its new field and reason;
* without *adapters*, or when it has no adapter for the provider, webhook
  letters are left untouched (``unresolved``).

A second replay finds nothing of the first: each line is stored once.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from commhistory.convert import FileFormat, ParsedLine, reparse
from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.store.dead_letters import WebhookLetter
from commhistory.store.protocol import IngestReport

if TYPE_CHECKING:
    from commhistory.facade.history import CommHistory
    from commhistory.store.dead_letters import DeadLetterInfo

__all__ = ["AdapterResolver", "ReplayReport", "WebhookReparser", "replay_dead_letters"]


class WebhookReparser(Protocol):
    """What replay needs of a provider adapter: parse a kept webhook letter again.

    Every :class:`~commhistory.providers.WebhookAdapter` is one.

    .. versionadded:: 0.4.0
    """

    def reparse_dead_letter(self, letter: WebhookLetter) -> Sequence[ParsedLine]:
        """Return the letter's lines: records, or errors for what still fails.

        Raises:
            InvalidInputError: The letter still cannot be parsed as a whole.
        """
        ...


AdapterResolver = Callable[[str], "WebhookReparser | None"]
"""Maps a provider name (``"sendgrid"``) to the adapter that parses its dead letters again.

Returns ``None`` (or raises :class:`~commhistory.errors.NotFoundError`) when
there is none; the provider's letters are then left untouched. The CLI passes
one built on :func:`commhistory.providers.get_provider`.

.. versionadded:: 0.4.0
"""

_CSV_SUFFIXES = (".csv", ".tsv")


@attrs.frozen(kw_only=True)
class ReplayReport:
    """What a replay of dead letters did.

    Attributes:
        letters: The dead letters looked at.
        parsed: Those whose raw text now parses; they were removed from the
            dead letters and their records ingested (see *stored*).
        failed: Those that still fail; they stay, with their new field and reason.
        skipped: CSV rows left untouched because no header was given.
        unresolved: Webhook letters left untouched: no resolver was given, or it
            has no adapter for their provider.
        stored: What ingesting the parsed lines did (``rejected`` counts what the
            store still refused, and the events of a replayed body that still
            fail; each became a new dead letter).

    .. versionadded:: 0.4.0
    """

    letters: int = 0
    parsed: int = 0
    failed: int = 0
    skipped: int = 0
    unresolved: int = 0
    stored: IngestReport = attrs.field(factory=IngestReport)


def letter_format(source: str, raw: str) -> FileFormat:
    """The format a dead letter's raw text is read in.

    A record the store refused (a conflict, an erased contact) is kept as a
    canonical JSON object even when it came from a CSV sheet.
    """
    if source.lower().endswith(_CSV_SUFFIXES) and not raw.lstrip().startswith("{"):
        return "csv"
    return "jsonl"


def replay_dead_letters(
    repo: CommHistory[Any],
    ids: Collection[str] | None = None,
    *,
    source: str | None = None,
    default_tz: datetime.tzinfo | str | None = None,
    mapping: Mapping[str, str] | None = None,
    kind: str | None = None,
    header: str | None = None,
    region: str = "JP",
    check: Callable[[ParsedLine], None] | None = None,
    adapters: AdapterResolver | None = None,
) -> ReplayReport:
    """Replay dead letters; see the module docstring.

    Args:
        repo: The facade.
        ids: These letters (every one must exist); by default every letter (of *source*).
        source: Only the letters of this source.
        default_tz: The zone for naive timestamps.
        mapping: CSV: ``{column: field}``, as for ``import --map``.
        kind: CSV: the kind of rows without a ``kind`` column.
        header: CSV: the sheet's header row.
        region: The region national phone numbers are read in.
        check: Called with each line that now parses, before anything is written
            (the guarded view raises ``PermissionDenied`` for a consent line when
            the actor lacks ``manage_consent``).
        adapters: Maps a provider name to its adapter, for webhook letters
            (see :data:`AdapterResolver`); without it they are left untouched.

    Raises:
        NotFoundError: An id names no dead letter (``kind="dead_letter"``).
        PayloadError: The header is unusable.
    """
    port = repo.store.dead_letter_store
    with repo.transaction():
        infos: list[DeadLetterInfo] = port.letters(source=source, ids=ids)
        if ids is not None:
            missing = sorted(set(ids) - {i.id for i in infos})
            if missing:
                raise NotFoundError(kind="dead_letter", identifier=missing[0])
        by_source: dict[str, list[ParsedLine]] = {}
        done: list[str] = []
        failed = skipped = unresolved = 0
        for info in infos:
            letter = port.get(info.id)
            webhook = WebhookLetter.loads(letter.raw)
            if webhook is not None:
                outcome = _reparse_webhook(webhook, adapters)
                if outcome is None:
                    unresolved += 1
                elif isinstance(outcome, InvalidInputError):
                    port.set_reason(letter.id, field=outcome.field, reason=outcome.reason)
                    failed += 1
                else:
                    if check is not None:
                        for line in outcome:
                            if line.record is not None:
                                check(line)
                    by_source.setdefault(letter.source, []).extend(outcome)
                    done.append(letter.id)
                continue
            fmt = letter_format(letter.source, letter.raw)
            if fmt == "csv" and header is None:
                skipped += 1
                continue
            parsed = reparse(
                letter.raw,
                line=letter.line or 0,
                format=fmt,
                header=header,
                default_tz=default_tz,
                mapping=mapping,
                kind=kind,
                region=region,
            )
            if parsed.error is not None:
                port.set_reason(letter.id, field=parsed.error.field, reason=parsed.error.reason)
                failed += 1
                continue
            if check is not None:
                check(parsed)
            by_source.setdefault(letter.source, []).append(parsed)
            done.append(letter.id)
        # Deleted first: a line the store still refuses is kept again as a new letter.
        port.delete(done)
        stored = IngestReport()
        for name, lines in by_source.items():
            stored += repo.ingest(lines, source=name)
    return ReplayReport(
        letters=len(infos),
        parsed=len(done),
        failed=failed,
        skipped=skipped,
        unresolved=unresolved,
        stored=stored,
    )


def _reparse_webhook(
    letter: WebhookLetter, adapters: AdapterResolver | None
) -> list[ParsedLine] | InvalidInputError | None:
    """Parse a webhook letter again: its lines, why it still fails, or ``None`` (no adapter).

    A letter of one event fails when the event does; a whole body's lines are
    all returned (as receipt would store them) once the body parses.
    """
    adapter: WebhookReparser | None = None
    if adapters is not None:
        try:
            adapter = adapters(letter.provider)
        except NotFoundError:
            adapter = None
    if adapter is None:
        return None
    try:
        lines = list(adapter.reparse_dead_letter(letter))
    except InvalidInputError as exc:
        return exc
    if letter.part == "event" or letter.event is not None:
        for line in lines:
            if line.error is not None:
                return line.error  # one event that still fails: the letter stays, re-worded
    return lines
