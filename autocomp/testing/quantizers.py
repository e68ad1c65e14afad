"""The quantizer contract: ``quantize_layer`` returns a weight of the layer's shape, in the
choice's stored format (codes in range, one scale and zero point per group, re-derived from the
weight alone), pruned to the exact ratio, unchanged at float bits, deterministic; ``apply`` leaves
the model it is given untouched; options are validated with one-line errors.

Run it on a quantizer of your own (registered with :func:`autocomp.quantizers.register`)::

    from autocomp.testing import QuantizerContract

    class TestMine(QuantizerContract):
        quantizer = "mine"                              # the registered name
        options = {"steps": 10}                         # what get_quantizer builds it with
        bad_options = [({"steps": -1}, "steps")]        # (options, part of the one-line error)

It quantizes every layer of the ``digits`` workload (convolutions and linear layers, statistics
from :func:`~autocomp.quantizers.collect_stats` over its calibration batches) and an embedding,
for a set of choices covering 1 to 8 bits, groups (one row not divisible by the group), zero
points and pruning. Quality is not part of the contract: each quantizer's own tests hold it to
its promises.

:func:`assert_representable` is the format check on its own, for any weight and choice.
"""
from __future__ import annotations

import functools
from typing import Any, ClassVar

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.modules import is_embedding, weight_of
from autocomp.policy import Choice, Policy
from autocomp.quant import TERNARY_BITS, is_float, split_groups
from autocomp.quantizers import STATS, collect_stats, get_quantizer, list_quantizers
from autocomp.testing import _data

#: the choices every quantizer is held to: bits 1..8, groups (16 and 32 leave shorter last
#: groups on the digits layers), zero points, pruning with and without quantization
CHOICES = (Choice(8, 32), Choice(4, 32), Choice(2, 32, zero_point=True), Choice(3, 32, group=32),
           Choice(4, 32, group=16, zero_point=True), Choice(1, 32), Choice(1.58, 32),
           Choice(4, 32, prune=0.5), Choice(3, 32, prune=0.25, group=16, zero_point=True),
           Choice(32, 32, prune=0.5))
_TOL = 1e-3      # distance of a re-derived code from an integer, in code units


def _groups(flat: torch.Tensor, group: int | None) -> list[torch.Tensor]:
    """``[N, K]`` cut as :func:`autocomp.quant.quantize_weight_groups` cuts it: rows of groups."""
    return split_groups(flat, group)


def _on_integer_grid(rows: torch.Tensor, bits: int, zero_point: bool) -> torch.Tensor:
    """Per row: is there a scale (and an integer zero point) putting every value on an in-range
    code? The scale is re-derived from the row: ``±amax / m`` for a signed code ``m``
    (symmetric; a negative scale puts a positive extreme on ``-half``), ``(max - min) / m`` for a code span ``m`` (asymmetric); every candidate is
    tried, widest first (quantizers fill their range, so most rows settle at once)."""
    if zero_point:
        qmax = 2**bits - 1
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        ok = hi == lo                       # one distinct value: c * s for any code c and s
        spans = range(qmax, 0, -1)
    else:
        half = 2 ** (bits - 1)
        amax = rows.abs().amax(dim=1)
        ok = amax == 0
        spans = range(half, 0, -1)
    for m in spans:
        todo = (~ok).nonzero().flatten()
        if todo.numel() == 0:
            break
        r = rows[todo]
        if zero_point:
            c = r / ((hi[todo] - lo[todo]) / m)[:, None]
        else:
            c = r / (amax[todo] / m)[:, None]
        k = c.round()
        fits = ((c - k).abs() <= _TOL).all(dim=1)
        if zero_point:
            # an integer zero point z in 0..qmax moving every code k to k + z in 0..qmax
            fits &= (-k.amin(dim=1)).clamp_min(0) <= (qmax - k.amax(dim=1)).clamp_max(qmax)
        else:   # the scale may be negative (the extreme weight on code -half): codes k or -k
            fits &= ((k.amin(dim=1) >= -half) & (k.amax(dim=1) <= half - 1)) | \
                ((k.amax(dim=1) <= half) & (k.amin(dim=1) >= -(half - 1)))
        ok[todo[fits]] = True
    return ok


def _on_sign_grid(rows: torch.Tensor, ternary_or_pruned: bool) -> torch.Tensor:
    """Binary rows are ``±s``; ternary (or pruned binary) rows ``{-s, 0, s}``: one magnitude."""
    mag = rows.abs()
    nz = mag > 0
    top = mag.amax(dim=1, keepdim=True)
    same = ((mag - top).abs() <= 1e-5 * top.clamp_min(1e-30)) | ~nz
    ok = same.all(dim=1)
    return ok if ternary_or_pruned else ok & nz.all(dim=1)


