"""The HTML report's layout and wording (issue 13, item 7).

The layout checks use the same arithmetic as the renderer promises: a text box is
``len(text) * font_size * 0.62`` user units wide (the widest average advance of the
report's sans-serif fonts), placed by its ``x`` and ``text-anchor``, and must lie inside
its SVG's ``viewBox``. ``test_report_fits_in_chromium`` checks the real boxes in a browser
at 375, 800 and 1400 px: every SVG text's rendered box inside its chart, and no page-wide
horizontal scrolling. ``test_report_screenshots`` takes a screenshot at each width and
checks that the report painted there (decoded pixels, not a blank or uniform page); the
text itself is read back through the DOM boxes, not by OCR (none is installed).
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from commhistory.demo import run_demo
from commhistory.kpi import compare
from commhistory.kpi.metrics import KpiRow, KpiTable
from commhistory.kpi.report import ReportData, render_html

CHAR_W = 0.62


def _row(
    group: dict[str, str | None],
    sent: int,
    clicks: int,
    *,
    delivered: int | None = None,
    bounced: int = 0,
    failed: int = 0,
) -> KpiRow:
    return KpiRow(
        group=group,
        sent=sent,
        delivered=sent if delivered is None else delivered,
        bounced=bounced,
        failed=failed,
        unique_opens=clicks,
        unique_clicks=clicks,
    )


def _data(
    *,
    ab: dict[str, tuple[int, int]] | None = None,
    days: tuple[str, ...] = ("2024-04-01", "2024-04-02", "2024-04-03"),
    clicks: tuple[int, ...] = (10, 20, 30),
) -> ReportData:
    main = KpiTable(
        by=("channel",),
        rows=(
            _row({"channel": "email"}, 1000, 50, bounced=20, delivered=980),
            _row({"channel": "sms"}, 500, 10, failed=17, delivered=483),
        ),
    )
    timeline = KpiTable(
        by=("day",),
        rows=tuple(_row({"day": d}, 200, c) for d, c in zip(days, clicks, strict=True)),
    )
    campaigns = KpiTable(by=("campaign_id",), rows=(_row({"campaign_id": "spring"}, 1500, 60),))
    result = compare(ab) if ab else None
    return ReportData(
        title="t",
        main=main,
        campaigns=campaigns,
        timeline=timeline,
        period="day",
        ab=(("spring", result),) if result else (),
        generated_at=datetime(2024, 5, 1, tzinfo=UTC),
    )


_SVG = re.compile(r"<svg\b([^>]*)>(.*?)</svg>", re.S)
_TEXT = re.compile(r"<text\b([^>]*)>(.*?)</text>", re.S)


def _attr(attrs: str, name: str, default: str = "") -> str:
    m = re.search(rf'\b{name}="([^"]*)"', attrs)
    return m.group(1) if m else default


def _svgs(page: str, label: str) -> list[tuple[str, str]]:
    return [
        (a, body) for a, body in _SVG.findall(page) if _attr(a, "aria-label").startswith(label)
    ]


def _texts(body: str) -> list[tuple[float, float, str, str]]:
    """Return ``(x, font_size, anchor, text)`` of each SVG text."""
    return [
        (
            float(_attr(a, "x", "0")),
            float(_attr(a, "font-size", "16")),
            _attr(a, "text-anchor", "start"),
            html.unescape(t),
        )
        for a, t in _TEXT.findall(body)
    ]


def _assert_texts_fit(svg_attrs: str, body: str) -> None:
    width = float(_attr(svg_attrs, "viewBox").split()[2])
    for x, size, anchor, text in _texts(body):
        w = len(text) * size * CHAR_W
        left = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
        assert left >= -0.01, (text, left)
        assert left + w <= width + 0.01, (text, left + w, width)


def test_ab_labels_fit_and_fonts_never_double() -> None:
    # Rates near the top of the axis put the value labels at the right edge.
    page = render_html(_data(ab={"A-control-arm": (990, 1000), "B": (1000, 1000)}))
    (svg_attrs, body), = _svgs(page, "arms")  # fmt: skip
    labels = [t for _, _, _, t in _texts(body)]
    assert "99.00% (n=1,000)" in labels
    assert "100.00% (n=1,000)" in labels
    assert "A-control-arm (control)" in labels
    _assert_texts_fit(svg_attrs, body)
    # A panel wider than the chart does not blow its fonts up past 1.25x.
    width = float(_attr(svg_attrs, "viewBox").split()[2])
    limit = re.search(r"max-width:([\d.]+)px", _attr(svg_attrs, "style"))
    assert limit is not None
    assert float(limit.group(1)) <= 1.25 * width + 0.01


def test_every_chart_text_fits_its_svg() -> None:
    page = render_html(_data(ab={"A": (37, 1000), "B": (68, 1000), "C": (0, 0)}))
    svgs = _SVG.findall(page)
    assert len(svgs) >= 4
    for svg_attrs, body in svgs:
        assert "viewBox" in svg_attrs
        _assert_texts_fit(svg_attrs, body)


def _is_nice(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m, rel_tol=1e-9) for m in (1, 2, 5, 10))


def test_axis_ticks_are_nice() -> None:
    # Peak click rate 30/200 = 15%: ticks 0, 5, 10, 15 % (not 4.7 / 9.4 / 14.1).
    page = render_html(_data(ab={"A": (37, 1000), "B": (68, 1000)}, clicks=(10, 20, 30)))
    for label in ("rates", "arms"):
        for _, body in _svgs(page, label):
            ticks = [
                float(t.rstrip("%")) for _, _, _, t in _texts(body) if re.fullmatch(r"[\d.]+%", t)
            ]
            assert ticks[0] == 0.0
            steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
            assert len(steps) == 1, ticks
            assert _is_nice(steps.pop()), ticks
    (_, wide), *_ = _svgs(page, "rates")
    assert [t for _, _, a, t in _texts(wide) if a == "end"] == ["0%", "5%", "10%", "15%"]


def test_time_axis_places_points_by_date() -> None:
    page = render_html(_data(days=("2024-04-01", "2024-04-02", "2024-04-10")))
    (_, wide), *_ = _svgs(page, "rates")
    green = sorted(
        {float(x) for x in re.findall(r'<circle cx="([\d.]+)"[^>]*fill="#3ba272"', wide)}
    )
    assert len(green) == 3
    first, second, third = green
    assert (third - second) / (second - first) == pytest.approx(8, rel=0.01)
    # A missing week of days breaks the line instead of joining across it.
    assert wide.count('stroke="#3ba272"') == 2


def test_table_has_a_total_row_and_a_failed_column() -> None:
    page = render_html(_data())
    table = page[page.index("<table") : page.index("</table>")]
    head = re.findall(r"<th[^>]*>(.*?)</th>", table)
    assert "failed (undelivered)" in head
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr.*?</tr>", table)]
    rows = [r for r in rows if r]
    failed = head.index("failed (undelivered)")
    assert [r[failed] for r in rows] == ["0", "17", "17"]
    total = rows[-1]
    assert total[0] == "total"
    assert total[head.index("sent")] == "1,500"


def test_zero_trial_arm_says_no_data() -> None:
    page = render_html(_data(ab={"A": (0, 0), "B": (10, 200)}))
    (_, body), = _svgs(page, "arms")  # fmt: skip
    labels = [t for _, _, _, t in _texts(body)]
    assert "no data (0 messages)" in labels
    assert not any(t.startswith("0.00%") for t in labels)
    assert body.count("<circle") == 1  # only B has a point and an interval
    assert "No data yet for A" in page


def test_verdict_in_a_marketers_words_first() -> None:
    page = render_html(_data(ab={"A": (74, 2000), "B": (136, 2000)}))
    sentence = "B&#x27;s click rate is higher: 6.8% vs 3.7%, very unlikely to be chance."
    assert sentence in page
    assert page.index(sentence) < page.index("after Holm")
    page = render_html(_data(ab={"A": (100, 1000), "B": (104, 1000)}))
    assert "No clear difference in click rate (A 10.0%, B 10.4%)" in page


def test_footer_says_what_the_numbers_mean() -> None:
    page = render_html(_data())
    footer = page[page.index("<footer>") :]
    assert "DESIGN" not in footer
    assert "delivered / sent" in footer
    assert "each message counts once" in footer


# --------------------------------------------------------------------------- Chromium

_MEASURE = """<script>
(function () {
  var out = {width: innerWidth, bodyScroll: document.body.scrollWidth,
             bodyClient: document.body.clientWidth,
             docScroll: document.documentElement.scrollWidth,
             docClient: document.documentElement.clientWidth, svgs: 0, texts: 0, bad: []};
  document.querySelectorAll("svg").forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width === 0) { return; }  /* the other width's chart (display:none) */
    out.svgs += 1;
    svg.querySelectorAll("text").forEach(function (t) {
      var r = t.getBoundingClientRect();
      out.texts += 1;
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5 ||
          r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5) {
        out.bad.push(t.textContent);
      }
    });
  });
  var pre = document.createElement("pre");
  pre.id = "measure";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
  if (parent !== window) { parent.postMessage(pre.textContent, "*"); }
})();
</script>"""


_FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="measured.html" style="width:WIDTHpx;height:1200px;border:0"></iframe>
<script>addEventListener("message", function (e) {
  var pre = document.createElement("pre");
  pre.id = "measure";
  pre.textContent = e.data;
  document.body.appendChild(pre);
});</script></body></html>"""


