"""The report page in a real browser: headless Chromium opens a signed link to the served app,
takes a screenshot, and we check the PNG shows the charts (their colours are in the pixels), and
that the DOM the browser built holds the SVG data points. `.ci/run` installs Debian's chromium."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from api import report_link
from api.charts import JOURNEY_COLOURS
from conftest import ADMIN_TOKEN
from report_history import SINCE, UNTIL, march

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it with apt-get)")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def png_rows(data: bytes, max_rows: int) -> tuple[int, int, list[bytes]]:
    """Width, height and the first `max_rows` decoded RGB(A) rows of an 8-bit PNG (no dependencies)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 4 if colour == 6 else 3
    stride = width * bpp
    raw = zlib.decompressobj().decompress(b"".join(idat), (stride + 1) * max_rows)
    rows, previous = [], bytearray(stride)
    for y in range(min(max_rows, height, len(raw) // (stride + 1))):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def colours(rows: list[bytes], bpp: int) -> set[tuple[int, int, int]]:
    found = set()
    for row in rows:
        for x in range(0, len(row), bpp * 2):  # every other pixel is plenty
            found.add((row[x], row[x + 1], row[x + 2]))
    return found


def hex_rgb(value: str) -> tuple[int, int, int]:
    return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))


def test_report_page_renders_its_charts_in_chromium(db, served, tmp_path):
    march().insert(db.engine)
    url = report_link.sign(ADMIN_TOKEN, served.url, ttl=300, since=SINCE, until=UNTIL)

    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,2000", url, profile=tmp_path / "profile")
    assert shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert len(data) > 40_000, "the screenshot is nearly empty"
    width, height, rows = png_rows(data, max_rows=700)  # header, KPI cards and the revenue chart
    assert (width, height) == (1200, 2000)
    bpp = len(rows[0]) // width
    seen = colours(rows, bpp)
    assert len(seen) > 50, "a blank or single-colour page"
    # The bars of the daily revenue chart, in each journey's colour.
    for journey in ("cart_recovery", "browse_recovery", "welcome"):
        assert hex_rgb(JOURNEY_COLOURS[journey]) in seen, f"no {journey} bar in the screenshot"

    dom = chromium("--dump-dom", url, profile=tmp_path / "profile").stdout
    assert "Breadcrumb report" in dom
    revenue = re.search(r'<svg id="revenue-chart".*?</svg>', dom, re.S).group(0)
    assert len(re.findall(r'<rect class="bar"', revenue)) == 6
    funnel = re.search(r'<svg id="funnel-chart".*?</svg>', dom, re.S).group(0)
    assert len(re.findall(r'<path class="stage"[^>]* d="M', funnel)) == 4
    lateness = re.search(r'<svg id="lateness-chart".*?</svg>', dom, re.S).group(0)
    assert len(re.findall(r'<rect class="bar"', lateness)) == 5

    # The same link after its expiry shows no report.
    expired = report_link.sign(ADMIN_TOKEN, served.url, ttl=1, now=0, since=SINCE, until=UNTIL)
    dom = chromium("--dump-dom", expired, profile=tmp_path / "profile").stdout
    assert "expired" in dom and "Breadcrumb report" not in dom


def test_report_page_shows_the_experiment_chart_in_chromium(db, served, tmp_path):
    """The experiment section of tests/test_experiment_report.py's shop: one bar per variant, in its
    colour on the screenshot, its revenue per recipient and interval whisker in the DOM."""
    from api.charts import OTHER_COLOURS
    from test_experiment_report import two_variants

    two_variants().insert(db.engine)
    url = report_link.sign(ADMIN_TOKEN, served.url, ttl=300, since=SINCE, until=UNTIL)
    shot = tmp_path / "experiments.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,2000", url, profile=tmp_path / "profile")
    assert shot.exists(), result.stderr[-2000:]
    width, _, rows = png_rows(shot.read_bytes(), max_rows=1400)  # down to the experiment chart
    seen = colours(rows, len(rows[0]) // width)
    for colour in OTHER_COLOURS[:2]:
        assert hex_rgb(colour) in seen, f"no experiment bar in {colour} in the screenshot"

    dom = chromium("--dump-dom", url, profile=tmp_path / "profile").stdout
    chart = re.search(r'<svg id="experiment-chart-cart_recovery-1".*?</svg>', dom, re.S).group(0)
    assert re.findall(r'<rect class="bar" data-variant="([^"]+)" data-value="([^"]+)"', chart) == [
        ("cart_recovery_1", "25.0000"),
        ("cart_recovery_1b", "10.0000"),
    ]
    assert len(re.findall(r'<path class="interval"', chart)) == 2
