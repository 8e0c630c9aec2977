"""Analytics export: pseudonymous facts for engines beyond one database.

See :mod:`commhistory.analytics.export` and ``docs/analytics.md``.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from commhistory.analytics.export import (
    ANALYTICS_KEY_PURPOSE,
    FORMATS,
    MANIFEST_NAME,
    AnalyticsExport,
    Pseudonymizer,
    export_analytics,
)

__all__ = [
    "ANALYTICS_KEY_PURPOSE",
    "FORMATS",
    "MANIFEST_NAME",
    "AnalyticsExport",
    "Pseudonymizer",
    "export_analytics",
]
