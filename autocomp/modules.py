"""Module adaptation, in one place: which modules are compressible layers, their weight with
output channels first, writing it back, calling a model on any batch form, and capturing the
inputs a forward pass feeds to named layers.

Every other module goes through these helpers, so supporting a new layer type (transformers'
``Conv1D`` stores its weight ``[in, out]``) is a change here and nowhere else.

Embeddings are layers too (weight ``[vocab, dim]``: one row per token, grouped along ``dim``),
and so is a language model's head. Modules sharing one weight ``Parameter`` (GPT-2's
``transformer.wte`` and ``lm_head``) are one layer, named by the first in ``named_modules()``
order; the others are its aliases (:func:`tied_aliases`), and compressing the shared weight
compresses every use.

Example:
    >>> import torch
    >>> from autocomp.modules import call_model, capture_inputs, weight_of
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 2))
    >>> tuple(weight_of(m[0]).shape)
    (2, 3)
    >>> with capture_inputs(m, ["0"]) as seen:
    ...     _ = call_model(m, torch.ones(4, 3))
    >>> tuple(seen["0"][0].shape)
    (4, 3)
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch

QUANTIZABLE_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding)
ROLES = ("conv", "linear", "embedding", "lm_head")
# Roles whose choices never quantize the input: an embedding's input is token ids, and a head's
# logits are what weight-only LLM compression leaves in float.
WEIGHT_ONLY_ROLES = ("embedding", "lm_head")


def is_transposed(module: torch.nn.Module) -> bool:
    """Transformers' ``Conv1D`` (GPT-2): ``y = x @ W + b`` with ``W`` stored ``[in, out]``."""
    return type(module).__name__ == "Conv1D"


def is_embedding(module: torch.nn.Module) -> bool:
    """A lookup table (``torch.nn.Embedding``): integer inputs, no multiply-accumulates."""
    return isinstance(module, torch.nn.Embedding)


def is_quantizable(module: torch.nn.Module) -> bool:
    """Conv1d/Conv2d/Linear/Embedding, and transformers' Conv1D (matched by name: no import needed)."""
    if isinstance(module, QUANTIZABLE_TYPES):
        return True
    return is_transposed(module) and hasattr(module, "nf") and hasattr(module, "weight")


def is_linear(module: torch.nn.Module) -> bool:
    """A matrix-multiply layer (``Linear`` or ``Conv1D``), as opposed to a convolution."""
    return isinstance(module, torch.nn.Linear) or is_transposed(module)


def output_first(module: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``t``, laid out like the module's weight (the weight, its gradient), with output channels on dim 0."""
    return t.t() if is_transposed(module) else t


def weight_of(module: torch.nn.Module) -> torch.Tensor:
    """The weight with output channels on dim 0 (a view: changes write through)."""
    return output_first(module, module.weight)


def as_module_layout(module: torch.nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`weight_of`: a tensor laid out output-channels-first, in the module's layout."""
    return w.t() if is_transposed(module) else w


def set_weight(module: torch.nn.Module, w: torch.Tensor) -> None:
    """Copy ``w`` (output channels first) into the module's weight in place."""
    with torch.no_grad():
        module.weight.copy_(as_module_layout(module, w))


def _all_quantizable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and is_quantizable(m)]


def tied_aliases(model: torch.nn.Module) -> dict[str, list[str]]:
    """Layer name -> the other modules sharing its weight (only layers that have some).

    Example:
        >>> emb = torch.nn.Embedding(10, 4)
        >>> head = torch.nn.Linear(4, 10, bias=False)
        >>> head.weight = emb.weight
        >>> tied_aliases(torch.nn.ModuleDict({"wte": emb, "head": head}))
        {'wte': ['head']}
    """
    first: dict[int, str] = {}
    out: dict[str, list[str]] = {}
    for n, m in _all_quantizable(model):
        owner = first.setdefault(id(m.weight), n)
        if owner != n:
            out.setdefault(owner, []).append(n)
    return out


def quantizable_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, module)`` of every compressible layer, in ``named_modules()`` order; a weight
    shared by several modules is listed once, under the first of them."""
    seen: set[int] = set()
    out = []
    for n, m in _all_quantizable(model):
        if id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append((n, m))
    return out


def activation_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The quantizable layers whose input is an activation (not embeddings: theirs are ids),
    i.e. those activation statistics and input quantization are about."""
    return [(n, m) for n, m in quantizable_layers(model) if not is_embedding(m)]


