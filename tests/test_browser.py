"""The HTML report in a real browser: headless Chromium loads it, lays it out and screenshots it.

Chromium is Debian's ``chromium`` package (``make test`` installs it when it can). Where it is
missing the test is skipped with `NOT_RUN` in the reason, and `tests/conftest.py` prints a
banner in the terminal summary saying the browser check did not run: it is never passed silently.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import fit_reference

NOT_RUN = "BROWSER TEST NOT RUN"
CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-dev-shm-usage", "--allow-file-access-from-files"]  # fmt: skip

# After layout, every table and image measured and written into the page as JSON, which
# --dump-dom then prints: the browser's own word on what it rendered and how large.
MEASURE = """<script>
window.addEventListener("load", () => {
  const box = (e) => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const out = {
    tables: [...document.querySelectorAll("table")].map(box),
    images: [...document.querySelectorAll("img")].map(
      (e) => box(e).concat([e.complete, e.naturalWidth, e.naturalHeight])),
    title: document.title,
  };
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason=f"{NOT_RUN}: chromium is not installed "
                    "(apt-get install chromium, or make test as root)")  # fmt: skip
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    res = fit_reference("sleepstudy", "corr_REML")[0]
    report = res.report(tmp_path / "report.html")
    measured = tmp_path / "measured.html"
    measured.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))

    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", measured.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout, re.S)
    assert found, "the page's script did not run: " + dom.stdout[:500]
    sizes = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert sizes["title"].startswith("tiers report: Reaction ~ Days")
    assert len(sizes["tables"]) == 8  # model x2, data, design, fixed, variance, LR, certificate
    assert all(w > 100 and h > 20 for w, h in sizes["tables"])
    assert len(sizes["images"]) == 6
    for w, h, complete, nw, nh in sizes["images"]:
        assert complete and nw > 200 and nh > 200  # decoded
        assert w > 200 and h > 100  # laid out at a visible size

    shot = tmp_path / "report.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a page, not a blank sheet
