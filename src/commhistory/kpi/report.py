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
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import attrs

from commhistory.kpi.abtest import ABResult, compare
from commhistory.kpi.metrics import COUNTS, RATES, KpiRow, KpiTable

__all__ = [
    "KpiSource",
    "ReportData",
    "build_report",
    "render_csv",
    "render_html",
    "render_json",
    "render_table",
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


def render_table(table: KpiTable) -> str:
    """Return the table as aligned text for a terminal (rates in percent)."""
    head = [*table.by, *(_SHORT[c] for c in _TABLE_COUNTS), *(_SHORT[r] for r in _TABLE_RATES)]
    head.append("revenue")
    body: list[list[str]] = []
    rows = list(table.rows)
    if len(rows) > 1 or not table.by:
        rows.append(attrs.evolve(table.total(), group=dict.fromkeys(table.by, "")))
    for i, row in enumerate(rows):
        cells = [("-" if row.group.get(k) is None else str(row.group[k])) for k in table.by]
        if i == len(table.rows) and table.by:
            cells = ["total", *[""] * (len(table.by) - 1)]
        cells += [f"{getattr(row, c):,}" for c in _TABLE_COUNTS]
        cells += [_pct(getattr(row, r)) for r in _TABLE_RATES]
        cells.append(_revenue_text(row))
        body.append(cells)
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)
    ]
    nkeys = len(table.by)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < nkeys or i == len(cells) - 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    notes = []
    if table.unmatched_events:
        notes.append(f"{table.unmatched_events:,} events for unknown messages not counted")
    notes.append("machine opens/clicks excluded" if table.exclude_machine else "all events")
    out.append(f"({'; '.join(notes)}; periods in {table.tz})")
    return "\n".join(out)


def render_json(table: KpiTable, *, ab: Iterable[tuple[str | None, ABResult]] = ()) -> str:
    """Return the table as JSON: ``{"rows": [...], ...}`` with rates as floats or null."""
    data = table.to_dict()
    tests = [{"campaign_id": c, **r.to_dict()} for c, r in ab]
    if tests:
        data["ab_tests"] = tests
    return json.dumps(data, indent=2, ensure_ascii=False)


