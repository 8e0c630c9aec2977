"""Segments: who a message is for, as a checked, saved, versioned condition tree.

The tree itself is :mod:`commhistory.criteria` (build it in Python or load it
from JSON); the store evaluates it (:mod:`commhistory.store.segments`). This
package adds the domain rules: :func:`validate` checks a tree against the
declared attribute schema and activity declarations, and :mod:`.saved` keeps
named, versioned segments with membership snapshots and their deltas.
:mod:`commhistory.segments.planning` turns candidates (a segment, or ids) into a
send plan: send now, deferred (with when) and excluded (with why), applying
consent, suppression, frequency caps and quiet hours.

.. versionadded:: 0.4.0
"""

from commhistory.segments.rules import validate
from commhistory.segments.saved import (
    SegmentDelta,
    delta,
    load_definition,
    save_segment,
    snapshot,
    snapshot_list,
)

__all__ = [
    "SegmentDelta",
    "delta",
    "load_definition",
    "save_segment",
    "snapshot",
    "snapshot_list",
    "validate",
]
