"""The HTML audit report opened in headless Chromium: the screenshot must show the timeline's bars
(a failed run in red, the retry in green). Set REPORT_SCREENSHOT to keep the PNG."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from flannel_bot.service.handler import Service
from tests.unit.test_reports import incident, report  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FAILED_RED = (0xCF, 0x22, 0x2E)
SUCCEEDED_GREEN = (0x2D, 0xA4, 0x4E)


def pixels(png: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB(A) PNG, as Chromium writes them."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = kind = 0
    while pos < len(png):
        length, tag = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            width, height, depth, kind = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and kind in (2, 6), (depth, kind)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 3 if kind == 2 else 4
    raw, stride, out = zlib.decompress(idat), width * bpp, []
    prev = bytearray(stride)
    for y in range(height):
        ftype, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out.extend(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return width, height, out


def test_the_html_report_shows_the_timeline_in_chromium(
    incident: Service,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert CHROMIUM, "Chromium is not installed: `apt-get install chromium` (.ci/run does)"
    page = tmp_path / "report.html"
    page.write_text(report(incident, "html"))
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    if os.environ.get("REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])
    width, height, rgb = pixels(shot.read_bytes())
    assert (width, height) == (1200, 900)
    colours = set(rgb)
    assert FAILED_RED in colours, "the failed run's bar is not on screen"
    assert SUCCEEDED_GREEN in colours, "the retry's bar is not on screen"