def render_csv(table: KpiTable) -> str:
    """Return the table as CSV: keys, counts, one ``revenue_<CUR>`` column per currency, rates."""
    currencies = sorted({c for r in table.rows for c in r.revenue})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*table.by, *COUNTS, *(f"revenue_{c}" for c in currencies), *RATES.keys()])
    for row in table.rows:
        writer.writerow(
            [
                *("" if row.group.get(k) is None else row.group[k] for k in table.by),
                *(getattr(row, c) for c in COUNTS),
                *(format(row.revenue[c], "f") if c in row.revenue else "" for c in currencies),
                *("" if getattr(row, r) is None else repr(getattr(row, r)) for r in RATES),
            ]
        )
    return buf.getvalue()


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
    """

    title: str
    main: KpiTable
    campaigns: KpiTable
    timeline: KpiTable
    period: str
    ab: tuple[tuple[str | None, ABResult], ...]
    generated_at: datetime


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

    Returns:
        The report's data.

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
    return ReportData(
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
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
background:#f6f7f9;color:#1d2433}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 10px}
.sub{color:#5b6478;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.card,.panel{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(20,30,60,.08);
padding:14px 16px}
.card b{display:block;font-size:24px}.card span{color:#5b6478;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{padding:6px 8px;border-bottom:1px solid #e7e9ef;text-align:right;white-space:nowrap}
th:first-child,td:first-child,th.k,td.k{text-align:left}
th{background:#eef1f6;font-weight:600}
.verdict{margin:6px 0 0;font-weight:600}.win{color:#11804a}.none{color:#8a5a00}
.legend span{display:inline-block;margin-right:14px;font-size:13px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
footer{color:#5b6478;font-size:12px;margin-top:26px}
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


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _funnel_svg(row: KpiRow) -> str:
    width, bar_h, gap, left = 500, 26, 8, 92
    top = max(row.sent, 1)
    parts = [
        f'<svg viewBox="0 0 {width} {len(_FUNNEL) * (bar_h + gap)}" width="100%" '
        f'role="img" aria-label="funnel">'
    ]
    for i, (name, label, color) in enumerate(_FUNNEL):
        value = getattr(row, name)
        y = i * (bar_h + gap)
        w = max(2.0, (width - left - 120) * value / top)
        share = f"{value / top:.1%}" if row.sent else "-"
        parts.append(
            f'<text x="0" y="{y + 18}" font-size="13" fill="#1d2433">{label}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="4" fill="{color}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 18}" font-size="13" fill="#1d2433">'
            f"{value:,} ({share})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _timeline_svg(table: KpiTable, period: str) -> str:
    rows = list(table.rows)
    width, height, left, right, top, bottom = 1100, 300, 50, 44, 16, 44
    if not rows:
        return "<p>No messages in range.</p>"
    peak = max((getattr(r, n) or 0.0 for r in rows for n, _, _ in _LINES), default=0.0)
    ceiling = max(0.05, min(1.0, peak * 1.15))
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (plot_w * i / (len(rows) - 1) if len(rows) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / ceiling)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="rates">']
    for k in range(5):
        v = ceiling * k / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="#e3e6ee"/><text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="11" '
            f'text-anchor="end" fill="#5b6478">{v:.0%}</text>'
        )
    step = max(1, len(rows) // 10)
    for i, r in enumerate(rows):
        if i % step == 0 or i == len(rows) - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - bottom + 18}" font-size="11" '
                f'text-anchor="middle" fill="#5b6478">{_e(r.group[period])}</text>'
            )
    for name, _, color in _LINES:
        points = [(x(i), getattr(r, name)) for i, r in enumerate(rows)]
        coords = " ".join(f"{px:.1f},{y(v):.1f}" for px, v in points if v is not None)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2.2"/>'
        )
        parts.extend(
            f'<circle cx="{px:.1f}" cy="{y(v):.1f}" r="2.6" fill="{color}"/>'
            for px, v in points
            if v is not None
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{c}"></i>{label}</span>' for _, label, c in _LINES
    )
    return f'{"".join(parts)}<div class="legend">{legend}</div>'


def _ab_svg(result: ABResult) -> str:
    width, row_h, left, right = 520, 34, 80, 60
    height = row_h * len(result.arms) + 28
    hi = max((a.high for a in result.arms), default=1.0)
    ceiling = min(1.0, max(0.01, hi * 1.15))

    def x(v: float) -> float:
        return left + (width - left - right) * v / ceiling

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="arms">']
    for k in range(5):
        v = ceiling * k / 4
        parts.append(
            f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="0" y2="{height - 22}" stroke="#e3e6ee"/>'
            f'<text x="{x(v):.1f}" y="{height - 6}" font-size="11" text-anchor="middle" '
            f'fill="#5b6478">{v:.1%}</text>'
        )
    for i, arm in enumerate(result.arms):
        cy = i * row_h + 18
        color = "#11804a" if arm.name == result.winner else "#5470c6"
        rate = arm.rate or 0.0
        parts.append(
            f'<text x="0" y="{cy + 4}" font-size="13" fill="#1d2433">{_e(arm.name)}'
            f"{' (control)' if arm.name == result.control else ''}</text>"
            f'<line x1="{x(arm.low):.1f}" x2="{x(arm.high):.1f}" y1="{cy}" y2="{cy}" '
            f'stroke="{color}" stroke-width="3"/>'
            f'<line x1="{x(arm.low):.1f}" x2="{x(arm.low):.1f}" y1="{cy - 7}" y2="{cy + 7}" '
            f'stroke="{color}" stroke-width="2"/>'
            f'<line x1="{x(arm.high):.1f}" x2="{x(arm.high):.1f}" y1="{cy - 7}" '
            f'y2="{cy + 7}" stroke="{color}" stroke-width="2"/>'
            f'<circle cx="{x(rate):.1f}" cy="{cy}" r="5.5" fill="{color}"/>'
            f'<text x="{x(arm.high) + 8:.1f}" y="{cy + 4}" font-size="12" fill="#1d2433">'
            f"{rate:.2%} (n={arm.trials:,})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(table: KpiTable) -> str:
    head = "".join(f'<th class="k">{_e(k)}</th>' for k in table.by)
    head += "".join(f"<th>{_e(_SHORT[c])}</th>" for c in _TABLE_COUNTS)
    head += "".join(f"<th>{_e(_SHORT[r])}</th>" for r in _TABLE_RATES)
    head += "<th>revenue</th>"
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td class="k">{_e("-" if row.group.get(k) is None else row.group[k])}</td>'
            for k in table.by
        )
        cells += "".join(f"<td>{getattr(row, c):,}</td>" for c in _TABLE_COUNTS)
        cells += "".join(f"<td>{_pct(getattr(row, r))}</td>" for r in _TABLE_RATES)
        cells += f"<td>{_e(_revenue_text(row))}</td>"
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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
        f"{_timeline_svg(data.timeline, data.period)}</div>"
    )
    if data.ab:
        out.append('<h2>A/B tests</h2><div class="grid">')
        for cid, result in data.ab:
            cls = "win" if result.winner else "none"
            out.append(
                f'<div class="panel"><h3>{_e(cid or "(no campaign)")}: '
                f"{_e(result.metric.replace('_', ' '))}, "
                f"{result.confidence:.0%} Wilson intervals</h3>{_ab_svg(result)}"
                f'<p class="verdict {cls}">{_e(result.verdict)}</p></div>'
            )
        out.append("</div>")
    out.append(f"<h2>Table</h2>{_html_table(data.main)}")
    out.append(
        "<footer>commhistory: counts are per message (DESIGN section 5); rates with "
        "no denominator are shown as -.</footer></main></body></html>"
    )
    return "\n".join(out)
