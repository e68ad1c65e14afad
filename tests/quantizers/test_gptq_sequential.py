"""``gptq(sequential=True)``: each layer's Hessian from the model compressed up to it (GPTQ's
layer-by-layer order), checked against an explicit two-step reference; the default stays shared."""
from __future__ import annotations

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.quantizers import collect_stats, get_quantizer
from autocomp.quantizers.gptq import gptq_weight
from autocomp.quantizers.sequential import execution_order
from autocomp.testing.quantizers import assert_representable


@pytest.fixture(scope="module")
def mlp():
    """Three linear layers, trained a little on a real regression so their errors matter; the
    module order differs from the execution order, which the sequential pass must follow."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.last = torch.nn.Linear(24, 4)
            self.mid = torch.nn.Linear(24, 24)
            self.first = torch.nn.Linear(16, 24)

        def forward(self, x):
            return self.last(torch.relu(self.mid(torch.relu(self.first(x)))))

    net = Net()
    x = torch.randn(512, 16) @ torch.randn(16, 16)
    y = torch.sin(x[:, :4]) + x[:, 4:8] * 0.5
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return net.eval(), [x[i:i + 128] for i in range(0, 512, 128)]


def _hessian(model, name, batches):
    return collect_stats(model, batches, [name], ["hessian"])[name].hessian


def test_each_layer_uses_the_inputs_of_the_model_quantized_before_it(mlp):
    net, batches = mlp
    names = ["last", "mid", "first"]                 # policy order: not the execution order
    assert execution_order(net, names, batches[0]) == ["first", "mid", "last"]
    c = Choice(3, 32)
    pol = Policy.uniform(names, c)
    shared = collect_stats(net, batches, names, ["hessian"])
    seq = get_quantizer("gptq", sequential=True).apply(net, pol, stats=shared, batches=batches)
    # the reference, step by step: quantize, then measure the next layer's input on that model
    ref = net.__class__()
    ref.load_state_dict(net.state_dict())
    ref.eval()
    hs = {}
    for n in ["first", "mid", "last"]:
        hs[n] = _hessian(ref, n, batches)
        with torch.no_grad():
            getattr(ref, n).weight.copy_(gptq_weight(getattr(ref, n).weight, hs[n], c))
    for n in names:
        assert torch.equal(getattr(seq, n).weight, getattr(ref, n).weight), n
        assert_representable(getattr(seq, n).weight, c)
    # the first layer sees float inputs either way; the later ones see other inputs than the float model's
    assert torch.equal(hs["first"], shared["first"].hessian)
    assert not torch.allclose(hs["mid"], shared["mid"].hessian, rtol=1e-3)
    assert not torch.equal(seq.last.weight, get_quantizer("gptq").apply(net, pol, stats=shared).last.weight)


def test_default_shares_the_float_statistics_and_without_batches_so_does_sequential(mlp):
    net, batches = mlp
    pol = Policy.uniform(["first", "mid", "last"], Choice(3, 32))
    shared = collect_stats(net, batches, ["first", "mid", "last"], ["hessian"])
    plain = get_quantizer("gptq").apply(net, pol, stats=shared, batches=batches)
    for n in ("first", "mid", "last"):
        w = gptq_weight(getattr(net, n).weight, shared[n].hessian, Choice(3, 32))
        assert torch.equal(getattr(plain, n).weight, w), n
    no_batches = get_quantizer("gptq", sequential=True).apply(net, pol, stats=shared)
    assert all(torch.equal(getattr(no_batches, n).weight, getattr(plain, n).weight) for n in ("first", "mid", "last"))


def test_output_error_on_the_calibration_data_not_above_the_shared_mode(mlp):
    net, batches = mlp
    pol = Policy.uniform(["first", "mid", "last"], Choice(2, 32))
    shared = collect_stats(net, batches, ["first", "mid", "last"], ["hessian"])
    x = torch.cat(batches)
    with torch.no_grad():
        y = net(x)
        # on the default (clipped) grid; with clip=false this MLP's shared mode is the better one
        # at 2 bits (0.53 against 0.70): sequential is an option, not a default
        errs = {s: float(((get_quantizer("gptq", sequential=s, clip=True).apply(net, pol, stats=shared, batches=batches)(x)
                           - y) ** 2).mean()) for s in (False, True)}
    assert errs[True] <= errs[False], errs


def test_spec_parses_from_the_command_line_form_and_composes():
    q = get_quantizer("gptq(sequential=true)")
    assert q.sequential and q.spec == "gptq(sequential=True)"
    assert get_quantizer(q.spec).sequential
    assert get_quantizer("gptq(sequential=true)+bias_correction").sequential
    assert not get_quantizer("gptq+bias_correction").sequential and not get_quantizer("awq").sequential
    with pytest.raises(AutocompError, match="sequential"):
        get_quantizer("gptq", sequential="yes")
