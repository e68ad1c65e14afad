"""``digits-vit``: a small vision transformer on the ``digits`` data (>= 95 % test accuracy).

Same fixed split as ``digits`` (calibration, evaluation and the ``train`` split of QAT). The 8x8 image is cut into 16 patches of 2x2 pixels, embedded to
32 dimensions, and passed through two pre-norm transformer blocks with 4-head softmax attention.
Residual additions and attention matmuls are explicit modules (:class:`Add`, :class:`AttnMatmul`)
so that relevance propagation (``lrp``) can see them; numerically the model is a plain ViT.

Example:
    >>> from autocomp.workload import load_workload
    >>> wl = load_workload("digits-vit")                 # doctest: +SKIP
    >>> round(wl.evaluate(wl.model()), 2) >= 0.95        # doctest: +SKIP
    True
"""
from __future__ import annotations

import torch
from torch import nn

from autocomp.workload import Workload
from autocomp.workloads._cache import cached_state
from autocomp.workloads.digits import digits_data, train_classifier, training_batches

ARCH_VERSION = 1


class Add(nn.Module):
    """``a + b`` as a module (a residual connection)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class AttnMatmul(nn.Module):
    """``softmax(q k^T * scale) @ v``; the softmax weights are exposed for relevance rules."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.lrp_mode = False  # set by autocomp.proxies.lrp: hold attention weights constant


    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        return (attn.detach() if self.lrp_mode else attn) @ v


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.core = AttnMatmul((dim // heads) ** -0.5)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = self.core(q, k, v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.attn, self.add1 = nn.LayerNorm(dim), Attention(dim, heads), Add()
        self.norm2, self.add2 = nn.LayerNorm(dim), Add()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add1(x, self.attn(self.norm1(x)))
        return self.add2(x, self.mlp(self.norm2(x)))


class DigitsViT(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 4, hidden: int = 64, patch: int = 2):
        super().__init__()
        self.patch = patch
        n = (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.pos = nn.Parameter(torch.zeros(1, n, dim))
        self.add_pos = Add()
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p = x.shape[0], self.patch
        patches = x.unfold(2, p, p).unfold(3, p, p).reshape(b, -1, p * p)   # [B, 16, 4]
        h = self.add_pos(self.embed(patches), self.pos.expand(b, -1, -1))
        h = self.norm(self.blocks(h))
        return self.head(self.pool(h.transpose(1, 2)).squeeze(-1))


def _trained_vit() -> nn.Module:
    xtr, ytr, _, _ = digits_data()

    def train() -> dict:
        torch.manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return train_classifier(DigitsViT(), xtr, ytr, epochs=30, lr=4e-3).state_dict()

    model = DigitsViT()
    model.load_state_dict(cached_state(f"digits-vit-v{ARCH_VERSION}", train))
    return model.eval()


def digits_vit() -> Workload:
    """The built-in ``digits-vit`` workload."""
    xtr, ytr, xte, yte = digits_data()
    calib = [(xtr[i:i + 128], ytr[i:i + 128]) for i in range(0, 512, 128)]
    train = training_batches(xtr, ytr)
    return Workload(name="digits-vit", train=train, model_factory=_trained_vit, calib=calib, eval=[(xte, yte)])
