"""Expression trees over primitives: evaluation (numpy), random growth, mutation, crossover, text.

A tree is plain JSON: a primitive name (a leaf, see :mod:`.primitives`), ``[op, child]`` or
``[op, left, right]``. It evaluates on vectors with one entry per (layer, choice) of the space;
``layer`` (the entry's layer index) lets the layer-aggregating ops (``lmean``, ``lmax``) combine
a layer's choices. The policy's predicted degradation is the sum over layers of the entries it
picks -- the additive model the allocators solve.

Example:
    >>> import numpy as np
    >>> env = {"perturb": np.array([4.0, 1.0, 9.0]), "hessian": np.array([2.0, 2.0, 3.0])}
    >>> tree = ["mul", "hessian", ["sqrt", "perturb"]]
    >>> evaluate(tree, env, np.array([0, 0, 1])).tolist(), text(tree)
    ([4.0, 2.0, 9.0], 'hessian * sqrt(perturb)')
"""
from __future__ import annotations

import json
import random
from typing import Any, Callable, Sequence

import numpy as np

EPS = 1e-12
Tree = Any   # str | list


def _layer_reduce(x: np.ndarray, layer: np.ndarray, how: str) -> np.ndarray:
    n = int(layer.max()) + 1 if len(layer) else 0
    if how == "mean":
        s = np.bincount(layer, weights=x, minlength=n) / np.maximum(np.bincount(layer, minlength=n), 1)
    else:
        s = np.full(n, -np.inf)
        np.maximum.at(s, layer, x)
    return s[layer]


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r / max(len(x) - 1, 1)


UNARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "log": lambda x, l: np.log(np.abs(x) + EPS),
    "sqrt": lambda x, l: np.sqrt(np.abs(x)),
    "square": lambda x, l: x * x,
    "inv": lambda x, l: 1.0 / (np.abs(x) + EPS),
    "abs": lambda x, l: np.abs(x),
    "neg": lambda x, l: -x,
    "norm": lambda x, l: x / (np.mean(np.abs(x)) + EPS),      # reduction over every entry
    "rank": lambda x, l: _rank(x),                             # reduction over every entry
    "lmean": lambda x, l: _layer_reduce(x, l, "mean"),         # aggregation over a layer's choices
    "lmax": lambda x, l: _layer_reduce(x, l, "max"),
}
BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (np.abs(b) + EPS),
    "max": np.maximum,
    "min": np.minimum,
}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
COMMUTATIVE = {"add", "mul", "max", "min"}


class InvalidExpression(ValueError):
    """A tree that is not well formed or names an unknown primitive or operation."""


def check(tree: Tree, leaves: Sequence[str]) -> None:
    """Raise :class:`InvalidExpression` unless ``tree`` is well formed over ``leaves``."""
    if isinstance(tree, str):
        if tree not in leaves:
            raise InvalidExpression(f"unknown primitive {tree!r}: choose from {', '.join(sorted(leaves))}")
        return
    if not isinstance(tree, (list, tuple)) or not tree or not isinstance(tree[0], str):
        raise InvalidExpression(f"not an expression: {tree!r}")
    op, args = tree[0], tree[1:]
    arity = 1 if op in UNARY else 2 if op in BINARY else None
    if arity is None:
        raise InvalidExpression(f"unknown operation {op!r}")
    if len(args) != arity:
        raise InvalidExpression(f"{op} takes {arity} argument(s), got {len(args)}")
    for a in args:
        check(a, leaves)


def evaluate(tree: Tree, env: dict[str, np.ndarray], layer: np.ndarray) -> np.ndarray:
    """The tree's value on every entry (float64; may hold inf or NaN: see :func:`finite`)."""
    if isinstance(tree, str):
        return np.asarray(env[tree], dtype=float)
    op = tree[0]
    with np.errstate(all="ignore"):
        if op in UNARY:
            return UNARY[op](evaluate(tree[1], env, layer), layer)
        return BINARY[op](evaluate(tree[1], env, layer), evaluate(tree[2], env, layer))


