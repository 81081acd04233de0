"""The report in a real browser: headless Chromium opens report.html from disk at phone width.

Checks: no console message at all (the page has no script, so any message is a blocked fetch, a
CSP violation or a broken resource), every image decodes, nothing overflows sideways, and the
screenshot is a non-blank PNG (kept in pytest's tmp folder: look at it). Skips only where
Chromium is not installed (``apt-get install chromium``; ``.ci/run`` does it when it can).
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report_html import make_run

from lamina.reporting import write_report

# Reads the page after load and writes what it found on <body> for --dump-dom to show.
CHECK = """<script>addEventListener("load", function () {
  var im = Array.from(document.images), root = document.documentElement;
  document.body.setAttribute("data-check", JSON.stringify({images: im.length,
    broken: im.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    overflow: root.scrollWidth - root.clientWidth}));
});</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it where it can)")
    return found


def _run(exe: str, tmp: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", "--window-size=412,2000",
            "--enable-logging=stderr", "--v=0", *extra, page.resolve().as_uri()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    report = write_report(make_run(tmp_path))
    text = report.read_text(encoding="utf-8")
    n_images = text.count('src="data:image/png;base64,')

    shot = tmp_path / "shot.png"
    proc = _run(exe, tmp_path, report, f"--screenshot={shot}")
    assert _console(proc.stderr) == []
    im = Image.open(shot)
    im.load()
    assert im.format == "PNG" and im.size == (412, 2000)
    grey = np.asarray(im.convert("L"))
    assert grey.std() > 20 and len(np.unique(grey)) > 50  # text and figures, not a blank page

    # The same page with a checking script: only the CSP is widened to let that script run.
    check = tmp_path / "check.html"
    check.write_text(text.replace("style-src 'unsafe-inline'", "style-src 'unsafe-inline'; script-src 'unsafe-inline'", 1)
                     .replace("</body>", CHECK + "</body>"), encoding="utf-8")
    proc = _run(exe, tmp_path, check, "--dump-dom")
    assert _console(proc.stderr) == []
    found = re.search(r'data-check="([^"]*)"', proc.stdout)
    assert found, "the page never finished loading"
    result = json.loads(html.unescape(found.group(1)))
    assert result == {"images": n_images, "broken": 0, "overflow": result["overflow"]}
    assert n_images >= 9 and result["overflow"] <= 0, result


def test_blocked_fetch_is_reported_as_a_console_message(tmp_path: Path) -> None:
    """The console check above can fail: an external image on the page is blocked and logged."""
    exe = _chromium()
    text = write_report(make_run(tmp_path, inspection=False)).read_text(encoding="utf-8")
    bad = tmp_path / "bad.html"
    bad.write_text(text.replace("</main>", '<img src="https://example.invalid/x.png" alt=""></main>'), encoding="utf-8")
    proc = _run(exe, tmp_path, bad, f"--screenshot={tmp_path / 'bad.png'}")
    assert any("example.invalid" in line for line in _console(proc.stderr))
    assert Image.open(io.BytesIO((tmp_path / "bad.png").read_bytes())).format == "PNG"
