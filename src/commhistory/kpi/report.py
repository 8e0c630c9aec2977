"""Render KPI tables: a text table, JSON, CSV, and a self-contained HTML report.

The HTML report is one file with inline CSS and SVG (no scripts, fonts or
images from the network): the funnel of each campaign, rates over time, and
the A/B arms of each campaign with their Wilson intervals and the verdict.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from commhistory.kpi.abtest import ABResult, ArmStats, compare
from commhistory.kpi.links import LinkClicks, top_links
from commhistory.kpi.metrics import COUNTS, RATES, KpiRow, KpiTable

__all__ = [
    "KpiSource",
    "LinkSource",
    "ReportData",
    "build_report",
    "nice_ticks",
    "period_start",
    "plain_verdict",
    "render_csv",
    "render_html",
    "render_json",
    "render_table",
    "text_width",
]

_SHORT: Final = {
    "sent": "sent",
    "delivered": "deliv",
    "bounced": "bounce",
    "hard_bounced": "hard",
    "failed": "fail",
    "unique_opens": "opens",
    "unique_clicks": "clicks",
    "conversions": "conv",
    "unsubscribes": "unsub",
    "complaints": "compl",
    "delivery_rate": "deliv%",
    "open_rate": "open%",
    "click_rate": "click%",
    "click_to_open_rate": "CTOR%",
    "conversion_rate": "conv%",
    "unsubscribe_rate": "unsub%",
}
_TABLE_COUNTS: Final = (
    "sent",
    "delivered",
    "bounced",
    "unique_opens",
    "unique_clicks",
    "conversions",
    "unsubscribes",
)
_TABLE_RATES: Final = (
    "delivery_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "conversion_rate",
    "unsubscribe_rate",
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _revenue_text(row: KpiRow) -> str:
    return " ".join(f"{cur} {format(v, ',f')}" for cur, v in sorted(row.revenue.items())) or "-"


def _money_text(values: Mapping[str, Decimal | None]) -> str:
    return (
        " ".join(
            f"{cur} {'-' if v is None else format(v, ',f')}" for cur, v in sorted(values.items())
        )
        or "-"
    )


def _roi_text(row: KpiRow) -> str:
    known = {cur: v for cur, v in row.roi.items() if v is not None}
    return " ".join(f"{cur} {_pct(v)}%" for cur, v in known.items()) or "-"


_COST_HEAD: Final = ("cost", "ROI", "cost/conv", "rev/recip")
"""The cost columns of the text and HTML tables (shown when the table has costs)."""


def _ratio_text(values: Mapping[str, Decimal | None]) -> str:
    """Money per conversion or recipient, to the cent (JSON and CSV keep six places)."""
    return (
        " ".join(f"{cur} {'-' if v is None else f'{v:,.2f}'}" for cur, v in values.items()) or "-"
    )


def _cost_cells(row: KpiRow) -> list[str]:
    return [
        _money_text(row.cost),
        _roi_text(row),
        _ratio_text(row.cost_per_conversion),
        _ratio_text(row.revenue_per_recipient),
    ]


def _cost_note(table: KpiTable) -> list[str]:
    notes = []
    if table.unattributed_cost:
        notes.append(
            f"cost in no row (recorded above this grouping, or for a group that sent "
            f"nothing): {_money_text(table.unattributed_cost)}"
        )
    if table.costs_outside_range:
        n = table.costs_outside_range
        notes.append(f"{n:,} cost{'' if n == 1 else 's'} straddling the range not counted")
    return notes


def render_table(table: KpiTable, *, width: int = 100) -> str:
    """Return the table as aligned text for a terminal (rates in percent).

    Lines stay within *width* columns: when all columns do not fit, the value
    columns are split into blocks shown one under another, each repeating the
    grouping columns.

    Args:
        table: The KPI table.
        width: The widest line (a block holds at least one value column).

    .. versionchanged:: 0.4.0
       ``width`` (was one line of every column, 131 wide for the demo).
    """
    head = [*table.by, *(_SHORT[c] for c in _TABLE_COUNTS), *(_SHORT[r] for r in _TABLE_RATES)]
    head.append("revenue")
    if table.has_costs:
        head += _COST_HEAD
    body: list[list[str]] = []
    rows = list(table.rows)
    if len(rows) > 1 or not table.by or table.unattributed_cost:
        rows.append(attrs.evolve(table.total(), group=dict.fromkeys(table.by, "")))
    for i, row in enumerate(rows):
        cells = [("-" if row.group.get(k) is None else str(row.group[k])) for k in table.by]
        if i == len(table.rows) and table.by:
            cells = ["total", *[""] * (len(table.by) - 1)]
        cells += [f"{getattr(row, c):,}" for c in _TABLE_COUNTS]
        cells += [_pct(getattr(row, r)) for r in _TABLE_RATES]
        cells.append(_revenue_text(row))
        if table.has_costs:
            cells += _cost_cells(row)
        body.append(cells)
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)
    ]
    nkeys = len(table.by)
    left = {len(head) - 1 - len(_COST_HEAD) * table.has_costs} | (
        set(range(len(head) - len(_COST_HEAD), len(head))) if table.has_costs else set()
    )

    def line(cells: Sequence[str], columns: Sequence[int]) -> str:
        return "  ".join(
            cells[i].ljust(widths[i]) if i < nkeys or i in left else cells[i].rjust(widths[i])
            for i in columns
        ).rstrip()

    keys = list(range(nkeys))
    key_width = sum(widths[i] + 2 for i in keys)
    blocks: list[list[int]] = [[]]
    used = key_width
    for i in range(nkeys, len(head)):
        if blocks[-1] and used + widths[i] > width:
            blocks.append([])
            used = key_width
        blocks[-1].append(i)
        used += widths[i] + 2
    out: list[str] = []
    for n, block in enumerate(blocks):
        columns = keys + block
        if n:
            out.append("")
        out.append(line(head, columns))
        out.append(line(["-" * w for w in widths], columns))
        out += [line(r, columns) for r in body]
    notes = []
    if table.unmatched_events:
        notes.append(f"{table.unmatched_events:,} events for unknown messages not counted")
    notes += _cost_note(table)
    notes.append("machine opens/clicks excluded" if table.exclude_machine else "all events")
    out += textwrap.wrap(f"({'; '.join(notes)}; periods in {table.tz})", width)
    return "\n".join(out)


def render_json(
    table: KpiTable,
    *,
    ab: Iterable[tuple[str | None, ABResult]] = (),
    links: Iterable[LinkClicks] = (),
) -> str:
    """Return the table as JSON: ``{"rows": [...], ...}`` with rates as floats or null.

    A/B results are under ``ab_tests`` and clicks per link (see
    :mod:`commhistory.kpi.links`) under ``links``, when there are any.

    .. versionchanged:: 0.4.0
       ``links``.
    """
    data = table.to_dict()
    tests = [{"campaign_id": c, **r.to_dict()} for c, r in ab]
    if tests:
        data["ab_tests"] = tests
    clicked = [attrs.asdict(link) for link in links]
    if clicked:
        data["links"] = clicked
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_csv(table: KpiTable) -> str:
    """Return the table as CSV: keys, counts, one ``revenue_<CUR>`` column per currency, rates.

    A table with costs also has, per currency, ``cost_<CUR>``, ``roi_<CUR>``,
    ``cost_per_conversion_<CUR>`` and ``revenue_per_recipient_<CUR>`` (empty
    where not available).

    .. versionchanged:: 0.4.0
       The cost columns.
    """
    currencies = sorted({c for r in table.rows for c in r.revenue})
    money = sorted({c for r in table.rows for c in (*r.revenue, *r.cost)})
    figures = (
        [(f"{name}_{c}", name, c) for name in _CSV_FIGURES for c in money]
        if table.has_costs
        else []
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            *table.by,
            *COUNTS,
            *(f"revenue_{c}" for c in currencies),
            *RATES.keys(),
            *(head for head, _, _ in figures),
        ]
    )
    for row in table.rows:
        values = {name: getattr(row, name) for name in _CSV_FIGURES}
        writer.writerow(
            [
                *("" if row.group.get(k) is None else row.group[k] for k in table.by),
                *(getattr(row, c) for c in COUNTS),
                *(format(row.revenue[c], "f") if c in row.revenue else "" for c in currencies),
                *("" if getattr(row, r) is None else repr(getattr(row, r)) for r in RATES),
                *(_csv_value(values[name].get(c)) for _, name, c in figures),
            ]
        )
    return buf.getvalue()


_CSV_FIGURES: Final = ("cost", "roi", "cost_per_conversion", "revenue_per_recipient")


def _csv_value(value: Decimal | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return repr(value)


# --------------------------------------------------------------------------- report data


class KpiSource(Protocol):
    """Anything with ``kpis(...)``: a repository."""

    def kpis(
        self,
        by: str | Iterable[str] = (),
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        tz: str = "UTC",
        exclude_machine: bool = True,
    ) -> KpiTable:
        """Compute a KPI table."""
        ...


@runtime_checkable
class LinkSource(Protocol):
    """A :class:`KpiSource` that also counts clicks per link (a repository).

    .. versionadded:: 0.4.0
    """

    def link_clicks(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        exclude_machine: bool = True,
    ) -> tuple[LinkClicks, ...]:
        """Count clicks per campaign and link (see :mod:`commhistory.kpi.links`)."""
        ...


@attrs.frozen(kw_only=True)
class ReportData:
    """Everything the HTML report shows.

    Attributes:
        title: The report's title.
        main: The table asked for (``--by``).
        campaigns: KPIs per campaign (the funnels).
        timeline: KPIs per period (rates over time).
        period: The period of ``timeline``.
        ab: ``(campaign_id, result)`` for each campaign with two or more variants.
        generated_at: When the report was made.
        links: The most clicked links of each campaign (empty when the source
            counts no links).
        journeys: KPIs per journey, version and step of the messages recorded for
            journey intents (``None`` when not asked for).

    .. versionchanged:: 0.4.0
       ``links`` and ``journeys``.
    """

    title: str
    main: KpiTable
    campaigns: KpiTable
    timeline: KpiTable
    period: str
    ab: tuple[tuple[str | None, ABResult], ...]
    generated_at: datetime
    links: tuple[LinkClicks, ...] = ()
    journeys: KpiTable | None = None


def build_report(
    source: KpiSource,
    *,
    by: Sequence[str] = ("campaign_id", "variant"),
    since: datetime | None = None,
    until: datetime | None = None,
    tz: str = "UTC",
    exclude_machine: bool = True,
    period: str = "day",
    metric: str = "click_rate",
    alpha: float = 0.05,
    min_sample: int = 100,
    title: str = "Communication KPIs",
    top_links_per_campaign: int = 10,
    journey_steps: bool = True,
) -> ReportData:
    """Compute the tables a report needs and test each campaign's variants.

    Args:
        source: The repository.
        by: The main table's grouping keys.
        since: Only messages sent at or after this time.
        until: Only messages sent before this time.
        tz: The time zone of periods.
        exclude_machine: Leave out machine opens and clicks.
        period: The period of the rates-over-time chart.
        metric: The rate the A/B tests compare.
        alpha: The A/B significance level.
        min_sample: Trials per arm before an A/B verdict.
        title: The report's title.
        top_links_per_campaign: How many links of each campaign to keep, most
            clicked first (when *source* has ``link_clicks``, see :class:`LinkSource`).
        journey_steps: Also compute the KPIs per journey step (grouped by
            ``journey``, ``journey_version`` and ``step``; the report shows them
            when any message was recorded for a journey intent).

    Returns:
        The report's data.

    .. versionchanged:: 0.4.0
       ``top_links_per_campaign``; the report counts clicks per link;
       ``journey_steps``.

    Raises:
        InvalidInputError: Bad keys, zone, range or metric.
    """
    common: dict[str, Any] = {
        "since": since,
        "until": until,
        "tz": tz,
        "exclude_machine": exclude_machine,
    }
    main = source.kpis(tuple(by), **common)
    arms = source.kpis(("campaign_id", "variant"), **common)
    campaigns = source.kpis(("campaign_id",), **common)
    timeline = source.kpis((period,), **common)
    ab: list[tuple[str | None, ABResult]] = []
    for campaign in campaigns.rows:
        cid = campaign.group["campaign_id"]
        rows = tuple(r for r in arms.rows if r.group["campaign_id"] == cid)
        variants = [r for r in rows if r.group["variant"] is not None]
        if len(variants) >= 2:
            sub = attrs.evolve(arms, rows=rows)
            ab.append((cid, compare(sub, metric=metric, alpha=alpha, min_sample=min_sample)))
    links: tuple[LinkClicks, ...] = ()
    if isinstance(source, LinkSource):
        counted = source.link_clicks(since=since, until=until, exclude_machine=exclude_machine)
        links = top_links(counted, top_links_per_campaign)
    journeys = None
    if journey_steps:
        steps = source.kpis(("journey", "journey_version", "step"), **common)
        # Costs are recorded per campaign: a journey step shows none.
        journeys = attrs.evolve(
            steps, has_costs=False, unattributed_cost={}, costs_outside_range=0
        )
    return ReportData(
        journeys=journeys,
        links=links,
        title=title,
        main=main,
        campaigns=campaigns,
        timeline=timeline,
        period=period,
        ab=tuple(ab),
        generated_at=datetime.now(UTC),
    )


# --------------------------------------------------------------------------- HTML

_CSS: Final = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1d2433;overflow-wrap:anywhere}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 10px}h3{font-size:16px}
.sub{color:#5b6478;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:12px}
.card,.panel{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(20,30,60,.08);
padding:14px 16px;min-width:0}
.card b{display:block;font-size:24px}.card span{color:#5b6478;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,440px),1fr));gap:14px}
svg{display:block;width:100%;height:auto}
.narrow{display:none}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{padding:6px 8px;border-bottom:1px solid #e7e9ef;text-align:right;white-space:nowrap}
th:first-child,td:first-child,th.k,td.k{text-align:left}
th{background:#eef1f6;font-weight:600}
tfoot td{font-weight:600;border-top:2px solid #c9cfdc}
td.link{white-space:normal;overflow-wrap:anywhere;min-width:12em}
.verdict{margin:8px 0 4px;font-weight:600}.win{color:#11804a}.none{color:#8a5a00}
.stats{margin:0;color:#5b6478;font-size:13px}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
footer{color:#5b6478;font-size:12px;margin-top:26px}
@media (max-width:640px){main{padding:12px}h1{font-size:22px}
.card,.panel{padding:10px 12px}.wide{display:none}.narrow{display:block}}
"""
_FUNNEL: Final = (
    ("sent", "Sent", "#5470c6"),
    ("delivered", "Delivered", "#3f8fd2"),
    ("unique_opens", "Opened", "#2fa4a9"),
    ("unique_clicks", "Clicked", "#3ba272"),
    ("conversions", "Converted", "#e3a21a"),
)
_LINES: Final = (
    ("open_rate", "Open rate", "#2fa4a9"),
    ("click_rate", "Click rate", "#3ba272"),
    ("conversion_rate", "Conversion rate", "#e3a21a"),
    ("bounce_rate", "Bounce rate", "#d9534f"),
)
_HTML_COUNTS: Final = (
    "sent",
    "delivered",
    "bounced",
    "failed",
    "unique_opens",
    "unique_clicks",
    "conversions",
    "unsubscribes",
)
_HTML_HEAD: Final = {"failed": "failed (undelivered)"}
_CHAR_W: Final = 0.62
"""The widest average glyph advance of the report's sans-serif fonts, in em, for digits,
Latin letters and punctuation: the layout sizes every SVG text box with it."""
_MAX_SCALE: Final = 1.25
"""How much an SVG may grow beyond its own size (so fonts never double on a wide screen)."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def text_width(text: str, font_size: float) -> float:
    """Return the width the layout reserves for *text* at *font_size* (user units)."""
    return len(text) * font_size * _CHAR_W


def nice_ticks(peak: float, *, count: int = 4, limit: float = 1.0) -> list[float]:
    """Return axis ticks from 0 on a 1-2-5 x 10^n step, the last one at or above *peak*.

    >>> from commhistory.kpi.report import nice_ticks
    >>> nice_ticks(0.141)
    [0.0, 0.05, 0.1, 0.15]
    >>> nice_ticks(0.0)
    [0.0, 0.01]
    """
    peak = min(max(peak, 0.0), limit)
    if peak <= 0.0:
        return [0.0, 0.01]
    raw = peak / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw - 1e-12)
    n = math.ceil(peak / step - 1e-9)
    return [round(k * step, 12) for k in range(n + 1)]


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 0.01
    decimals = max(0, -math.floor(math.log10(step * 100) + 1e-9))
    return f"{value * 100:.{decimals}f}%"


def _svg_open(width: float, height: float, label: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return (
        f'<svg{klass} viewBox="0 0 {width:g} {height:g}" style="max-width:'
        f'{width * _MAX_SCALE:g}px" preserveAspectRatio="xMinYMin meet" role="img" '
        f'aria-label="{_e(label)}">'
    )


def _funnel_svg(row: KpiRow) -> str:
    size, bar_h, gap = 13, 26, 8
    top = max(row.sent, 1)
    values = [
        (label, color, getattr(row, name), f"{getattr(row, name):,} "
         f"({getattr(row, name) / top:.1%})" if row.sent else f"{getattr(row, name):,}")
        for name, label, color in _FUNNEL
    ]  # fmt: skip
    left = max(text_width(label, size) for label, _, _, _ in values) + 8
    right = max(text_width(text, size) for _, _, _, text in values) + 8
    width = math.ceil(max(400.0, left + right + 120))
    plot = width - left - right
    parts = [_svg_open(width, len(_FUNNEL) * (bar_h + gap), "funnel")]
    for i, (label, color, value, text) in enumerate(values):
        y = i * (bar_h + gap)
        w = max(2.0, plot * value / top)
        parts.append(
            f'<text x="0" y="{y + 18}" font-size="{size}" fill="#1d2433">{label}</text>'
            f'<rect x="{left:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="4" '
            f'fill="{color}"/><text x="{left + w + 6:.1f}" y="{y + 18}" font-size="{size}" '
            f'fill="#1d2433">{_e(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def period_start(period: str, label: str) -> date:
    """Return the first day of a period label (``2024-03-31``, ``2024-W13``, ``2024-03``)."""
    if period == "week":
        year, week = label.split("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    if period == "month":
        return date.fromisoformat(label + "-01")
    return date.fromisoformat(label)


_PERIOD_DAYS: Final = {"day": 1, "week": 7, "month": 31}


def _timeline_svg(table: KpiTable, period: str, *, width: int, cls: str) -> str:
    rows = [r for r in table.rows if r.group.get(period) is not None]
    height, left, right, top, bottom, size = (300 if width > 500 else 260), 48, 40, 12, 40, 12
    days = [period_start(period, str(r.group[period])).toordinal() for r in rows]
    first, last = min(days), max(days)
    peak = max((getattr(r, n) or 0.0 for r in rows for n, _, _ in _LINES), default=0.0)
    ticks = nice_ticks(peak)
    ceiling = ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(day: int) -> float:
        return left + (plot_w * (day - first) / (last - first) if last > first else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / ceiling)

    parts = [_svg_open(width, height, f"rates per {period}", cls)]
    for v in ticks:
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="#e3e6ee"/><text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="{size}" '
            f'text-anchor="end" fill="#5b6478">{_tick_label(v, ticks)}</text>'
        )
    shown = -math.inf
    for day, r in zip(days, rows, strict=True):
        label = str(r.group[period])
        half = text_width(label, size) / 2
        if x(day) - half >= shown + 8 and x(day) + half <= width and x(day) - half >= 0:
            shown = x(day) + half
            parts.append(
                f'<text x="{x(day):.1f}" y="{height - bottom + 18}" font-size="{size}" '
                f'text-anchor="middle" fill="#5b6478">{_e(label)}</text>'
            )
    gap = _PERIOD_DAYS.get(period, 1)
    for name, _, color in _LINES:
        runs: list[list[tuple[float, float]]] = []
        prev: int | None = None
        for day, r in zip(days, rows, strict=True):
            v = getattr(r, name)
            if v is None:
                prev = None
                continue
            if prev is None or day - prev > gap:
                runs.append([])
            runs[-1].append((x(day), y(v)))
            prev = day
        for run in runs:
            coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2.2"/>'
            )
            parts.extend(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.6" fill="{color}"/>' for px, py in run
            )
    parts.append("</svg>")
    return "".join(parts)


def _timeline(table: KpiTable, period: str) -> str:
    if not any(r.group.get(period) is not None for r in table.rows):
        return "<p>No messages in range.</p>"
    legend = "".join(
        f'<span><i style="background:{c}"></i>{label}</span>' for _, label, c in _LINES
    )
    return (
        _timeline_svg(table, period, width=960, cls="wide")
        + _timeline_svg(table, period, width=360, cls="narrow")
        + f'<div class="legend">{legend}</div>'
        + f'<p class="stats">Each point is placed at its {_e(period)}\'s date; a line '
        f"breaks where a {_e(period)} had no messages.</p>"
    )


def _arm_label(arm: ArmStats, control: str) -> str:
    return arm.name + (" (control)" if arm.name == control else "")


def _arm_value(arm: ArmStats) -> str:
    return (
        "no data (0 messages)" if arm.trials == 0 else f"{arm.rate or 0.0:.2%} (n={arm.trials:,})"
    )


def _ab_svg(result: ABResult) -> str:
    name_size, value_size, tick_size, row_h = 13, 12, 11, 34
    left = max(text_width(_arm_label(a, result.control), name_size) for a in result.arms) + 10
    right = max(text_width(_arm_value(a), value_size) for a in result.arms) + 12
    plot = 220.0
    width = math.ceil(left + plot + right)
    height = row_h * len(result.arms) + 28
    measured = [a for a in result.arms if a.trials]
    ticks = nice_ticks(max((a.high for a in measured), default=0.0))
    ceiling = ticks[-1]

    def x(v: float) -> float:
        return left + plot * min(v, ceiling) / ceiling

    parts = [_svg_open(width, height, "arms")]
    for v in ticks:
        label = _tick_label(v, ticks)
        anchor = "end" if v == ticks[-1] else "middle" if v else "start"
        parts.append(
            f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="0" y2="{height - 22}" stroke="#e3e6ee"/>'
            f'<text x="{x(v):.1f}" y="{height - 6}" font-size="{tick_size}" '
            f'text-anchor="{anchor}" fill="#5b6478">{label}</text>'
        )
    for i, arm in enumerate(result.arms):
        cy = i * row_h + 18
        color = "#11804a" if arm.name == result.winner else "#5470c6"
        parts.append(
            f'<text x="0" y="{cy + 4}" font-size="{name_size}" fill="#1d2433">'
            f"{_e(_arm_label(arm, result.control))}</text>"
        )
        if arm.trials:
            rate = arm.rate or 0.0
            parts.append(
                f'<line x1="{x(arm.low):.1f}" x2="{x(arm.high):.1f}" y1="{cy}" y2="{cy}" '
                f'stroke="{color}" stroke-width="3"/>'
                f'<line x1="{x(arm.low):.1f}" x2="{x(arm.low):.1f}" y1="{cy - 7}" '
                f'y2="{cy + 7}" stroke="{color}" stroke-width="2"/>'
                f'<line x1="{x(arm.high):.1f}" x2="{x(arm.high):.1f}" y1="{cy - 7}" '
                f'y2="{cy + 7}" stroke="{color}" stroke-width="2"/>'
                f'<circle cx="{x(rate):.1f}" cy="{cy}" r="5.5" fill="{color}"/>'
            )
        parts.append(
            f'<text x="{width:.1f}" y="{cy + 4}" font-size="{value_size}" text-anchor="end" '
            f'fill="#1d2433">{_e(_arm_value(arm))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _chance(p: float) -> str:
    if p < 0.001:
        return "very unlikely to be chance"
    if p < 0.01:
        return "unlikely to be chance"
    return "probably not chance"


def plain_verdict(result: ABResult) -> str:
    """Say what an A/B result means in a marketer's words (the statistics go beneath).

    >>> from commhistory.kpi import compare
    >>> from commhistory.kpi.report import plain_verdict
    >>> plain_verdict(compare({"A": (74, 2000), "B": (136, 2000)}))
    "B's click rate is higher: 6.8% vs 3.7%, very unlikely to be chance."
    """
    label = result.metric.replace("_", " ")
    rates = {a.name: a for a in result.arms}
    empty = [a.name for a in result.arms if a.trials == 0]
    if empty:
        return (
            f"No data yet for {', '.join(empty)}: "
            f"{'it has' if len(empty) == 1 else 'they have'} no messages to compare."
        )
    if not result.enough_data:
        small = [a for a in result.arms if a.trials < result.min_sample]
        return (
            "Too early to tell: "
            + ", ".join(f"{a.name} has only {a.trials:,} messages" for a in small)
            + f" (at least {result.min_sample:,} each are needed)."
        )
    control = rates[result.control]
    if result.winner is not None and result.winner != result.control:
        best = next(c for c in result.comparisons if c.arm == result.winner)
        return (
            f"{result.winner}'s {label} is higher: {rates[result.winner].rate or 0:.1%} vs "
            f"{control.rate or 0:.1%}, {_chance(best.p_adjusted)}."
        )
    if result.winner == result.control:
        worst = max(c.p_adjusted for c in result.comparisons)
        others = ", ".join(f"{c.arm} {rates[c.arm].rate or 0:.1%}" for c in result.comparisons)
        return (
            f"{result.control} (the control) has the highest {label}: "
            f"{control.rate or 0:.1%} vs {others}, {_chance(worst)}."
        )
    all_rates = ", ".join(f"{a.name} {a.rate or 0:.1%}" for a in result.arms)
    return (
        f"No clear difference in {label} ({all_rates}): the gap could well be chance; "
        "keep testing or call it a tie."
    )


def _html_row(row: KpiRow, keys: Sequence[str], *, costs: bool = False) -> str:
    cells = "".join(f'<td class="k">{_e(k)}</td>' for k in keys)
    cells += "".join(f"<td>{getattr(row, c):,}</td>" for c in _HTML_COUNTS)
    cells += "".join(f"<td>{_pct(getattr(row, r))}</td>" for r in _TABLE_RATES)
    cells += f"<td>{_e(_revenue_text(row))}</td>"
    if costs:
        cells += "".join(f"<td>{_e(text)}</td>" for text in _cost_cells(row))
    return cells


def _html_table(table: KpiTable) -> str:
    head = "".join(f'<th class="k">{_e(k)}</th>' for k in table.by)
    head += "".join(f"<th>{_e(_HTML_HEAD.get(c, _SHORT[c]))}</th>" for c in _HTML_COUNTS)
    head += "".join(f"<th>{_e(_SHORT[r])}</th>" for r in _TABLE_RATES)
    head += "<th>revenue</th>"
    costs = table.has_costs
    if costs:
        head += "".join(f"<th>{_e(h)}</th>" for h in _COST_HEAD)
    body = [
        "<tr>"
        + _html_row(
            row,
            ["-" if row.group.get(k) is None else str(row.group[k]) for k in table.by],
            costs=costs,
        )
        + "</tr>"
        for row in table.rows
    ]
    foot = ""
    if table.rows and (len(table.rows) > 1 or not table.by or table.unattributed_cost):
        keys = ["total", *[""] * (len(table.by) - 1)] if table.by else []
        foot = (
            f'<tfoot><tr class="total">{_html_row(table.total(), keys, costs=costs)}</tr></tfoot>'
        )
    notes = _cost_note(table)
    note = f'<p class="stats">{_e("; ".join(notes).capitalize())}.</p>' if notes else ""
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody>{foot}</table></div>{note}"
    )


def _links_html(links: Sequence[LinkClicks], *, exclude_machine: bool) -> str:
    """The most clicked links of each campaign: one panel and table per campaign."""
    share_of = "human clicks" if exclude_machine else "clicks"
    out = ['<h2>Clicks per link</h2><div class="grid">']
    campaigns: dict[str | None, list[LinkClicks]] = {}
    for link in links:
        campaigns.setdefault(link.campaign_id, []).append(link)
    for cid, rows in campaigns.items():
        body = "".join(
            f'<tr><td class="k link">{_e(r.link)}</td><td>{r.clicks:,}</td>'
            f"<td>{r.human_clicks:,}</td><td>{_pct(r.share)}</td></tr>"
            for r in rows
        )
        out.append(
            f'<div class="panel"><h3>{_e(cid or "(no campaign)")}</h3>'
            '<div class="scroll"><table class="links"><thead><tr><th class="k">link</th>'
            f"<th>clicks</th><th>human</th><th>share %</th></tr></thead><tbody>{body}"
            "</tbody></table></div></div>"
        )
    out.append(
        '</div><p class="stats">Click events per link (a contact clicking twice counts '
        "twice); human = not flagged as a link scanner; share % = the link's part of the "
        f"campaign's {share_of}. Links are shown without their query string or fragment, "
        "and parts of the path that look like ids as *.</p>"
    )
    return "".join(out)


_FOOTER: Final = (
    "How to read the numbers: each message counts once however often it was opened or "
    "clicked. <b>sent</b> = messages sent and not rejected; <b>bounced</b> and "
    "<b>failed (undelivered)</b> = sent but never delivered (failed: an SMS or LINE message "
    "the carrier could not deliver); <b>delivered</b> = sent - bounced - failed. "
    "Delivery rate = delivered / sent; open, click, conversion and unsubscribe rates = "
    "that many delivered messages / delivered; CTOR = clicks / opens. A rate with nothing "
    "to divide by is shown as -. Revenue is never added up across currencies. In the A/B "
    "charts, the bar around each point is the range the true rate probably lies in; "
    "arms whose ranges overlap a lot may not really differ."
)
_COST_FOOTER: Final = (
    " <b>cost</b> = the campaign costs recorded for the row; <b>ROI</b> = (revenue - cost) / "
    "cost, per currency, shown as - when the cost is unknown or zero; <b>cost/conv</b> = cost "
    "/ conversions; <b>rev/recip</b> = revenue / sent messages. A cost is shown only at the "
    "level it was recorded at (a cost for a whole campaign is never split across its "
    "channels or variants; the total includes it)."
)


def render_html(data: ReportData) -> str:
    """Return the report as one self-contained HTML document (inline CSS and SVG)."""
    total = data.main.total()
    cards = [
        ("Sent", f"{total.sent:,}"),
        ("Delivery rate", _pct(total.delivery_rate) + " %"),
        ("Open rate", _pct(total.open_rate) + " %"),
        ("Click rate", _pct(total.click_rate) + " %"),
        ("Conversion rate", _pct(total.conversion_rate) + " %"),
        ("Revenue", _revenue_text(total)),
    ]
    if data.main.has_costs:
        cards += [("Cost", _money_text(total.cost)), ("ROI", _roi_text(total))]
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(data.title)}</h1>",
        f'<p class="sub">Generated {data.generated_at:%Y-%m-%d %H:%M} UTC; periods in '
        f"{_e(data.main.tz)}; "
        + (
            "machine opens and scanner clicks excluded"
            if data.main.exclude_machine
            else "all events, machine ones included"
        )
        + (
            f"; {data.main.unmatched_events:,} events for unknown messages not counted"
            if data.main.unmatched_events
            else ""
        )
        + ".</p>",
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in cards)
        + "</div>",
        '<h2>Funnel per campaign</h2><div class="grid">',
    ]
    for row in data.campaigns.rows:
        name = row.group["campaign_id"] or "(no campaign)"
        out.append(f'<div class="panel"><h3>{_e(name)}</h3>{_funnel_svg(row)}</div>')
    out.append("</div>")
    out.append(
        f'<h2>Rates over time (per {_e(data.period)})</h2><div class="panel">'
        f"{_timeline(data.timeline, data.period)}</div>"
    )
    if data.ab:
        out.append('<h2>A/B tests</h2><div class="grid">')
        for cid, result in data.ab:
            cls = "win" if result.winner else "none"
            out.append(
                f'<div class="panel"><h3>{_e(cid or "(no campaign)")}: '
                f"{_e(result.metric.replace('_', ' '))}</h3>"
                f'<p class="verdict {cls}">{_e(plain_verdict(result))}</p>{_ab_svg(result)}'
                f'<p class="stats">Statistics: {_e(result.verdict)} Bars are '
                f"{result.confidence:.0%} Wilson intervals.</p></div>"
            )
        out.append("</div>")
    if data.links:
        out.append(_links_html(data.links, exclude_machine=data.main.exclude_machine))
    if data.journeys is not None and data.journeys.rows:
        out.append(
            f"<h2>Journeys: messages per step</h2>{_html_table(data.journeys)}"
            '<p class="stats">The messages recorded for each journey step\'s send intents; '
            "enrollments, exits and pending sends: <code>commhistory journey stats</code>.</p>"
        )
    out.append(f"<h2>Table</h2>{_html_table(data.main)}")
    footer = _FOOTER + (_COST_FOOTER if data.main.has_costs else "")
    out.append(f"<footer>{footer}</footer></main></body></html>")
    return "\n".join(out)