@pytest.fixture(scope="module")
def demo_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo report with the measuring script, beside a page that frames it.

    Headless Chromium will not make a window narrower than 500 px, so the report is
    measured inside an iframe of the width under test; it posts its measurement to the
    framing page, which writes it into its own DOM for ``--dump-dom``.
    """
    where = tmp_path_factory.mktemp("html")
    page = where / "demo.html"
    run_demo(where / "d.db", keyring_path=where / "d.keyring", html_path=page, contacts=800)
    text = page.read_text(encoding="utf-8")
    (where / "measured.html").write_text(
        text.replace("</body>", _MEASURE + "</body>"), encoding="utf-8"
    )
    return where


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium binary on PATH")
@pytest.mark.parametrize("width", [375, 800, 1400])
def test_report_fits_in_chromium(demo_page: Path, width: int) -> None:
    frame = demo_page / f"frame-{width}.html"
    frame.write_text(_FRAME.replace("WIDTH", str(width)), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1500,1300", "--virtual-time-budget=10000",
                "--dump-dom", frame.as_uri(),
            ],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-500:]
    m = json.loads(html.unescape(found.group(1)))
    assert m["width"] == width
    assert m["bodyScroll"] <= m["bodyClient"], m
    assert m["docScroll"] <= m["docClient"], m
    assert m["svgs"] >= 5
    assert m["texts"] > 30
    assert m["bad"] == [], m


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit, non-interlaced RGB or RGBA PNG: ``(width, height, rows)``."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, head = 8, b"", b""
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            head = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", head)
    assert (depth, interlace) == (8, 0)
    bpp = {2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line[j] for j in range(stride) if bpp == 3 or j % 4 != 3))
        prev = line
    return width, height, rows


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium binary on PATH")
@pytest.mark.parametrize("width", [375, 800, 1400])
def test_report_screenshots(demo_page: Path, width: int) -> None:
    frame = demo_page / f"shot-{width}.html"
    frame.write_text(_FRAME.replace("WIDTH", str(width)), encoding="utf-8")
    shot = demo_page / f"report-{width}.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                "--window-size=1500,1300", "--virtual-time-budget=10000",
                f"--screenshot={shot}", frame.as_uri(),
            ],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    assert shot.is_file()
    w, h, rows = _png_pixels(shot.read_bytes())
    assert (w, h) == (1500, 1300)
    report = [row[: width * 3] for row in rows[:1200]]
    pixels = {row[i : i + 3] for row in report[::4] for i in range(0, len(row), 12)}
    assert len(pixels) > 20  # text, bars and cards painted, not a blank page
    background = report[0][:3]
    painted = sum(
        row[i : i + 3] != background for row in report[::4] for i in range(0, len(row), 12)
    )
    assert painted > len(report[::4]) * width // 4 * 0.05
    if width < 1500 - 20:  # beside the frame: the framing page's blank background only
        beside = {
            row[i : i + 3] for row in rows[:1200:8] for i in range((width + 10) * 3, 1500 * 3, 30)
        }
        assert len(beside) == 1


def _words(text: str) -> str:
    """Lower-case words and numbers only, single-spaced: what OCR and the DOM agree on."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("tesseract") is None,
    reason="needs chromium and tesseract (Debian packages chromium, tesseract-ocr)",
)
@pytest.mark.parametrize("width", [375, 800, 1400])
def test_report_text_reads_back_from_screenshots(demo_page: Path, width: int) -> None:
    """The rendered page, read back by OCR, shows every heading, campaign and verdict.

    A heading or verdict clipped by its box, hidden under another, or pushed out of
    the page would not be read back; the DOM checks above see boxes, this sees pixels.
    """
    page = (demo_page / "demo.html").read_text(encoding="utf-8")
    headings = [html.unescape(h) for h in re.findall(r"<h2>([^<]+)</h2>", page)]
    assert "Clicks per link" in headings
    assert "A/B tests" in headings
    frame = demo_page / f"read-{width}.html"
    frame.write_text(
        _FRAME.replace("WIDTH", str(width)).replace("height:1200px", "height:9000px"),
        encoding="utf-8",
    )
    shot = demo_page / f"read-{width}.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                "--window-size=1500,9000", "--virtual-time-budget=10000",
                f"--screenshot={shot}", frame.as_uri(),
            ],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    read = subprocess.run(
        ["tesseract", str(shot), "-"], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    words = _words(read)
    missing = [h for h in headings if _words(h) not in words]
    assert missing == [], f"headings not read back at {width} px: {missing}"
    for campaign in ("line coupon", "sms reminder", "spring sale"):
        assert campaign in words, f"{campaign!r} not read back at {width} px"
    # The marketer's verdicts, as many as the page holds (a clipped one would be short).
    shown = _words(html.unescape(re.sub(r"<[^>]+>", " ", page)))
    for verdict in ("could well be chance", "very unlikely to be chance"):
        assert words.count(verdict) == shown.count(verdict), (verdict, width)
    assert shown.count("could well be chance") + shown.count("very unlikely to be chance") > 0
