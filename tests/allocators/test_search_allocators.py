"""``autocomp search --allocator dp --space prune_quant`` end to end on digits (real Ray, SQLite),
and the layer-adaptive pruning DP with its additivity check on the real digits model."""
from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from autocomp.cli import app

runner = CliRunner()


def test_search_dp_prune_quant_end_to_end(ray_session, tmp_path):
    """What `autocomp search --space prune_quant --allocator dp` runs, with one uniform
    baseline to keep the evaluations few (the CLI flags themselves: see the next test)."""
    from autocomp.search import SearchConfig, run_search
    from autocomp.store import Store

    store = Store(f"sqlite:///{tmp_path / 'pq.db'}")
    cfg = SearchConfig(space="prune_quant", allocator="dp", proxy="quant_mse", points=3, baselines=(4,))
    res = run_search(cfg, store, "pq")
    assert any(p["source"] == "dp" for p in res.front), res.front
    study = store.get_study("pq")
    assert study.config["allocator"] == "dp" and study.config["space"] == "prune_quant"
    pols = {p.policy_id: p for p in store.list_policies(study)}
    dp_pols = [p for p in pols.values() if p.source == "dp"]
    assert all(p.info["status"] == "optimal" for p in dp_pols)
    # Joint policies come out of the same sweep: some searched policy prunes a layer.
    assert any(l["prune"] > 0 for p in dp_pols for l in p.policy["layers"])
    # The first and last layers stay at 8 bits, unpruned, as the space says.
    for p in dp_pols:
        first, last = p.policy["layers"][0], p.policy["layers"][-1]
        assert first["w_bits"] == 8 and last["w_bits"] == 8 and first["prune"] == 0 == last["prune"]


def test_search_cli_flags_reach_the_pipeline(tmp_path):
    """--allocator and --space are validated before any work, with one-line errors (exit 2)."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    r = runner.invoke(app, ["search", "--allocator", "dp", "--space", "prune_quant", "--budget", "size<=25%,bitops<=20%",
                            "--db", db])
    assert r.exit_code == 2 and "use --allocator ilp" in r.output
    r = runner.invoke(app, ["search", "--allocator", "greedy", "--db", db])
    assert r.exit_code == 2 and "unknown allocator 'greedy'" in r.output
    r = runner.invoke(app, ["search", "--space", "nope", "--db", db])
    assert r.exit_code == 2 and "unknown search space 'nope'" in r.output


def test_layer_adaptive_pruning_on_digits(digits, digits_layers):
    from autocomp.allocators.layer_prune import additivity, allocate_pruning, distortion_curves, joint_distortion

    ratios = (0.0, 0.3, 0.6, 0.9)
    model = digits.model()
    curves = distortion_curves(digits, digits_layers, ratios, model=model, batches=1)
    for l in digits_layers:
        c = curves[l.name]
        assert c[0] == 0.0 and c[-1] > c[1] >= 0.0  # more pruning, more distortion
    stats = additivity(digits, digits_layers, curves, ratios, samples=6, model=model, batches=1)
    # Additivity is what the method relies on: the predicted sum must rank joint prunings right.
    assert stats["spearman"] > 0.8, stats
    sizes = np.array([l.params for l in digits_layers])
    for target in (0.5, 0.7):
        alloc = allocate_pruning(digits_layers, curves, ratios, target)
        pruned = sum(l.params * alloc[l.name] for l in digits_layers)
        assert pruned >= target * sizes.sum() - 1e-6
        uniform = {l.name: 0.6 if target == 0.5 else 0.9 for l in digits_layers}  # >= target, on the grid
        assert joint_distortion(digits, alloc, model, batches=1) < joint_distortion(digits, uniform, model, batches=1)
