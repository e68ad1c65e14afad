"""The built-in ``tiny-lm`` workload: trained on the standard library's source, cached, and a whole
search on it (real Ray, real SQLite, the real CLI), its lower-is-better perplexity handled by the
front, ``front show``, the plot, the HTML report and ``studies compare``."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autocomp.cli import app
from autocomp.workload import load_workload

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_lm():
    wl = load_workload("tiny-lm")
    wl.model()
    return wl


def test_tiny_lm_is_a_trained_gpt2_with_tied_embeddings(tiny_lm):
    from autocomp.workloads._cache import cache_dir

    m = tiny_lm.model()
    assert type(m).__name__ == "GPT2LMHeadModel" and m.config.n_layer >= 4
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()   # tied
    assert tiny_lm.quality == "perplexity"
    ppl = tiny_lm.evaluate(m)
    assert 1.0 < ppl < 14.0          # per byte: untrained ~256, byte frequencies alone ~24
    assert any(p.name.startswith("tiny-lm-v") for p in cache_dir().iterdir())
    # the same workload again: same data, same weights (from the cache)
    again = load_workload("tiny-lm")
    assert again.evaluate(again.model()) == pytest.approx(ppl, rel=1e-6)


@pytest.fixture(scope="module")
def searched(ray_session, tiny_lm, tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('tinylm') / 'study.db'}"
    r = runner.invoke(app, ["search", "--model", "tiny-lm", "--study", "lm", "--db", db, "--points", "4",
                            "--workers", "2"])
    assert r.exit_code == 0, r.output
    return db, r


def test_search_on_tiny_lm_ranks_lower_perplexity_as_better(searched):
    db, r = searched
    assert "perplexity" in r.stdout and "vs fp32" in r.stdout
    doc = json.loads(runner.invoke(app, ["front", "show", "lm", "--db", db, "--json"]).stdout)
    pts = doc["points"]
    assert pts and all(p["quality_metric"] == "perplexity" and "perplexity" in p for p in pts)
    fp32 = next(p for p in pts if p["label"] == "fp32")
    front = sorted((p for p in pts if not p["baseline"]), key=lambda p: p["size"])
    assert len(front) >= 2
    # along the front, a larger size buys a lower (better) perplexity: never a higher one
    assert all(b["perplexity"] < a["perplexity"] for a, b in zip(front, front[1:]))
    assert all(p["perplexity"] >= fp32["perplexity"] * 0.98 for p in front)    # compression does not beat fp32
    for u in (p for p in pts if p["baseline"]):
        # a baseline is marked on the front exactly when no searched policy is as small and as
        # good (lower perplexity) and strictly better in one of the two
        dominated = any(p["size"] <= u["size"] and p["perplexity"] <= u["perplexity"]
                        and (p["size"] < u["size"] or p["perplexity"] < u["perplexity"]) for p in front)
        assert u["on_front"] is (not dominated), u
    print(r.stdout)


def test_plot_report_and_compare_on_perplexity(searched, tmp_path):
    db, _ = searched
    png, html = tmp_path / "f.png", tmp_path / "r.html"
    assert runner.invoke(app, ["front", "plot", "lm", "--db", db, "-o", str(png)]).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert runner.invoke(app, ["report", "lm", "--db", db, "-o", str(html)]).exit_code == 0
    page = html.read_text()
    assert "<th>perplexity</th>" in page and "<th>vs fp32</th>" in page
    r = runner.invoke(app, ["studies", "compare", "lm", "lm", "--db", db])
    assert r.exit_code == 0, r.output
    assert "best perplexity" in r.output


def test_splits_span_the_streams_and_the_held_out_blocks_are_never_evaluated(tiny_lm):
    """Version 2: evaluation and calibration blocks are drawn over the whole streams, and the
    held-out split (for benchmarks) shares no block with the evaluation split."""
    import torch

    from autocomp.workloads.tiny_lm import N_EVAL, N_TEST, SEQ, byte_streams, held_out_split
    from autocomp.workloads.text import blocks

    train, val = byte_streams()
    vb = blocks(val, SEQ)
    ev = torch.cat([x for x, _ in tiny_lm.eval])
    test = torch.cat([x for x, _ in held_out_split()])
    assert len(ev) == N_EVAL and len(test) == N_TEST
    rows = {tuple(r.tolist()): i for i, r in enumerate(vb)}
    ev_at = sorted(rows[tuple(r.tolist())] for r in ev)
    test_at = {rows[tuple(r.tolist())] for r in test}
    assert ev_at[0] == 0 and ev_at[-1] > 0.95 * len(vb)      # from the start to the end of the stream
    assert not set(ev_at) & test_at
    cal = torch.cat([x for x, _ in tiny_lm.calib])
    tb = {tuple(r.tolist()): i for i, r in enumerate(blocks(train, SEQ))}
    assert max(tb[tuple(r.tolist())] for r in cal) > 0.95 * len(tb)
