"""Sequential application: each layer's statistics from the model whose earlier layers are compressed.

The passes :meth:`Quantizer.apply` makes for a quantizer whose ``sequential`` is true. Without
it, apply quantizes every layer with the statistics of the *float* model's inputs, collected
once and shared by every policy. A sequential quantizer
(``gptq(sequential=True)``) is applied as the GPTQ paper does instead: layers are visited in
execution order (the order of their first call on the first calibration batch); for each
compressed layer, the calibration batches run through the model as compressed so far (earlier
layers' weights and input fake-quantization in place) up to that layer, its input statistics
are collected from what it receives there, and it is quantized with them. Later layers thus
correct the errors of the earlier ones.

Cost: one calibration pass, up to the layer, per compressed layer, for every policy: nothing is
shared between policies (the statistics depend on the policy). Layers the calibration does not
reach, and embeddings, use the shared statistics given to ``apply``. A layer called more than
once per forward is measured at its first call.

Example:
    >>> import torch
    >>> from autocomp.policy import Choice, Policy
    >>> from autocomp.quantizers import get_quantizer
    >>> torch.manual_seed(0) and None
    >>> m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> q = get_quantizer("gptq", sequential=True)
    >>> small = q.apply(m, Policy.uniform(["0", "2"], Choice(3, 32)), stats={}, batches=[torch.randn(64, 8)])
    >>> len(torch.unique(small[2].weight[0])) <= 8
    True
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from autocomp.modules import call_model, inspecting


class _Reached(Exception):
    """Raised by a pre-hook to stop a forward pass at the layer whose input it recorded."""


def _inputs(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def execution_order(model: torch.nn.Module, names: Sequence[str], batch: Any) -> list[str]:
    """``names`` in the order of their first call when ``model`` runs on ``batch`` (those never
    called are left out)."""
    mods = dict(model.named_modules())
    order: list[str] = []

    def hook_for(n: str):
        def hook(_m: torch.nn.Module, _a: tuple) -> None:
            if n not in order:
                order.append(n)
        return hook

    handles = [mods[n].register_forward_pre_hook(hook_for(n)) for n in dict.fromkeys(names)]
    with inspecting(model, handles):
        call_model(model, _inputs(batch))
    return order


def layer_inputs(model: torch.nn.Module, module: torch.nn.Module, batches: Sequence[Any]) -> list[torch.Tensor]:
    """``module``'s input (its first call) on each of ``batches`` as ``model`` now computes it,
    each forward pass stopped at the layer (eval mode, no gradients)."""
    seen: list[torch.Tensor] = []

    def grab(_m: torch.nn.Module, args: tuple) -> None:
        seen.append(args[0].detach())
        raise _Reached

    with inspecting(model, [module.register_forward_pre_hook(grab, prepend=True)]):
        for batch in batches:
            try:
                call_model(model, _inputs(batch))
            except _Reached:
                pass
    return seen
