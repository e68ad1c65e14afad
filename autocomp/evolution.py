"""Proxy evolution (EMQ-style): expression trees over a bench's primitives, fitness on Ray.

The bench's cost bands (:mod:`autocomp.bands`) are split whole into a training and a held-out
part (``train_fraction`` of the bands, by ``seed``). An individual's fitness is the within-band
Spearman of its prediction with the measured drop on the training bands, the global Spearman
breaking ties. Before scoring, a screen discards expressions that are invalid, non-finite,
constant (on the entries or on the policies' predictions), or duplicates -- the same tree up to
commutative arguments, or the same ranking of the training policies as one already kept.

Selection prompts diversity: elites are taken best first but one per distinct fitness, and
tournaments compare fitness shared within a niche (individuals reading the same primitives). The
population and fitness of every generation are stored (record ``evolve/<run>/<generation>``);
generation ``g + 1`` depends only on generation ``g`` and the seed, so an interrupted run resumes
from its last stored generation and ends on the result of a straight run.

Example:
    >>> from autocomp.evolution import EvolveConfig, run_evolution
    >>> out = run_evolution(EvolveConfig(bench="bench-digits", generations=5), store)   # doctest: +SKIP
    >>> out["text"], out["held_out"]["band_spearman"]                                   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from autocomp.bands import band_kendall, band_spearman, cost_bands, kendall, spearman
from autocomp.errors import AutocompError
from autocomp.progress import Stages
from autocomp.store import Store

@dataclass
class EvolveConfig:
    """What an evolution searches (``generations`` is how far; the rest defines the run)."""

    bench: str = "bench-digits"
    generations: int = 10
    population: int = 32
    seed: int = 0
    train_fraction: float = 0.6
    # Small trees generalise from a small bench (digits, 90 policies: BENCHMARKS.md).
    max_depth: int = 3
    max_size: int = 5
    elites: int = 4
    # Share of the training bands kept out of the fitness; the final expression is the last
    # generation's best on them (0: the fittest one).
    validation: float = 0.0
    tournament: int = 3
    workers: int | None = None
    address: str | None = None

    def run_key(self) -> str:
        """What names a run in the bench: everything but how far it goes and where it runs."""
        d = {k: v for k, v in asdict(self).items() if k not in ("generations", "workers", "address", "bench")}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    def check(self) -> None:
        if self.generations < 1:
            raise AutocompError("--generations must be at least 1")
        if self.population < 4:
            raise AutocompError("--population must be at least 4")
        if not 0.0 < self.train_fraction < 1.0:
            raise AutocompError(f"--train-fraction must lie between 0 and 1, got {self.train_fraction}")
        if self.max_depth < 1 or self.max_size < 1:
            raise AutocompError("--max-depth and --max-size must be at least 1")
        if not 0.0 <= self.validation < 1.0:
            raise AutocompError(f"--validation must lie in [0, 1), got {self.validation}")
        if not 0 <= self.elites < self.population:
            raise AutocompError("--elites must be at least 0 and below --population")
        if self.workers is not None and self.workers < 1:
            raise AutocompError("--workers must be at least 1")


def split_bands(costs: Sequence[float], tol: float, fraction: float, seed: int) -> np.ndarray:
    """A training mask over the policies: whole cost bands (of three or more) go to training or
    held out; at least one populated band each side when there are two.

    Example:
        >>> split_bands([1, 1, 1, 2, 2, 2, 4, 4, 4], 0.05, 0.6, 0).tolist().count(True)
        6
    """
    bands = [b for b in cost_bands(costs, tol) if len(b) >= 3]
    if len(bands) < 2:
        raise AutocompError(f"the bench has {len(bands)} cost band(s) of three policies or more: a split needs two "
                            f"(bench more --samples)")
    order = list(range(len(bands)))
    random.Random(seed).shuffle(order)
    k = min(max(1, round(fraction * len(bands))), len(bands) - 1)
    mask = np.zeros(len(costs), dtype=bool)
    for b in order[:k]:
        mask[bands[b]] = True
    return mask


def bench_data(bench, space) -> dict[str, Any]:
    """Plain arrays the fitness tasks need: every primitive per (layer, choice), the entry each
    policy takes per layer, the drops and the costs."""
    from autocomp.proxies.evolved import entries, terminals
    from autocomp.proxies.evolved.primitives import NAMES

    layers = bench.layers
    items, layer_index = entries(layers, space)
    where = {(n, c.key): i for i, (n, c) in enumerate(items)}
    try:
        idx = np.asarray([[where[(n, c.key)] for n, c in p.layers] for p in bench.policies], dtype=np.int64)
    except KeyError as e:
        raise AutocompError(f"a bench policy takes a choice outside space {bench.space!r}: {e}") from None
    return {"env": terminals(bench.primitives, items, NAMES), "layer": layer_index, "idx": idx,
            "drops": np.asarray(bench.drops, dtype=float), "costs": list(bench.costs), "tol": bench.band_tol}


def screen_and_score(tree: Any, data: dict[str, Any], mask: np.ndarray, max_size: int = 25) -> dict[str, Any]:
    """``{"fitness": [band, global], "key": ranking fingerprint}`` or ``{"reject": why}``."""
    from autocomp.proxies.evolved import expression as ex

    try:
        ex.check(tree, list(data["env"]))
    except ex.InvalidExpression:
        return {"reject": "invalid"}
    if ex.size(tree) > max_size:
        return {"reject": "invalid"}
    values = ex.evaluate(tree, data["env"], data["layer"])
    if values.shape != data["layer"].shape or not np.isfinite(values).all():
        return {"reject": "non-finite"}
    if np.ptp(values) <= 1e-12 * max(np.abs(values).max(), 1e-300):
        return {"reject": "constant"}
    pred = values[data["idx"]].sum(axis=1)
    train = pred[mask]
    if not np.isfinite(pred).all() or len(np.unique(train)) < 2:
        return {"reject": "constant"}
    drops, costs = data["drops"][mask], [c for c, m in zip(data["costs"], mask) if m]
    band, _, _ = band_spearman(train.tolist(), drops.tolist(), costs, data["tol"])
    glob = spearman(train, drops)
    order = np.argsort(train, kind="mergesort")
    return {"fitness": [band if band is not None else -1.0, glob if glob is not None else -1.0],
            "key": hashlib.sha1(order.tobytes()).hexdigest()[:16]}


def _score_all(trees: list, data_ref, mask, workers: int, max_size: int) -> list[dict[str, Any]]:
    """Screen and score ``trees`` on Ray in ``workers`` chunks (the result never depends on them)."""
    import ray

    @ray.remote(num_cpus=1)
    def chunk(ts, data, m):
        return [screen_and_score(t, data, m, max_size) for t in ts]

    size = max(1, -(-len(trees) // workers))
    futures = [chunk.remote(trees[i:i + size], data_ref, mask) for i in range(0, len(trees), size)]
    return [r for part in ray.get(futures) for r in part]


def _select(cands: list, results: list, need: int, taken: set[str], keys: set[str], stats: dict) -> tuple[list, list]:
    """The first ``need`` candidates that pass the screen and duplicate nothing kept."""
    from autocomp.proxies.evolved.expression import canonical

    trees, fits = [], []
    for t, r in zip(cands, results):
        if len(trees) >= need:
            break
        if "reject" in r:
            stats[r["reject"]] = stats.get(r["reject"], 0) + 1
            continue
        c = canonical(t)
        if c in taken or r["key"] in keys:
            stats["duplicate"] = stats.get("duplicate", 0) + 1
            continue
        taken.add(c)
        keys.add(r["key"])
        trees.append(t)
        fits.append(r)
    return trees, fits


def _initial(cfg: EvolveConfig, prims: Sequence[str], data_ref, mask, workers: int) -> dict[str, Any]:
    from autocomp.proxies.evolved import expression as ex

    rng = random.Random(f"{cfg.seed}:0")
    # Every primitive alone first (the hand-designed factors are among them), then random trees.
    cands = list(prims) + [ex.grow(rng, prims, min(3, cfg.max_depth)) for _ in range(3 * cfg.population)]
    stats: dict[str, int] = {}
    results = _score_all(cands, data_ref, mask, workers, cfg.max_size)
    trees, fits = _select(cands, results, cfg.population, set(), set(), stats)
    return {"generation": 0, "population": trees, "fitness": [f["fitness"] for f in fits],
            "keys": [f["key"] for f in fits], "screened": stats}


def _next(cfg: EvolveConfig, gen: dict[str, Any], prims: Sequence[str], data_ref, mask, workers: int) -> dict[str, Any]:
    from autocomp.proxies.evolved import expression as ex

    g = gen["generation"] + 1
    rng = random.Random(f"{cfg.seed}:{g}")
    pop, fit, keys = gen["population"], [tuple(f) for f in gen["fitness"]], gen["keys"]
    ranked = sorted(range(len(pop)), key=lambda i: (*fit[i], -ex.size(pop[i])), reverse=True)  # small wins ties
    elites, seen_fit = [], set()
    for i in ranked:                       # one elite per distinct fitness: no clones at the top
        f = (round(fit[i][0], 6), round(fit[i][1], 6))
        if f not in seen_fit and len(elites) < cfg.elites:
            seen_fit.add(f)
            elites.append(i)
    niche = {}
    for t in pop:
        niche[tuple(ex.leaves(t))] = niche.get(tuple(ex.leaves(t)), 0) + 1
    shared = [fit[i][0] / niche[tuple(ex.leaves(pop[i]))] ** 0.5 if fit[i][0] > 0 else fit[i][0]
              for i in range(len(pop))]

    def pick() -> Any:
        contenders = rng.sample(range(len(pop)), min(cfg.tournament, len(pop)))
        return pop[max(contenders, key=lambda i: (shared[i], fit[i]))]

    cands = []
    for _ in range(3 * (cfg.population - len(elites))):
        if rng.random() < 0.5:
            child = ex.crossover(pick(), pick(), rng, cfg.max_depth)
            if rng.random() < 0.3:
                child = ex.mutate(child, rng, prims, cfg.max_depth)
        else:                              # a parent unchanged would only be a duplicate
            child = ex.mutate(pick(), rng, prims, cfg.max_depth)
        cands.append(child)
    stats: dict[str, int] = {}
    taken = {ex.canonical(pop[i]) for i in elites}
    results = _score_all(cands, data_ref, mask, workers, cfg.max_size)
    trees, fits = _select(cands, results, cfg.population - len(elites), taken, {keys[i] for i in elites}, stats)
    return {"generation": g, "population": [pop[i] for i in elites] + trees,
            "fitness": [list(fit[i]) for i in elites] + [f["fitness"] for f in fits],
            "keys": [keys[i] for i in elites] + [f["key"] for f in fits], "screened": stats}


def held_out(pred: Sequence[float], bench, mask: np.ndarray) -> dict[str, Any]:
    """Within-band and global Spearman and Kendall of ``pred`` on the held-out bands."""
    test = ~mask
    p = [float(x) for x, m in zip(pred, test) if m]
    d = [x for x, m in zip(bench.drops, test) if m]
    c = [x for x, m in zip(bench.costs, test) if m]
    band, nb, n = band_spearman(p, d, c, bench.band_tol)
    return {"band_spearman": band, "spearman": spearman(p, d), "band_kendall": band_kendall(p, d, c, bench.band_tol)[0],
            "kendall": kendall(p, d), "bands": nb, "policies": n}


def run_evolution(cfg: EvolveConfig, store: Store, stages: Stages | None = None) -> dict[str, Any]:
    """Evolve (resuming any stored generations of the same run) and return the best expression
    with its training fitness and held-out figures beside every hand-designed proxy's."""
    from autocomp.proxies.evolved import expression as ex
    from autocomp.proxies.evolved.primitives import NAMES
    from autocomp.search_spaces import load_space
    from autocomp.stages.bench import load_bench
    from autocomp.workers.session import ensure_ray

    stages = stages or Stages()
    cfg.check()
    bench = load_bench(store, cfg.bench)
    mask = split_bands(bench.costs, bench.band_tol, cfg.train_fraction, cfg.seed)
    fit, val = mask, None
    if cfg.validation > 0:
        inside = np.flatnonzero(mask)
        keep = split_bands([bench.costs[i] for i in inside], bench.band_tol, 1.0 - cfg.validation, cfg.seed + 1)
        fit, val = np.zeros_like(mask), np.zeros_like(mask)
        fit[inside[keep]], val[inside[~keep]] = True, True
    data = bench_data(bench, load_space(bench.space))
    prims = sorted(NAMES)
    ray = ensure_ray(cfg.address, num_cpus=cfg.workers)
    workers = cfg.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    data_ref = ray.put(data)
    run = cfg.run_key()
    prefix = f"evolve/{run}/"
    stored = [int(k[len(prefix):]) for k in store.record_keys(bench.study, prefix)]
    start = max([g for g in stored if g <= cfg.generations - 1], default=-1)
    gen = store.load_record(bench.study, f"{prefix}{start:04d}") if start >= 0 else None
    with stages.stage("evolve", cfg.generations - start - 1) as tick:
        if gen is None:
            gen = _initial(cfg, prims, data_ref, fit, workers)
            store.save_record(bench.study, f"{prefix}{0:04d}", gen)
            tick()
        while gen["generation"] < cfg.generations - 1:
            gen = _next(cfg, gen, prims, data_ref, fit, workers)
            store.save_record(bench.study, f"{prefix}{gen['generation']:04d}", gen)
            tick()
    pop = gen["population"]
    checked = [screen_and_score(t, data, val, cfg.max_size)["fitness"] for t in pop] if val is not None else None
    best = max(range(len(pop)), key=lambda i: (*(checked[i] if checked else ()), *gen["fitness"][i], -ex.size(pop[i])))
    tree = pop[best]
    values = ex.evaluate(tree, data["env"], data["layer"])
    pred = values[data["idx"]].sum(axis=1)
    compare = {name: held_out([s.predict(p) for p in bench.policies], bench, mask)
               for name, s in sorted(bench.sensitivities.items())}
    return {"expression": tree, "text": ex.text(tree), "run": run, "generations": cfg.generations,
            "train": {"band_spearman": gen["fitness"][best][0], "spearman": gen["fitness"][best][1],
                      "policies": int(fit.sum())},
            "validation": None if checked is None else {"band_spearman": checked[best][0],
                                                        "spearman": checked[best][1], "policies": int(val.sum())},
            "held_out": held_out(pred, bench, mask), "hand_designed": compare, "bench": cfg.bench,
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("workers", "address")}}


def save_evolved(result: dict[str, Any], name: str, out: str | Path | None = None) -> Path:
    """Save ``result`` as ``proxies/evolved/NAME.json`` (or ``out``); returns the path.
    ``get_proxy("evolved:NAME")`` (or ``evolved:PATH``) then builds the proxy."""
    from autocomp.proxies.evolved import FOLDER, save_expression

    path = Path(out) if out else FOLDER / f"{name}.json"
    save_expression({"name": name, **result}, path)
    return path
