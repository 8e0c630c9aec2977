"""KPIs: the metrics of DESIGN section 5, A/B statistics and machine-event detection.

Use it as ``ch.kpi``:

* :func:`compute` computes a :class:`KpiTable` from records in memory;
  ``ch.kpis(...)`` computes the same table in the database.
* :func:`compare` tests A/B variants (:class:`ABResult`); :func:`sample_size`
  plans a test.
* :func:`classify` and :func:`mark_machine` flag machine opens and scanner clicks.
* :class:`Cost` is money spent on a campaign; tables show cost, ROI, cost per
  conversion and revenue per recipient (:mod:`commhistory.kpi.costs`).

.. versionadded:: 0.2.0
.. versionchanged:: 0.4.0
   :class:`Cost` and :func:`attribute_costs`; :data:`JOURNEY_KEYS` and
   :class:`JourneyLink` (KPIs per journey step).
"""

from __future__ import annotations

from commhistory.kpi.abtest import (
    ABResult,
    ArmStats,
    ChiSquare,
    Comparison,
    compare,
    sample_size,
    wilson_interval,
)
from commhistory.kpi.compute import compute
from commhistory.kpi.costs import attribute_costs
from commhistory.kpi.machine import MachineRules, classify, mark_machine
from commhistory.kpi.metrics import COUNTS, GROUP_KEYS, PERIODS, RATES, KpiRow, KpiTable
from commhistory.store.costs import Cost
from commhistory.store.kpi import JOURNEY_KEYS, JourneyLink

__all__ = [
    "COUNTS",
    "GROUP_KEYS",
    "JOURNEY_KEYS",
    "PERIODS",
    "RATES",
    "ABResult",
    "ArmStats",
    "ChiSquare",
    "Comparison",
    "Cost",
    "JourneyLink",
    "KpiRow",
    "KpiTable",
    "MachineRules",
    "attribute_costs",
    "classify",
    "compare",
    "compute",
    "mark_machine",
    "sample_size",
    "wilson_interval",
]
