"""Saved segments: named, versioned definitions, membership snapshots and deltas.

A saved segment is a name with versions: saving a changed tree adds a version,
saving the same tree again returns the current one. A snapshot evaluates one
version at an instant and keeps the contact ids (pseudonymous) in the store;
:func:`delta` compares two snapshots: who entered and who left. Erasure removes
a contact from every snapshot (``PrivacyStore.shred_contact``), so a delta
never brings an erased contact back.

A static list segment is a snapshot's ids as a tree: :func:`snapshot_list`
returns an :class:`~commhistory.criteria.InList` usable in any other tree.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs

from commhistory.criteria import Criteria, InList, dumps, loads
from commhistory.errors import InvalidInputError, NotFoundError
from commhistory.store.protocol import Repository
from commhistory.store.segments import SavedSegment, SnapshotInfo

__all__ = [
    "SegmentDelta",
    "delta",
    "load_definition",
    "save_segment",
    "snapshot",
    "snapshot_list",
]


@attrs.frozen(kw_only=True)
class SegmentDelta:
    """Who entered and who left a segment between two snapshots.

    Attributes:
        name: The segment.
        before: The earlier snapshot.
        after: The later snapshot.
        entered: Contact ids in *after* and not in *before*, sorted.
        left: Contact ids in *before* and not in *after*, sorted.
    """

    name: str
    before: SnapshotInfo
    after: SnapshotInfo
    entered: tuple[str, ...]
    left: tuple[str, ...]


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidInputError(field="name", reason="a segment name is non-empty text")
    return name


def save_segment(repo: Repository, name: str, tree: Criteria) -> SavedSegment:
    """Save *tree* as the next version of *name* (the same tree again: the same version)."""
    return repo.segment_store.save_definition(_check_name(name), dumps(tree))


def load_definition(
    repo: Repository, name: str, version: int | None = None
) -> tuple[SavedSegment, Criteria]:
    """Return a saved version (default: the latest) and its tree.

    Raises:
        NotFoundError: No such segment or version (``kind="segment"``).
    """
    versions = repo.segment_store.definitions(_check_name(name))
    if version is not None:
        versions = [v for v in versions if v.version == version]
    if not versions:
        label = name if version is None else f"{name}@{version}"
        raise NotFoundError(kind="segment", identifier=label)
    saved = versions[-1]
    return saved, loads(saved.definition)


def snapshot(
    repo: Repository,
    name: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
) -> SnapshotInfo:
    """Evaluate a saved segment at *at* (default: now) and store its members.

    Raises:
        NotFoundError: No such segment or version.
        CriteriaSchemaError: The saved tree no longer fits the declarations.
    """
    saved, tree = load_definition(repo, name, version)
    moment = datetime.now(UTC) if at is None else at
    members = repo.segment_store.members(tree, at=moment)
    return repo.segment_store.save_snapshot(saved.name, saved.version, moment, members)


def _snapshot(repo: Repository, name: str, snapshot_id: str | None, index: int) -> SnapshotInfo:
    shots = repo.segment_store.snapshots(name)
    if snapshot_id is not None:
        for s in shots:
            if s.snapshot_id == snapshot_id:
                return s
        raise NotFoundError(kind="snapshot", identifier=snapshot_id)
    if len(shots) < -index:
        raise NotFoundError(kind="snapshot", identifier=f"{name}[{index}]")
    return shots[index]


def delta(
    repo: Repository,
    name: str,
    *,
    before: str | None = None,
    after: str | None = None,
) -> SegmentDelta:
    """Compare two snapshots of *name* (default: the last two).

    Args:
        repo: The repository.
        name: The segment.
        before: The earlier snapshot's id (default: the one before the latest).
        after: The later snapshot's id (default: the latest).

    Raises:
        NotFoundError: A snapshot is missing (fewer than two taken).
    """
    b = _snapshot(repo, name, before, -2)
    a = _snapshot(repo, name, after, -1)
    old = set(repo.segment_store.snapshot_members(b.snapshot_id))
    new = set(repo.segment_store.snapshot_members(a.snapshot_id))
    return SegmentDelta(
        name=name,
        before=b,
        after=a,
        entered=tuple(sorted(new - old)),
        left=tuple(sorted(old - new)),
    )


def snapshot_list(repo: Repository, snapshot_id: str) -> InList:
    """A snapshot's members as a static list condition (``{"list": [...]}``)."""
    ids = repo.segment_store.snapshot_members(snapshot_id)
    return InList(contact_ids=tuple(ids), label=f"snapshot {snapshot_id}")
