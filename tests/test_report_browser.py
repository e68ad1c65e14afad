"""``autocomp report`` in a real browser: headless Chromium (Debian's package; ``.ci/install``
installs it) renders the page offline, its DOM is dumped after scripts ran and a screenshot taken.

Checked: the front plot, the front table and the per-layer map are in the rendered DOM and not
blank on screen (pixels inside each element's box); the page fetches nothing (Chromium's own
NetLog records every request the page makes; the resolver maps every host to NOTFOUND as well);
text from the study (a model spec, a policy label) that looks like HTML renders as text.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autocomp.budget import CostModel, parse_budget
from autocomp.cli import app
from autocomp.errors import StoreError
from autocomp.policy import Choice, Policy
from autocomp.profile import model_param_count
from autocomp.store import Store

EVIL = "<script>alert(1)</script>"
EVIL_LABEL = "<img src=x onerror=alert(2)><script>alert(3)</script>"
WINDOW = (1400, 3000)
# Chromium's own background traffic (updates, sync) is switched off; what remains is the page's.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
         "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
# Appended to a copy of the report: writes each element's box into the DOM, for the screenshot.
MEASURE = """<script>
const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
  return [r.left, r.top, r.width, r.height]; };
const out = document.createElement('pre'); out.id = 'boxes'; out.style.display = 'none';
out.textContent = JSON.stringify({plot: box(document.querySelector("img[alt='front plot']")),
  front: box(document.querySelector('table:not(.meta):not(.map)')), map: box(document.querySelector('table.map'))});
document.body.appendChild(out);
</script>"""


def _chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/install installs it")
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/install does)")
    return exe


def _run(exe: str, page: Path, tmp: Path, *extra: str) -> tuple[str, list[str]]:
    """Render ``page``; returns stdout and the URLs the page requested (from Chromium's NetLog)."""
    net = tmp / f"net-{page.stem}-{len(list(tmp.glob('net-*')))}.json"
    cmd = [exe, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--log-net-log={net}", "--virtual-time-budget=3000",
           *extra, page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads(net.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    starts = [e.get("params", {}) for e in log["events"] if types.get(e["type"]) == "URL_REQUEST_START_JOB"]
    # initiator 'not an origin': the browser's own requests (none of the page's)
    urls = [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"]
    return proc.stdout, urls


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in = self._in and tag != "script"

    def handle_data(self, data):
        if self._in:
            self.scripts[-1] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory, digits, digits_layers) -> Path:
    from autocomp.evaluators import get_evaluator

    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp / 'r.db'}"
    store = Store(url)
    with pytest.raises(StoreError):      # a study name is never HTML: the store refuses it
        store.open_study(EVIL, {})
    b = parse_budget("size<=25%")
    cm = CostModel(digits_layers, total_params=model_param_count(digits.model()))
    st, _ = store.open_study("browser", {"model": EVIL, "budget_text": b.describe(), "space": "mixed_precision"})
    store.save_layers(st, digits_layers)
    store.update_config(st, fp32={m: cm.fp32(m) for m in ("size", "bitops", "avg_bits")}, front_costs=b.metrics)
    names = [l.name for l in digits_layers]
    ptq = get_evaluator("ptq")
    mixed = Policy.from_choices([(n, Choice(8 if j in (0, len(names) - 1) else 4, 8)) for j, n in enumerate(names)])
    for pol, src, label in ((Policy.uniform(names, Choice(8, 8)), "uniform", "uniform w8a8"),
                            (Policy.uniform(names, Choice(32, 32)), "fp32", "fp32"),
                            (Policy.uniform(names, Choice(2, 8)), "uniform", "uniform w2a8"),
                            (mixed, "ilp", EVIL_LABEL)):
        costs = cm.costs(pol)
        store.save_policy(st, pol, src, label, costs)
        store.save_evaluation(st, ptq.evaluate(digits, pol).with_costs(costs))
    out = tmp / "report.html"
    res = CliRunner().invoke(app, ["report", "browser", "-o", str(out), "--db", url])
    assert res.exit_code == 0, res.output
    return out


def test_report_has_no_external_urls(report):
    text = report.read_text()
    assert not re.search(r"(?:src|href)\s*=\s*['\"](?!data:|#)", text), "a resource outside the page"
    assert not re.search(r"url\(\s*['\"]?(?!data:)", text)
    assert EVIL not in text and EVIL_LABEL not in text           # escaped where the study put them


def test_rendered_offline_plot_table_map_visible(report, tmp_path):
    from PIL import Image

    exe = _chromium()
    page = tmp_path / "measured.html"
    page.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
    dom, urls = _run(exe, page, tmp_path, "--dump-dom")
    assert urls == []                                             # the page fetched nothing

    parsed = _Scripts()
    parsed.feed(dom)
    assert not any("alert" in s for s in parsed.scripts)         # no script element from the study's text
    assert not any(t == "img" and a.get("onerror") for t, a in parsed.tags)
    assert EVIL.replace("<", "&lt;").replace(">", "&gt;") in dom  # shown as text
    assert "alert(3)" in dom
    plot = [a for t, a in parsed.tags if t == "img" and a.get("alt") == "front plot"]
    assert plot and plot[0]["src"].startswith("data:image/png;base64,")
    boxes = json.loads(re.search(r'<pre id="boxes"[^>]*>(.*?)</pre>', dom, re.S).group(1))
    assert all(boxes[k] and boxes[k][2] > 50 and boxes[k][3] > 20 for k in ("plot", "front", "map")), boxes

    shot = tmp_path / "shot.png"
    _, urls = _run(exe, page, tmp_path, f"--screenshot={shot}")
    assert urls == []
    img = Image.open(shot).convert("RGB")
    assert img.size == WINDOW
    for key in ("plot", "front", "map"):
        x, y, w, h = (int(v) for v in boxes[key])
        region = img.crop((x, y, min(x + w, WINDOW[0]), min(y + h, WINDOW[1])))
        colours = region.getcolors(maxcolors=1 << 20) or []
        inked = sum(n for n, c in colours if sum(c) < 600)          # not white / near white
        assert inked > 0.01 * region.size[0] * region.size[1], f"{key} looks blank on screen"
        assert len(colours) >= 3, f"{key} is one flat colour"
    blank = img.crop((0, WINDOW[1] - 40, WINDOW[0], WINDOW[1]))        # below the page: white
    assert all(sum(c) >= 750 for _, c in blank.getcolors(maxcolors=1 << 20))


def test_request_recorder_sees_a_fetch(tmp_path):
    """The recorder can fail: a page with an external image is caught."""
    exe = _chromium()
    page = tmp_path / "leaky.html"
    page.write_text("<!doctype html><html><body><img src='https://example.invalid/x.png'></body></html>")
    _, urls = _run(exe, page, tmp_path, "--dump-dom")
    assert urls == ["https://example.invalid/x.png"]
