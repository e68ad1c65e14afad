"""Knowledge distillation for QAT: the frozen float model teaches the quantized student.

- Logits: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` (Hinton et al.), averaged over
  samples; a causal LM's ``[B, T, V]`` logits are compared per token (averaged over tokens).
- Features (``distill_features``): the mean over the quantized layers of the relative MSE
  ``mean((student - teacher)^2) / mean(teacher^2)`` of each layer's output, so layers of any
  magnitude weigh alike. Outputs are captured with forward hooks (:class:`FeatureTap`).

Example:
    >>> import torch
    >>> z = torch.randn(4, 10)
    >>> float(logits_kl(z, z, 2.0)), float(logits_kl(z, z.flip(1), 2.0)) > 0
    (0.0, True)
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from autocomp.workload import output_tensor


def logits_kl(student: Any, teacher: Any, temp: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` of the softened logits, per sample (per token for LMs)."""
    s, t = output_tensor(student).float(), output_tensor(teacher).float().detach()
    s, t = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
    ls, lt = torch.log_softmax(s / temp, dim=-1), torch.log_softmax(t / temp, dim=-1)
    kl = torch.nn.functional.kl_div(ls, lt, log_target=True, reduction="batchmean")
    return kl.clamp_min(0.0) * temp * temp


def feature_mse(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of ``mean((s - t)^2) / mean(t^2)``; zero for no layers."""
    terms = [((s.float() - t.float().detach()) ** 2).mean() / t.float().pow(2).mean().clamp_min(1e-12)
             for s, t in zip(student, teacher)]
    return torch.stack(terms).mean() if terms else torch.zeros(())


class FeatureTap:
    """Forward hooks recording the outputs of ``names`` in ``model``; ``take()`` empties them.

    Use as a context manager: the hooks are removed on exit (the teacher is a shared model).
    """

    def __init__(self, model: torch.nn.Module, names: Sequence[str]):
        mods = dict(model.named_modules())
        self.names = [n for n in names if n in mods]
        self._mods = [mods[n] for n in self.names]
        self._seen: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "FeatureTap":
        for n, m in zip(self.names, self._mods):
            self._handles.append(m.register_forward_hook(self._record(n)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _record(self, name: str):
        def hook(module: torch.nn.Module, args: tuple, out: Any) -> None:
            self._seen[name] = output_tensor(out)
        return hook

    def take(self) -> list[torch.Tensor]:
        """The outputs of the last forward pass, in ``names`` order (layers not run are left out)."""
        out = [self._seen[n] for n in self.names if n in self._seen]
        self._seen = {}
        return out