def leaves(tree: Tree) -> list[str]:
    """The primitives a tree reads, sorted, without repeats."""
    if isinstance(tree, str):
        return [tree]
    return sorted({x for a in tree[1:] for x in leaves(a)})


def size(tree: Tree) -> int:
    return 1 if isinstance(tree, str) else 1 + sum(size(a) for a in tree[1:])


def depth(tree: Tree) -> int:
    return 1 if isinstance(tree, str) else 1 + max(depth(a) for a in tree[1:])


def canonical(tree: Tree) -> str:
    """A key equal for trees equal up to the order of a commutative operation's arguments."""
    def norm(t: Tree) -> Any:
        if isinstance(t, str):
            return t
        args = [norm(a) for a in t[1:]]
        if t[0] in COMMUTATIVE:
            args.sort(key=lambda a: json.dumps(a))
        return [t[0], *args]
    return json.dumps(norm(tree), separators=(",", ":"))


def text(tree: Tree) -> str:
    """Readable infix form."""
    if isinstance(tree, str):
        return tree
    if tree[0] in UNARY:
        return f"{tree[0]}({text(tree[1])})"
    a, b = (text(x) if isinstance(x, str) or x[0] not in _INFIX else f"({text(x)})" for x in tree[1:])
    return f"{a} {_INFIX[tree[0]]} {b}" if tree[0] in _INFIX else f"{tree[0]}({a}, {b})"


def grow(rng: random.Random, prims: Sequence[str], max_depth: int = 3) -> Tree:
    """A random tree of at most ``max_depth`` levels (leaves more likely as it deepens)."""
    if max_depth <= 1 or rng.random() < 0.3:
        return rng.choice(list(prims))
    if rng.random() < 0.45:
        return [rng.choice(sorted(UNARY)), grow(rng, prims, max_depth - 1)]
    return [rng.choice(sorted(BINARY)), grow(rng, prims, max_depth - 1), grow(rng, prims, max_depth - 1)]


def _paths(tree: Tree, at: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [at]
    if not isinstance(tree, str):
        for i, a in enumerate(tree[1:], start=1):
            out += _paths(a, at + (i,))
    return out


def _get(tree: Tree, path: tuple[int, ...]) -> Tree:
    for i in path:
        tree = tree[i]
    return tree


def _put(tree: Tree, path: tuple[int, ...], sub: Tree) -> Tree:
    if not path:
        return sub
    out = list(tree)
    out[path[0]] = _put(tree[path[0]], path[1:], sub)
    return out


def mutate(tree: Tree, rng: random.Random, prims: Sequence[str], max_depth: int = 5) -> Tree:
    """One change: a subtree regrown, an operation swapped for one of the same arity, or the tree
    wrapped in a unary operation or combined with a fresh leaf."""
    kind = rng.random()
    if kind < 0.15 and depth(tree) < max_depth:
        return [rng.choice(sorted(UNARY)), tree]
    if kind < 0.3 and depth(tree) < max_depth:
        return [rng.choice(sorted(BINARY)), tree, rng.choice(list(prims))]
    path = rng.choice(_paths(tree))
    node = _get(tree, path)
    if kind < 0.6 and not isinstance(node, str):
        pool = sorted(UNARY) if node[0] in UNARY else sorted(BINARY)
        return _put(tree, path, [rng.choice(pool), *node[1:]])
    room = max(max_depth - len(path), 1)
    return _put(tree, path, grow(rng, prims, min(room, 3)))


def crossover(a: Tree, b: Tree, rng: random.Random, max_depth: int = 5) -> Tree:
    """``a`` with one of its subtrees replaced by one of ``b``'s (``a`` again when too deep)."""
    pa, pb = rng.choice(_paths(a)), rng.choice(_paths(b))
    child = _put(a, pa, _get(b, pb))
    return child if depth(child) <= max_depth else a
