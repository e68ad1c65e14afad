"""Composed quantizers: ``"awq+bias_correction"`` is AWQ's weights, then bias correction.

A spec is ``base[+post...]``: one quantizer that sets the weights (``rtn``, ``gptq``, ``awq``,
``adaround``), then post-passes (:class:`PostPass`, e.g. ``bias_correction``) that refine its
:class:`LayerResult` and may add a model-level :meth:`Quantizer.finalize` pass. Each part may
carry its options in the spec, ``awq(clip=False)+bias_correction``, the form
:attr:`Quantizer.spec` prints, so a spec read back from a study builds the same quantizer.
Keyword options given to :func:`build` go to every part that has a field of that name.

A post-pass alone (``bias_correction``) runs after ``rtn``.

Example:
    >>> from autocomp.quantizers import get_quantizer
    >>> q = get_quantizer("rtn+bias_correction(bn_reestimate=False)")
    >>> q.spec, sorted(q.needs)
    ('rtn+bias_correction(bn_reestimate=False)', ['mean'])
    >>> get_quantizer("rtn+")
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: quantizer spec 'rtn+': empty part after '+'
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Iterable

import torch

from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.quantizers._base import LayerResult, LayerStats, Quantizer


class PostPass(Quantizer):
    """A pass after the quantizer that sets the weights: subclasses implement :meth:`refine`."""

    def refine(self, name: str, module: torch.nn.Module, choice: Choice, stats: LayerStats | None,
               result: LayerResult) -> LayerResult:  # pragma: no cover - abstract
        """``result`` (the base quantizer's, for the float ``module``), refined."""
        raise NotImplementedError

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:
        from autocomp.quantizers.rtn import RTNQuantizer

        return self.refine(name, module, choice, stats, RTNQuantizer().quantize_layer(name, module, choice, stats))


class ComposedQuantizer(Quantizer):
    """``parts[0]`` sets each layer's weights, each later part (a :class:`PostPass`) refines them.

    Args:
        parts: built quantizers, the base first.
    """

    def __init__(self, parts: Iterable[Quantizer]):  # noqa: D107 - documented on the class
        self.parts = tuple(parts)
        self.name = "+".join(p.name for p in self.parts)  # type: ignore[misc]
        self.options = tuple(p.options for p in self.parts)
        self.needs = frozenset().union(*(p.needs for p in self.parts))  # type: ignore[misc]

    @property
    def spec(self) -> str:
        return "+".join(p.spec for p in self.parts)

    @property
    def sequential(self) -> bool:
        return self.parts[0].sequential

    def quantize_layer(self, name: str, module: torch.nn.Module, choice: Choice,
                       stats: LayerStats | None) -> LayerResult:
        res = self.parts[0].quantize_layer(name, module, choice, stats)
        for p in self.parts[1:]:
            res = p.refine(name, module, choice, stats, res)  # type: ignore[attr-defined]
        return res

    def finalize(self, model: torch.nn.Module, policy: Policy, batches: Iterable[Any]) -> None:
        batches = list(batches)
        for p in self.parts:
            p.finalize(model, policy, batches)


def _literal(node: ast.expr) -> Any:
    """A Python literal; also ``true`` / ``false``, as a shell user writes them."""
    if isinstance(node, ast.Name) and node.id in ("true", "false"):
        return node.id == "true"
    return ast.literal_eval(node)


def parse_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """``"awq(clip=False)+bias_correction"`` -> ``[("awq", {"clip": False}), ("bias_correction", {})]``.

    Option values are Python literals. Raises :class:`AutocompError` (one line) on a malformed spec.
    """
    out = []
    for part in spec.split("+"):
        part = part.strip()
        if not part:
            raise AutocompError(f"quantizer spec {spec!r}: empty part {'after' if out else 'before'} '+'")
        try:
            node = ast.parse(part, mode="eval").body
            if isinstance(node, ast.Name):
                out.append((node.id, {}))
                continue
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args
                    and all(k.arg for k in node.keywords)):
                raise ValueError("expected name or name(option=value, ...)")
            out.append((node.func.id, {k.arg: _literal(k.value) for k in node.keywords}))
        except (SyntaxError, ValueError) as e:
            raise AutocompError(f"quantizer spec {spec!r}: cannot read {part!r} ({e})") from None
    return out


def build(spec: str, **options: Any) -> Quantizer:
    """The quantizer a spec names (one part: that quantizer; several: a :class:`ComposedQuantizer`).

    Args:
        spec: ``base[+post...]``, each part ``name`` or ``name(option=value, ...)``.
        **options: each goes to every part whose options have that field (an error if none has).
    """
    from autocomp.quantizers import quantizer_class

    parsed = parse_spec(spec)
    names = [n for n, _ in parsed]
    classes = [quantizer_class(n) for n in names]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise AutocompError(f"quantizer spec {spec!r}: {dup!r} appears twice")
    bases = [n for n, c in zip(names, classes) if not issubclass(c, PostPass)]
    if len(parsed) > 1 and (len(bases) != 1 or names[0] != bases[0]):
        raise AutocompError(f"quantizer spec {spec!r}: one quantizer that sets the weights must come first "
                            f"({', '.join(bases) or 'none'} given), then post-passes")
    fields = [{f.name for f in dataclasses.fields(c.Options)} for c in classes]
    unused = [k for k in options if not any(k in f for f in fields)]
    if unused:
        raise AutocompError(f"quantizer {spec!r} has no option {unused[0]!r}")
    parts = []
    for (name, own), cls, have in zip(parsed, classes, fields):
        parts.append(cls(**{**{k: v for k, v in options.items() if k in have}, **own}))
    return parts[0] if len(parts) == 1 else ComposedQuantizer(parts)
