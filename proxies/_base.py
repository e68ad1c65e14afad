"""The proxy contract: ``Proxy.score(workload, layers, space) -> Sensitivity``, and its split.

A sensitivity is per layer per choice (see :mod:`autocomp.sensitivity`). Proxies are pure: no
database, no Ray inside. A proxy plans its own split across processes:

* :meth:`Proxy.parts` lists the independent pieces of work (:class:`Part`: a kind plus plain
  data such as a batch index, probe ids or layer names), in a fixed order that never depends on
  how many workers run them;
* :meth:`Proxy.score_part` computes one piece and returns plain, picklable data;
* :meth:`Proxy.combine` turns the results, in part order, into the :class:`Sensitivity`;
* :meth:`Proxy.done` lets adaptive work stop early: a runner checks it on the results so far
  (in part order) and hands :meth:`combine` the shortest prefix for which it holds.

``score`` in process runs exactly that loop, so one process, one Ray worker and N Ray workers
give the same result (``autocomp.workers.proxy_tasks.score_on_ray`` is the Ray runner). A proxy
that does not split implements ``score`` only: it is then its own single part.

Example:
    >>> from dataclasses import dataclass
    >>> from autocomp.proxies import Part, Proxy, Sensitivity
    >>> class Ones(Proxy):
    ...     name = "ones"
    ...     @dataclass(frozen=True)
    ...     class Options:
    ...         value: float = 1.0
    ...     def parts(self, workload, layers, space):          # one part per layer
    ...         return [Part("layer", layers=(l.name,)) for l in layers]
    ...     def score_part(self, workload, layers, space, part):
    ...         return {part.layers[0]: self.config.value}
    ...     def combine(self, workload, layers, space, results):
    ...         scores = {k: v for r in results for k, v in r.items()}
    ...         return Sensitivity(self.name, {n: {"w8a8": v} for n, v in scores.items()}, scores)
    >>> from types import SimpleNamespace as L
    >>> Ones(value=2).score(None, [L(name="a"), L(name="b")], None).omega
    {'a': {'w8a8': 2.0}, 'b': {'w8a8': 2.0}}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

from autocomp.proxies._options import NoOptions, build_options
from autocomp.registry import Registry
from autocomp.sensitivity import Sensitivity
from autocomp.values import check_version

PART_VERSION = 1


@dataclass(frozen=True)
class Part:
    """One independent piece of a proxy's work: a ``kind`` and the plain data it needs.

    Example:
        >>> Part.from_dict(Part("batch", batch=2).to_dict())
        Part(kind='batch', batch=2, probes=(), layers=(), version=1)
    """

    kind: str = "whole"
    batch: int | None = None
    probes: tuple[int, ...] = ()
    layers: tuple[str, ...] = ()
    version: int = PART_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "kind": self.kind, "batch": self.batch, "probes": list(self.probes),
                "layers": list(self.layers)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Part":
        check_version("Part", d, PART_VERSION)
        return cls(kind=str(d["kind"]), batch=d.get("batch"), probes=tuple(int(i) for i in d.get("probes", ())),
                   layers=tuple(str(n) for n in d.get("layers", ())))


class Proxy:
    """Base class. Subclasses set ``name`` and ``Options`` (a frozen dataclass, default: none)
    and implement either :meth:`score` (one part) or :meth:`parts` / :meth:`score_part` /
    :meth:`combine` (and :meth:`done` when the work is adaptive)."""

    name: str = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, **options: Any):
        # Checked here, not in __init_subclass__: cloudpickle rebuilds a class by value from an
        # empty skeleton, then adds its methods.
        cls = type(self)
        if cls.score is Proxy.score and cls.score_part is Proxy.score_part:
            raise TypeError(f"{cls.__name__}: implement score, or parts / score_part / combine")
        self.config = build_options(self.Options, options, self.name or type(self).__name__)

    def config_dict(self) -> dict[str, Any]:
        """The options as plain JSON-able values (``get_proxy(name, **config_dict())`` rebuilds it)."""
        return dataclasses.asdict(self.config)

    def score(self, workload, layers: Sequence, space) -> Sensitivity:
        """Every part in order, in this process, then :meth:`combine` (what N Ray workers do)."""
        results: list[Any] = []
        for part in self.parts(workload, layers, space):
            results.append(self.score_part(workload, layers, space, part))
            if self.done(workload, layers, space, results):
                break
        return self.combine(workload, layers, space, results)

    def parts(self, workload, layers: Sequence, space) -> list[Part]:
        """The pieces of work, in a fixed order (default: the whole of :meth:`score`)."""
        return [Part("whole")]

    def score_part(self, workload, layers: Sequence, space, part: Part) -> Any:
        """One piece of work (plain data). The default runs :meth:`score`."""
        return self.score(workload, layers, space).to_dict()

    def done(self, workload, layers: Sequence, space, results: Sequence[Any]) -> bool:
        """Whether the results so far (in part order) suffice; later parts are then not needed."""
        return False

    def combine(self, workload, layers: Sequence, space, results: Sequence[Any]) -> Sensitivity:
        """The sensitivity from the parts' results, in part order. The default: the one result."""
        return Sensitivity.from_dict(results[0])


