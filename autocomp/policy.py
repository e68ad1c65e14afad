"""Compression policies: one :class:`Choice` per quantizable layer, and ``apply`` to build the
compressed model.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice, Policy, apply
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> policy = Policy.from_choices({"0": Choice(w_bits=4, a_bits=32, prune=0.5)})   # weight-only
    >>> small = apply(model, policy)          # a compressed copy; ``model`` is untouched
    >>> int((small[0].weight == 0).sum())
    8
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import torch

from autocomp.arch import Architecture
from autocomp.modules import is_embedding, set_weight, weight_of
from autocomp.quant import FLOAT_BITS, TOKEN_RANGE, compress_weight, fake_quant_act, is_float
from autocomp.values import check_version

POLICY_VERSION = 1
CHOICE_VERSION = 1


@functools.total_ordering
@dataclass(frozen=True)
class Choice:
    """How one layer is compressed.

    Attributes:
        w_bits: weight bits: 1 (binary), 1.58 (ternary), 2..16, or 32 (float).
        a_bits: bits of the layer's input activation; 32 leaves it in float.
        prune: fraction of the layer's weights removed by magnitude (0 keeps all).
        group: weights quantized in groups of this many consecutive input elements per output
            row, one scale each; None is per output channel.
        zero_point: asymmetric weights (a zero point per group or channel) instead of symmetric.
        act: how a quantized input gets its range: ``tensor`` (one calibrated static range) or
            ``token`` (dynamic: each token's own min/max at run time, for transformer inputs).
        quantizer: the quantizer that sets this layer's weights (a registered name such as
            ``gptq``, or a composition ``gptq+bias_correction``); None is the study's ``--quantizer``.

    Key grammar: ``w<bits>a<bits>[t][p<ratio>][g<group>][z][@<quantizer>]``; ``t`` is per-token.

    Example:
        >>> Choice(4, 32, group=128, zero_point=True).key
        'w4a32g128z'
        >>> Choice.from_key("w4a8p0.5") == Choice(4, 8, 0.5)
        True
        >>> Choice(4, 8, act="token", quantizer="gptq").key
        'w4a8t@gptq'
    """

    w_bits: float = 8
    a_bits: int = 8
    prune: float = 0.0
    group: int | None = None
    zero_point: bool = False
    version: int = field(default=CHOICE_VERSION, compare=False)
    act: str = "tensor"
    quantizer: str | None = None

    def __post_init__(self) -> None:
        if self.act not in ACT_MODES:
            raise ValueError(f"choice act must be one of {', '.join(ACT_MODES)}, not {self.act!r}")
        if self.quantizer is not None and not QUANTIZER_NAME.fullmatch(str(self.quantizer)):
            raise ValueError(f"choice quantizer must be a quantizer name such as 'gptq' (or 'gptq+bias_correction'), "
                             f"not {self.quantizer!r}")

    @property
    def per_token(self) -> bool:
        """Whether the input is quantized per token, dynamically (it is quantized at all: a_bits < 32)."""
        return self.act == "token" and not is_float(self.a_bits)

    def _order(self) -> tuple:
        return (self.w_bits, self.a_bits, self.prune, self.group or 0, self.zero_point, self.act == "token",
                self.quantizer or "")

    def __lt__(self, other: "Choice") -> bool:
        if not isinstance(other, Choice):
            return NotImplemented
        return self._order() < other._order()

    @property
    def key(self) -> str:
        """Stable short name, e.g. ``w4a8p0.5`` or ``w4a32g128z``; used as a column key in the
        study database (group and zero point are appended only when set, so per-channel
        symmetric keys are those of every earlier study)."""
        p = f"p{self.prune:g}" if self.prune else ""
        g = f"g{self.group}" if self.group is not None else ""
        t = "t" if self.act == "token" else ""
        q = f"@{self.quantizer}" if self.quantizer is not None else ""
        return f"w{self.w_bits:g}a{self.a_bits:g}{t}{p}{g}{'z' if self.zero_point else ''}{q}"

    @classmethod
    def from_key(cls, key: str) -> "Choice":
        """Inverse of :attr:`key`."""
        m = _KEY_RE.fullmatch(key)
        if not m:
            raise ValueError(f"not a choice key: {key!r}")
        w = float(m.group(1))
        return cls(w_bits=int(w) if w.is_integer() else w, a_bits=int(float(m.group(2))),
                   prune=float(m.group(4) or 0.0), group=int(m.group(5)) if m.group(5) else None,
                   zero_point=bool(m.group(6)), act="token" if m.group(3) else "tensor",
                   quantizer=m.group(7))

    def to_dict(self) -> dict[str, Any]:
        # group / zero_point only when set: the dict is hashed into policy ids, which must not
        # change for per-channel symmetric policies.
        d: dict[str, Any] = {"w_bits": self.w_bits, "a_bits": self.a_bits, "prune": self.prune}
        if self.group is not None:
            d["group"] = self.group
        if self.zero_point:
            d["zero_point"] = True
        if self.act != "tensor":
            d["act"] = self.act
        if self.quantizer is not None:
            d["quantizer"] = self.quantizer
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Choice":
        check_version("Choice", d, CHOICE_VERSION)
        w = float(d["w_bits"])
        g = d.get("group")
        return cls(w_bits=int(w) if w.is_integer() else w, a_bits=int(d.get("a_bits", 8)),
                   prune=float(d.get("prune", 0.0)), group=int(g) if g is not None else None,
                   zero_point=bool(d.get("zero_point", False)), act=str(d.get("act", "tensor")),
                   quantizer=None if d.get("quantizer") is None else str(d["quantizer"]))

    @property
    def effective_w_bits(self) -> float:
        """Stored code bits per original weight once pruned weights are dropped (scales and
        zero points not included: see :mod:`autocomp.costs`)."""
        return float(self.w_bits) * (1.0 - self.prune)


#: how a quantized input gets its range (:attr:`Choice.act`)
ACT_MODES = ("tensor", "token")
#: a quantizer a choice may name: a registered name, or a composition of them (``gptq+bias_correction``)
QUANTIZER_NAME = re.compile(r"[A-Za-z_]\w*(?:\+[A-Za-z_]\w*)*")
_KEY_RE = re.compile(r"w([\d.]+)a([\d.]+)(t)?(?:p([\d.]+))?(?:g(\d+))?(z)?(?:@(" + QUANTIZER_NAME.pattern + r"))?")

FLOAT_CHOICE = Choice(w_bits=FLOAT_BITS, a_bits=FLOAT_BITS, prune=0.0)


@dataclass(frozen=True)
class Policy:
    """An ordered mapping layer name -> :class:`Choice`, with a stable content hash as its id.

    ``arch`` is set on a quantization-aware NAS candidate (:mod:`autocomp.arch`): the network the
    layers belong to. Without one, the id and ``to_dict`` are those of every earlier policy; with
    one, its canonical key enters the id and ``to_dict`` carries it (versioned).

    Example:
        >>> from autocomp.arch import Architecture
        >>> p = Policy.from_choices({"fc": Choice(4, 8)})
        >>> q = Policy.from_choices({"fc": Choice(4, 8)}, arch=Architecture.make("digits-cnn", {}, [{"op": "conv"}]))
        >>> p.id != q.id, "arch" in p.to_dict(), Policy.from_dict(q.to_dict()) == q
        (True, False, True)
    """

    layers: tuple[tuple[str, Choice], ...]
    version: int = POLICY_VERSION
    arch: Architecture | None = None

    @classmethod
    def from_choices(cls, choices: Mapping[str, Choice] | Iterable[tuple[str, Choice]],
                     arch: Architecture | None = None) -> "Policy":
        items = choices.items() if isinstance(choices, Mapping) else choices
        return cls(layers=tuple((str(n), c) for n, c in items), arch=arch)

    @classmethod
    def uniform(cls, names: Iterable[str], choice: Choice) -> "Policy":
        return cls.from_choices([(n, choice) for n in names])

    def as_dict(self) -> dict[str, Choice]:
        return dict(self.layers)

    def __getitem__(self, name: str) -> Choice:
        for n, c in self.layers:
            if n == name:
                return c
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def id(self) -> str:
        """12 hex digits of the SHA-256 of the canonical JSON; equal policies share an id."""
        layers = [[n, c.to_dict()] for n, c in self.layers]
        # No architecture: exactly the blob of every earlier policy (stored ids must not move).
        blob = json.dumps(layers if self.arch is None else {"arch": self.arch.key, "layers": layers}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        d = {
            "version": self.version,
            "id": self.id,
            "layers": [{"name": n, **c.to_dict()} for n, c in self.layers],
        }
        if self.arch is not None:
            d["arch"] = self.arch.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Policy":
        check_version("Policy", d, POLICY_VERSION)
        layers = d.get("layers")
        if not isinstance(layers, list):
            raise ValueError("policy JSON has no 'layers' list")
        arch = Architecture.from_dict(d["arch"]) if d.get("arch") is not None else None
        return cls(layers=tuple((str(e["name"]), Choice.from_dict(e)) for e in layers), arch=arch)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """Compact one-line description, e.g. ``w8:2 w4:5 w2:1``."""
        from collections import Counter

        cnt = Counter(c.key for _, c in self.layers)
        text = " ".join(f"{k}:{v}" for k, v in sorted(cnt.items()))
        return text if self.arch is None else f"{self.arch.family} x{self.arch.depth} {text}"


class ActFakeQuant:
    """Forward pre-hook quantizing a layer's input per tensor, or per token for the range
    :data:`autocomp.quant.TOKEN_RANGE` (picklable, so models deep-copy)."""

    def __init__(self, lo: float, hi: float, bits: int):
        self.lo, self.hi, self.bits = float(lo), float(hi), int(bits)

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple:
        x = args[0]
        return (fake_quant_act(x, self.lo, self.hi, self.bits),) + tuple(args[1:])


def policy_modules(model: torch.nn.Module, policy: Policy) -> Iterator[tuple[str, Choice, torch.nn.Module]]:
    """``(name, choice, module)`` for every layer of ``policy``; KeyError for one the model lacks."""
    modules = dict(model.named_modules())
    for name, choice in policy.layers:
        if name not in modules:
            raise KeyError(f"policy names layer {name!r} that the model does not have")
        yield name, choice, modules[name]


def input_range(act_ranges: Mapping[str, Mapping[int, tuple[float, float]]] | None, name: str,
                choice: Choice) -> tuple[float, float] | None:
    """The calibrated input range for ``choice``'s activation bits (None when the input stays float;
    :data:`autocomp.quant.TOKEN_RANGE` when it is quantized per token, with no calibrated range)."""
    if is_float(choice.a_bits):
        return None
    if choice.per_token:
        return TOKEN_RANGE
    if act_ranges is None or name not in act_ranges:
        raise ValueError(f"activation ranges for layer {name!r} are needed to quantize its input")
    ranges = act_ranges[name]
    return ranges.get(int(choice.a_bits), ranges.get(max(ranges)))


def compress_layer(module: torch.nn.Module, choice: Choice,
                   rng: tuple[float, float] | None) -> torch.utils.hooks.RemovableHandle | None:
    """Simulate ``choice`` on one layer in place: pruned / fake-quantized weight, fake-quantized input.

    Returns:
        The input fake-quant hook's handle (None when the input stays float), for a caller that
        measures one layer at a time and undoes it.
    """
    if not is_float(choice.w_bits) or choice.prune > 0:
        w = weight_of(module).detach()
        set_weight(module, compress_weight(w, choice.w_bits, choice.prune, choice.group, choice.zero_point))
    if rng is None:
        return None
    return module.register_forward_pre_hook(ActFakeQuant(rng[0], rng[1], int(choice.a_bits)))


def apply(
    model: torch.nn.Module,
    policy: Policy,
    act_ranges: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
) -> torch.nn.Module:
    """Return a compressed copy of ``model`` following ``policy`` (fake quantization).

    Args:
        model: the float model; never modified.
        policy: a choice per layer name (names as in ``model.named_modules()``).
        act_ranges: per layer, per activation bit-width, the calibrated (lo, hi) input range
            (see :func:`autocomp.calibrate.activation_ranges`). Required when any choice
            quantizes activations.

    Returns:
        A deep copy with weights pruned and quantized, and input fake-quant hooks installed.
    """
    out = copy.deepcopy(model)
    for name, choice, mod in policy_modules(out, policy):
        # An embedding's input is token ids: never quantized, whatever the choice says.
        compress_layer(mod, choice, None if is_embedding(mod) else input_range(act_ranges, name, choice))
    return out
