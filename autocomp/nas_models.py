"""Architecture builders for quantization-aware NAS: :class:`~autocomp.arch.Architecture` -> model.

Two families, one per built-in image workload (8x8 digits, 10 classes):

- ``digits-cnn`` (``--model digits``): a 3x3 ``stem`` convolution, then ``depth`` blocks, each a
  plain convolution (``op: conv``) or a depthwise-separable one (``op: dwsep``: depthwise
  ``kernel`` x ``kernel`` then pointwise), with ``width`` x the slot's base channels (16, 32, 32,
  64, 64); a 2x2 max-pool after the second and the fourth block; average pool and a linear head.
- ``digits-vit`` (``--model digits-vit``): 2x2 patches embedded to ``dim``, ``depth`` pre-norm
  blocks with ``heads`` attention heads and an MLP of ``mlp`` x ``dim``, a linear head.

A search trial turns Tune's sample into an architecture (:func:`arch_from_config`), builds it
(:func:`build`, which rejects what the family cannot build, in one line), and makes the policy of
its layers from the per-block bits (:func:`candidate_policy`); :func:`candidate_costs` prices
it like the study's own policies (the same cost metrics, over the candidate's profiled layers).

Example:
    >>> a = Architecture.make("digits-cnn", {"stem": 8}, [{"op": "dwsep", "kernel": 3, "width": 1}])
    >>> [n for n, _ in quantizable_layers(build(a))]
    ['stem', 'blocks.0.dw', 'blocks.0.pw', 'head']
    >>> check_nas("tiny-lm")
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: --trials nas needs an architecture builder, and model 'tiny-lm' has none: NAS is available for digits, digits-vit
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from autocomp.arch import Architecture
from autocomp.budget import CostModel
from autocomp.errors import AutocompError
from autocomp.layout import file_layout
from autocomp.modules import quantizable_layers  # noqa: F401 - the module example lists layers with it
from autocomp.policy import Policy
from autocomp.profile import LayerInfo, model_param_count, profile_model

#: built-in workload -> (architecture family, its NAS search space)
NAS_WORKLOADS = {"digits": ("digits-cnn", "nas_digits"), "digits-vit": ("digits-vit", "nas_vit")}
CNN_BASE = (16, 32, 32, 64, 64)
CNN_POOL_AFTER = (1, 3)
VIT_MAX_DEPTH = 6
#: the cost metrics a candidate has the inputs for (no latency table measures a new network)
NAS_COSTS = ("size", "bitops", "avg_bits")
_BLOCK = re.compile(r"blocks\.(\d+)\.")


def check_nas(spec: str) -> tuple[str, str]:
    """``(family, space name)`` of the workload ``spec``, or one error line when it has no builder.

    Cheap (nothing is loaded): called before a study is written.
    """
    key = (spec or "").strip()
    if key not in NAS_WORKLOADS:
        raise AutocompError(f"--trials nas needs an architecture builder, and model {key!r} has none: NAS is "
                            f"available for {', '.join(NAS_WORKLOADS)}")
    return NAS_WORKLOADS[key]


def sample_input(family: str, batch: int = 2) -> torch.Tensor:
    """An input of the family's shape (8x8 grey images) for profiling a candidate."""
    return torch.zeros(batch, 1, 8, 8)


def _int(arch: Architecture, d: Mapping[str, Any], key: str, default: Any, lo: int, hi: int, where: str) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise AutocompError(f"architecture {arch.key}: {where} {key} must be an integer from {lo} to {hi}, not {v!r}")
    return v


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, op: str, k: int, pool: bool):
        super().__init__()
        self.op = op
        if op == "conv":
            self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        else:
            self.dw = nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False)
            self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn, self.act = nn.BatchNorm2d(cout), nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) if self.op == "conv" else self.pw(self.dw(x))
        return self.pool(self.act(self.bn(y)))