def layer_groups(layers: Sequence, groups: int) -> list[Part]:
    """``groups`` parts of interleaved layers (``names[i::g]``), for proxies scored layer by layer.

    Example:
        >>> from types import SimpleNamespace as L
        >>> [p.layers for p in layer_groups([L(name=n) for n in "abc"], 2)]
        [('a', 'c'), ('b',)]
    """
    names = [l.name for l in layers]
    g = max(1, min(groups, len(names)))
    return [Part("layers", layers=tuple(names[i::g])) for i in range(g)]


# Built-ins are imported when first asked for: listing proxies costs no torch import.
_REGISTRY: Registry[Callable[..., Proxy]] = Registry("proxy", {
    "fisher": "autocomp.proxies.zero_cost:FisherProxy",
    "quant_mse": "autocomp.proxies.zero_cost:QuantMSEProxy",
    "loss_delta": "autocomp.proxies.measured:LossDeltaProxy",
    "hessian_trace": "autocomp.proxies.hessian:HessianTraceProxy",
    "hessian_eig": "autocomp.proxies.hessian:HessianEigProxy",
    "lrp": "autocomp.proxies.lrp:LRPProxy",
    "snip": "autocomp.proxies.saliency:SnipProxy",
    "synflow": "autocomp.proxies.saliency:SynflowProxy",
    "grad_norm": "autocomp.proxies.saliency:GradNormProxy",
})


# Proxies named ``FAMILY:REF``, built from the reference (``evolved:NAME``: a saved expression).
_FAMILIES: Registry[Callable[..., Proxy]] = Registry("proxy family", {
    "evolved": "autocomp.proxies.evolved:EvolvedProxy",
})


def register(name: str, factory: str | Callable[..., Proxy]) -> None:
    """Register a proxy under ``name`` (a class, or ``"module:Class"`` imported lazily)."""
    _REGISTRY.register(name, factory)


def list_proxies() -> list[str]:
    return _REGISTRY.names()


def get_proxy(name: str, **options: Any) -> Proxy:
    """Instantiate a registered proxy with its options checked.

    Raises:
        AutocompError: an unknown name, an unknown option or a bad value (one line).

    Example:
        >>> get_proxy("hessian_trace", max_probes=8).config_dict()["max_probes"]
        8
        >>> get_proxy("hessian_trace", max_probes=0)
        Traceback (most recent call last):
        ...
        autocomp.errors.AutocompError: proxy 'hessian_trace': max_probes must be at least 1, got 0
    """
    family, sep, ref = name.partition(":")
    if sep and family in _FAMILIES and name not in _REGISTRY:
        return _FAMILIES.get(family)(ref, **options)
    return _REGISTRY.get(name)(**options)