def _output_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    try:
        head = get() if callable(get) else None
    except (AttributeError, NotImplementedError):  # some HF classes raise instead of returning None
        head = None
    return head if isinstance(head, torch.nn.Module) else None


def layer_roles(model: torch.nn.Module) -> dict[str, tuple[str, ...]]:
    """Each layer's roles: ``conv``, ``linear``, ``embedding`` or ``lm_head``; a tied layer has
    those of every module sharing its weight, its own first (GPT-2's ``transformer.wte``:
    ``("embedding", "lm_head")``).

    A head is the module a Hugging Face model returns from ``get_output_embeddings()``, or a
    matrix-multiply layer sharing its weight with an embedding.
    """
    head = _output_embeddings(model)
    own: dict[str, str] = {}
    for n, m in _all_quantizable(model):
        if is_embedding(m):
            own[n] = "embedding"
        elif is_linear(m):
            own[n] = "lm_head" if m is head else "linear"
        else:
            own[n] = "conv"
    aliases = tied_aliases(model)
    for n, al in aliases.items():
        if own[n] == "embedding":
            for a in al:
                if own[a] == "linear":
                    own[a] = "lm_head"
    out = {}
    for n, _ in quantizable_layers(model):
        roles = [own[n]] + [own[a] for a in aliases.get(n, [])]
        out[n] = tuple(dict.fromkeys(roles))
    return out


def batch_size(inputs: Any) -> int:
    """The batch dimension of a batch's inputs (a tensor, a tuple/list or a dict of them: the first)."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, (tuple, list)):
        return batch_size(inputs[0])
    if isinstance(inputs, Mapping):
        return batch_size(next(iter(inputs.values())))
    raise TypeError(f"cannot find a batch dimension in {type(inputs).__name__}")


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """Call ``model`` on a batch's inputs: a tensor, a tuple/list of positional inputs, or a dict
    of keyword inputs (Hugging Face style)."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


@contextmanager
def inspecting(model: torch.nn.Module, handles: Iterable[Any] = ()) -> Iterator[None]:
    """Run the block with ``model`` in eval mode and without gradients (a forward pass that only
    observes it); afterwards remove the hook ``handles`` and put back its train mode.

    Example:
        >>> m = torch.nn.Linear(2, 2).train()
        >>> with inspecting(m, [m.register_forward_hook(lambda *a: None)]):
        ...     _ = m(torch.zeros(1, 2))
        >>> m.training, len(m._forward_hooks)
        (True, 0)
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@contextmanager
def capture_inputs(model: torch.nn.Module, names: Iterable[str], detach: bool = True,
                   transform: Callable[[torch.Tensor], Any] | None = None) -> Iterator[dict[str, list[Any]]]:
    """Record the first positional input of each named layer on every call inside the block.

    Args:
        names: layer names as in ``model.named_modules()``.
        detach: detach the recorded tensors from the autograd graph.
        transform: applied to each recorded tensor (e.g. a reduction, to save memory).

    Yields:
        ``{name: [input of call 1, input of call 2, ...]}``, filled as the model runs.
    """
    mods = dict(model.named_modules())
    seen: dict[str, list[Any]] = {n: [] for n in names}

    def hook_for(n: str):
        def hook(_mod: torch.nn.Module, args: tuple) -> None:
            x = args[0].detach() if detach else args[0]
            seen[n].append(transform(x) if transform is not None else x)
        return hook

    handles = [mods[n].register_forward_pre_hook(hook_for(n)) for n in seen]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
