"""Former home of the SQL KPI engine, kept so old imports keep working.

.. deprecated:: 0.4.0
   Use :func:`commhistory.kpi.aggregate.repository_kpis`; the SQL lives in
   :mod:`commhistory.store.kpi` (``offset_segments`` too).
"""

from __future__ import annotations

from commhistory.kpi.aggregate import repository_kpis
from commhistory.store.kpi import offset_segments

__all__ = ["offset_segments", "repository_kpis"]