class NasCNN(nn.Module):
    """A ``digits-cnn`` candidate (see the module docstring)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        stem = _int(arch, dict(arch.params), "stem", 16, 1, 256, "model")
        if not 1 <= arch.depth <= len(CNN_BASE):
            raise AutocompError(f"architecture {arch.key}: digits-cnn takes 1 to {len(CNN_BASE)} blocks, not {arch.depth}")
        self.stem = nn.Conv2d(1, stem, 3, padding=1, bias=False)
        self.stem_bn, self.stem_act = nn.BatchNorm2d(stem), nn.ReLU()
        blocks, cin = [], stem
        for i, b in enumerate(arch.blocks):
            b = dict(b)
            op = b.get("op", "conv")
            if op not in ("conv", "dwsep"):
                raise AutocompError(f"architecture {arch.key}: block {i} op must be conv or dwsep, not {op!r}")
            k = _int(arch, b, "kernel", 3, 1, 7, f"block {i}")
            if k % 2 == 0:
                raise AutocompError(f"architecture {arch.key}: block {i} kernel must be odd (same padding), not {k}")
            width = b.get("width", 1)
            if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
                raise AutocompError(f"architecture {arch.key}: block {i} width must be a multiplier in (0, 4], "
                                    f"not {width!r}")
            cout = max(4, int(round(CNN_BASE[i] * width)))
            blocks.append(_ConvBlock(cin, cout, op, k, pool=i in CNN_POOL_AFTER))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem_act(self.stem_bn(self.stem(x))))
        return self.head(self.pool(h).flatten(1))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _VitBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), _Attention(dim, heads)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class NasViT(nn.Module):
    """A ``digits-vit`` candidate (see the module docstring)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        dim = _int(arch, dict(arch.params), "dim", 32, 4, 512, "model")
        if not 1 <= arch.depth <= VIT_MAX_DEPTH:
            raise AutocompError(f"architecture {arch.key}: digits-vit takes 1 to {VIT_MAX_DEPTH} blocks, not {arch.depth}")
        blocks = []
        for i, b in enumerate(arch.blocks):
            b = dict(b)
            heads = _int(arch, b, "heads", 4, 1, dim, f"block {i}")
            if dim % heads:
                raise AutocompError(f"architecture {arch.key}: block {i} has {heads} heads, which do not divide dim {dim}")
            mlp = _int(arch, b, "mlp", 2, 1, 8, f"block {i}")
            blocks.append(_VitBlock(dim, heads, mlp * dim))
        self.embed = nn.Linear(4, dim)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(x.shape[0], -1, 4)   # [B, 16, 4]
        h = self.norm(self.blocks(self.embed(patches) + self.pos))
        return self.head(h.mean(dim=1))


FAMILIES = {"digits-cnn": NasCNN, "digits-vit": NasViT}


def build(arch: Architecture, seed: int = 0) -> nn.Module:
    """The untrained candidate ``arch`` (weights initialised from ``seed``), in train mode.

    Raises:
        AutocompError: an unknown family, or settings the family cannot build (one line).
    """
    if arch.family not in FAMILIES:
        raise AutocompError(f"architecture family {arch.family!r} has no builder: use one of {', '.join(FAMILIES)}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FAMILIES[arch.family](arch).train()


def arch_from_config(config: Mapping[str, Any], nas: Mapping[str, Any]) -> Architecture:
    """The architecture of one sample: ``depth``, the whole-model settings by name, and block
    ``i``'s settings as ``b<i>.<setting>`` (samples for blocks past ``depth`` are unused)."""
    depth = int(config["depth"])
    params = {k: config[k] for k in nas["params"]}
    blocks = [{k: config[f"b{i}.{k}"] for k in nas["block"]} for i in range(depth)]
    return Architecture.make(nas["family"], params, blocks)


def block_of(layer: str) -> int | None:
    """The block a layer belongs to (``blocks.<i>.``), None for the stem, embedding and head."""
    m = _BLOCK.match(layer)
    return int(m.group(1)) if m else None


def candidate_policy(arch: Architecture, layers: Sequence[LayerInfo], bits: Sequence[float], space: Any) -> Policy:
    """The policy of a built candidate: each block's layers at that block's weight bits.

    A layer takes, among the choices ``space`` allows it, the unpruned one nearest to its block's
    bits with 8-bit inputs where offered; a layer outside the blocks (stem, head) or with a
    single choice takes the widest it allows (the NAS spaces fix both at 8 bits).
    """
    choices = []
    for l in layers:
        allowed = space.choices_for(l, len(layers))
        i = block_of(l.name)
        if i is None or len(allowed) == 1:
            c = max(allowed, key=lambda c: (c.w_bits, c.a_bits == 8, -c.prune))
        else:
            w = float(bits[i])
            c = min(allowed, key=lambda c: (c.prune, abs(float(c.w_bits) - w), c.a_bits != 8))
        choices.append((l.name, c))
    return Policy.from_choices(choices, arch=arch)


def candidate_costs(model: nn.Module, layers: Sequence[LayerInfo], policy: Policy,
                    full_size: bool = True, metrics: Sequence[str] = NAS_COSTS) -> dict[str, float]:
    """``policy``'s costs on the built candidate, as the study prices its own: a cost model over
    the candidate's profiled layers and parameters (and its checkpoint file layout when the
    study counts the file, ``full_size``)."""
    cm = CostModel(layers, total_params=model_param_count(model),
                   layout=file_layout(model, layers) if full_size else None)
    return cm.costs(policy, tuple(metrics))


def profile_candidate(arch: Architecture, seed: int = 0) -> tuple[nn.Module, list[LayerInfo]]:
    """The built candidate and its profiled layers (forward order)."""
    model = build(arch, seed).eval()
    with torch.no_grad():
        layers = profile_model(model, sample_input(arch.family))
    return model, layers