def assert_representable(weight: torch.Tensor, choice: Choice, input_scale: torch.Tensor | None = None) -> None:
    """Fail unless ``weight`` (times ``input_scale`` per input column, when given) is exactly the
    dequantized form of ``choice``'s stored format: per group of ``choice.group`` consecutive
    input elements (or per output row), one scale (and integer zero point) with every value on
    an in-range integer code. Float bits pass; above 8 bits only finiteness is checked (the
    scale search would try up to 2**16 candidates).

    Example:
        >>> import torch
        >>> from autocomp.quant import compress_weight
        >>> w = torch.randn(4, 10)
        >>> assert_representable(compress_weight(w, 3, group=4), Choice(3, 32, group=4))
        >>> assert_representable(w, Choice(3, 32))
        Traceback (most recent call last):
        ...
        AssertionError: 4 of 4 groups of a w3a32 weight are on no 3-bit grid
    """
    assert torch.isfinite(weight).all(), "weight has non-finite values"
    bits = choice.w_bits
    if is_float(bits) or bits > 8:
        return
    flat = weight.detach().double().reshape(weight.shape[0], -1)
    if input_scale is not None:
        flat = flat * input_scale.detach().double().reshape(1, -1)
    sign = bits == 1 or abs(bits - TERNARY_BITS) < 1e-6
    bad = total = 0
    for rows in _groups(flat, choice.group):
        ok = _on_sign_grid(rows, bits != 1 or choice.prune > 0) if sign else \
            _on_integer_grid(rows, int(round(bits)), choice.zero_point)
        bad += int((~ok).sum())
        total += rows.shape[0]
    assert bad == 0, f"{bad} of {total} groups of a {choice.key} weight are on no {bits:g}-bit grid"


@functools.lru_cache(maxsize=None)
def _embedding() -> torch.nn.Embedding:
    torch.manual_seed(0)
    with torch.random.fork_rng():
        return torch.nn.Embedding(50, 24)


class QuantizerContract:
    """What every registered quantizer guarantees. Subclasses set the class attributes below."""

    quantizer: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    bad_options: ClassVar[list[tuple[dict[str, Any], str]]] = []
    workload_spec: ClassVar[str] = "digits"
    choices: ClassVar[tuple[Choice, ...]] = CHOICES

    @pytest.fixture(scope="class")
    @classmethod
    def q(cls):
        return get_quantizer(cls.quantizer, **cls.options)

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return _data.workload(cls.workload_spec).model()

    @pytest.fixture(scope="class")
    @classmethod
    def stats(cls, q, model):
        wl = _data.workload(cls.workload_spec)
        names = [l.name for l in _data.layers(cls.workload_spec)]
        return collect_stats(model, wl.calib, names, q.needs)

    @pytest.fixture(scope="class")
    @classmethod
    def layers(cls, model):
        mods = dict(model.named_modules())
        out = [(l.name, mods[l.name]) for l in _data.layers(cls.workload_spec)]
        return out + [("embedding", _embedding())]

    @pytest.fixture(scope="class")
    @classmethod
    def results(cls, q, layers, stats):
        """Every (layer, choice): the quantizer's result, computed once per class."""
        return {(n, c): q.quantize_layer(n, m, c, stats.get(n)) for n, m in layers for c in cls.choices}

    def test_registered_with_known_statistics(self, q):
        assert self.quantizer in list_quantizers()
        assert set(q.needs) <= set(STATS)

    def test_same_shape_float32_finite(self, results, layers):
        mods = dict(layers)
        for (n, c), res in results.items():
            w = weight_of(mods[n])
            assert res.weight.shape == w.shape and res.weight.dtype == torch.float32, (n, c.key)
            assert torch.isfinite(res.weight).all(), (n, c.key)

    def test_representable_in_the_choice_s_format(self, results):
        for (n, c), res in results.items():
            try:
                assert_representable(res.weight, c, getattr(res, "input_scale", None))
            except AssertionError as e:
                raise AssertionError(f"layer {n}: {e}") from None

    def test_pruned_to_the_exact_ratio(self, results):
        for (n, c), res in results.items():
            if c.prune <= 0:
                continue
            want = int(round(c.prune * res.weight.numel()))
            zeros = int((res.weight == 0).sum())
            if is_float(c.w_bits):
                assert zeros == want, (n, c.key, zeros, want)      # survivors stay float, non-zero
            else:
                assert zeros >= want, (n, c.key, zeros, want)      # survivors may round to code 0

    def test_float_choice_leaves_the_weight(self, q, layers, stats):
        for n, m in layers:
            res = q.quantize_layer(n, m, Choice(32, 32), stats.get(n))
            assert torch.equal(res.weight, weight_of(m).detach().float()), n
            assert res.bias_delta is None or float(res.bias_delta.abs().max()) <= 1e-6, n

    def test_deterministic(self, q, layers, stats, results):
        for n, m in layers:
            for c in (self.choices[1], self.choices[-2]):
                again = get_quantizer(self.quantizer, **self.options).quantize_layer(n, m, c, stats.get(n))
                assert torch.equal(again.weight, results[(n, c)].weight), (n, c.key)

    def test_apply_leaves_the_model_untouched(self, q, model, layers, stats):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        names = [n for n, _ in layers if n != "embedding"]
        small = q.apply(model, Policy.uniform(names, Choice(3, 32)), stats=stats)
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        mods = dict(small.named_modules())
        assert any(not torch.equal(weight_of(mods[n]), weight_of(m)) for n, m in layers if n in mods)
        x = _data.workload(self.workload_spec).sample_input()
        with torch.no_grad():
            assert torch.isfinite(small(x)).all()

    def test_missing_statistics_are_a_value_error(self, q, layers):
        if not q.needs:
            pytest.skip(f"{self.quantizer} needs no statistics")
        n, m = next((n, m) for n, m in layers if not is_embedding(m))
        with pytest.raises(ValueError, match=n):
            q.quantize_layer(n, m, Choice(4, 32), None)

    def test_bad_options_are_one_line_errors(self):
        for options, match in [({"no_such_option": 1}, "has no option 'no_such_option'"), *self.bad_options]:
            with pytest.raises(AutocompError, match=match) as e:
                get_quantizer(self.quantizer, **options)
            assert "\n" not in str(e.value)
