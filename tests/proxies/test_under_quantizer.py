"""Sensitivity under the chosen quantizer: ``loss_delta``, ``quant_mse``, ``hessian_trace`` and
``hessian_eig`` score each (layer, choice) with the weights the evaluation will apply."""
from __future__ import annotations

import pytest
import torch

from autocomp.errors import AutocompError
from autocomp.policy import Choice, Policy
from autocomp.profile import profile_model
from autocomp.proxies import get_proxy
from autocomp.proxies import _perturb
from autocomp.proxies._perturb import Perturber, output_error
from autocomp.proxies.measured import calibration_loss
from autocomp.proxies.zero_cost import choice_perturbations
from autocomp.quantizers import collect_stats, get_quantizer, input_rows
from autocomp.search_spaces import space_from_dict
from autocomp.testing import ProxyContract
from autocomp.workload import Workload

AWARE = ("loss_delta", "quant_mse", "hessian_trace", "hessian_eig")
FAST = {"hessian_trace": {"max_probes": 4, "min_probes": 4}, "hessian_eig": {"max_iter": 3}}
W3 = space_from_dict({"name": "w3", "w_bits": [3, 8], "a_bits": [32]})


# The contract of every proxy, under error-correcting quantizers (bias correction included).
class TestLossDeltaUnderGPTQ(ProxyContract):
    proxy = "loss_delta"
    monotone_in_bits = True
    options = {"quantizer": "gptq+bias_correction", "groups": 2}
    bad_options = [({"quantizer": "nope"}, "unknown quantizer 'nope'"),
                   ({"quantizer": 3}, "quantizer=3 is not a string")]


class TestQuantMSEUnderGPTQ(ProxyContract):
    proxy = "quant_mse"
    monotone_in_bits = True
    options = {"quantizer": "gptq"}
    bad_options = [({"quantizer": "gptq+"}, r"empty part after '\+'")]


class TestHessianTraceUnderGPTQ(ProxyContract):
    proxy = "hessian_trace"
    monotone_in_bits = True
    options = {"quantizer": "gptq(act_order=True)", "max_probes": 3, "min_probes": 3}


class TestHessianEigUnderAWQ(ProxyContract):
    proxy = "hessian_eig"
    monotone_in_bits = True
    options = {"quantizer": "awq", "max_iter": 3}


def _branches() -> Workload:
    """Two layers with the same weights: ``a`` sees rank-2 inputs, ``b`` isotropic ones of the
    same power. GPTQ can hide ``a``'s rounding error where its inputs never go; not ``b``'s."""
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(16, 8)

    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
            self.a.load_state_dict(lin.state_dict())
            self.b.load_state_dict(lin.state_dict())

        def forward(self, x):
            return self.a(x[:, :16]) + self.b(x[:, 16:])

    z = torch.randn(512, 2, generator=g) @ torch.randn(2, 16, generator=g)
    z = z / z.pow(2).mean().sqrt()
    x = torch.cat([z, torch.randn(512, 16, generator=g)], dim=1)
    model = Branches().eval()
    with torch.no_grad():
        y = model(x) + 0.01 * torch.randn(512, 8, generator=g)
    batches = [(x[:256], y[:256]), (x[256:], y[256:])]
    return Workload("branches", lambda: model, batches, batches,
                    loss=lambda out, t: torch.nn.functional.mse_loss(out, t), quality="loss")


@pytest.fixture(scope="module")
def branches():
    wl = _branches()
    return wl, profile_model(wl.model(), wl.sample_input())


@pytest.mark.parametrize("proxy", AWARE)
def test_a_layer_gptq_repairs_well_scores_as_cheap(branches, proxy):
    wl, layers = branches
    key = Choice(3, 32).key

    def ratio(q):
        om = get_proxy(proxy, quantizer=q, **FAST.get(proxy, {})).score(wl, layers, W3).omega
        return om["a"][key] / om["b"][key]

    rtn, gptq = ratio("rtn"), ratio("gptq")
    # Same weights, same input power: under rtn the layers look alike (to all but the top
    # eigenvalue, which sees `a`'s inputs concentrated in two directions); gptq repairs `a` only.
    if proxy != "hessian_eig":
        assert 0.3 < rtn < 3.0
    assert gptq < 0.2 * rtn


def test_loss_delta_measures_the_quantizers_own_model(branches):
    wl, layers = branches
    spec = "gptq+bias_correction"
    sens = get_proxy("loss_delta", quantizer=spec).score(wl, layers, W3)
    q = get_quantizer(spec)
    model = wl.model()
    stats = collect_stats(model, wl.calib, ["a", "b"], q.needs)
    base = calibration_loss(model, wl)
    for name in ("a", "b"):
        one = q.apply(model, Policy.from_choices({name: Choice(3, 32)}), stats=stats)
        assert sens.omega[name][Choice(3, 32).key] == pytest.approx(max(calibration_loss(one, wl) - base, 0.0),
                                                                    rel=1e-5, abs=1e-9)
    assert model.a.bias is not None and torch.equal(model.a.weight, model.b.weight)   # left as it was


def test_hessian_omega_is_the_trace_times_the_output_error(branches):
    wl, layers = branches
    rtn = get_proxy("hessian_trace", max_probes=4, min_probes=4).score(wl, layers, W3)
    gptq = get_proxy("hessian_trace", max_probes=4, min_probes=4, quantizer="gptq").score(wl, layers, W3)
    assert gptq.layer_scores == rtn.layer_scores                      # the same traces, Tr(H)/n
    model, q, c = wl.model(), get_quantizer("gptq"), Choice(3, 32)
    stats = collect_stats(model, wl.calib, ["a", "b"], q.needs)
    for name in ("a", "b"):
        mod = getattr(model, name)
        dw = (q.quantize_layer(name, mod, c, stats[name]).weight - mod.weight).detach()
        # E||dW x||^2 over the calibration rows, in weight units (divided by the mean x_k^2)
        seen = []
        h = mod.register_forward_pre_hook(lambda m, a: seen.append(input_rows(m, a[0])))
        with torch.no_grad():
            for x, _ in wl.calib:
                model(x)
        h.remove()
        rows = torch.cat(seen).double()
        err = float(((rows @ dw.double().t()) ** 2).sum(1).mean() / (rows ** 2).mean())
        assert gptq.omega[name][c.key] == pytest.approx(rtn.layer_scores[name] * err, rel=1e-4)


def test_output_error_with_a_bias_correction_is_the_centred_error():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 6, generator=g) + 2.0
    dw = torch.randn(3, 6, generator=g)
    st = collect_stats(torch.nn.Sequential(torch.nn.Linear(6, 3)), [x], ["0"], ["hessian", "mean"])["0"]
    db = -(dw @ st.mean)                                   # what bias correction adds
    scale = float((x ** 2).mean())
    want = float(((x - x.mean(0)) @ dw.t()).pow(2).sum(1).mean()) / scale
    assert output_error(dw, db, st) == pytest.approx(want, rel=1e-4)
    uncorrected = float((x @ dw.t()).pow(2).sum(1).mean()) / scale
    assert output_error(dw, None, st) == pytest.approx(uncorrected, rel=1e-4)
    assert uncorrected > want                              # the mean shift is gone


def test_rtn_keeps_the_historical_perturbation(digits, digits_layers):
    """Under rtn nothing changes: the perturbation from the quantizer family is the proxies' own."""
    from autocomp.search_spaces import load_space

    model = digits.model()
    mods = dict(model.named_modules())
    choices = load_space("mixed_precision").choices(digits_layers)
    p = Perturber("rtn", model, [l.name for l in digits_layers], digits.calib)
    assert not p.weighted and p.stats == {}
    for l in digits_layers:
        want = {k: float((d ** 2).sum()) for k, d in choice_perturbations(mods[l.name], choices[l.name]).items()}
        assert p.norms(l.name, mods[l.name], choices[l.name]) == want
    for name in AWARE:
        assert get_proxy(name).config.quantizer == "rtn"


def test_statistics_are_collected_once_per_part(branches, monkeypatch):
    wl, layers = branches
    calls = []

    def counted(model, batches, names, needs):
        calls.append(tuple(names))
        return collect_stats(model, batches, names, needs)

    monkeypatch.setattr(_perturb, "collect_stats", counted)
    p = get_proxy("loss_delta", quantizer="gptq", groups=2)
    for part in p.parts(wl, layers, W3):
        p.score_part(wl, layers, W3, part)
    assert sorted(calls) == [("a",), ("b",)]


def test_a_bad_quantizer_fails_when_the_proxy_is_built():
    for name in AWARE:
        with pytest.raises(AutocompError, match=f"proxy '{name}': unknown quantizer 'nope'"):
            get_proxy(name, quantizer="nope")


def test_parts_on_ray_give_the_in_process_scores(ray_session, digits, digits_layers):
    from autocomp.search_spaces import load_space
    from autocomp.workers.proxy_tasks import score_on_ray

    space = load_space("int4_int8")
    opts = {"quantizer": "gptq", "max_probes": 4, "min_probes": 4}
    local = get_proxy("hessian_trace", **opts).score(digits, digits_layers, space)
    remote = score_on_ray("digits", "hessian_trace", digits_layers, space, opts, workers=2)
    assert remote.omega == local.omega
    assert remote.omega != get_proxy("hessian_trace", max_probes=4, min_probes=4).score(
        digits, digits_layers, space).omega


def test_the_audit_has_a_row_per_proxy_and_quantizer(ray_session, sqlite_url):
    import json

    from typer.testing import CliRunner

    from autocomp.audit import AuditConfig, run_audit
    from autocomp.cli import app
    from autocomp.store import Store

    store = Store(sqlite_url)
    cfg = AuditConfig(model="digits", samples=4, proxies=("quant_mse", "fisher"), quantizers=("rtn", "gptq"),
                      space="int4_int8", workers=2)
    rows = run_audit(cfg, store, "aq")
    assert sorted((r["proxy"], r["quantizer"]) for r in rows) == [
        ("fisher", "gptq"), ("fisher", "rtn"), ("quant_mse", "gptq"), ("quant_mse", "rtn")]
    study = store.get_study("aq")
    stored = {r["proxy"]: r for r in store.load_audits(study)}
    assert set(stored) == {"quant_mse", "quant_mse[gptq]", "fisher", "fisher[gptq]"}
    for r in rows:
        key = r["proxy"] if r["quantizer"] == "rtn" else f"{r['proxy']}[{r['quantizer']}]"
        assert stored[key]["spearman"] == pytest.approx(r["spearman"])
    # each quantizer evaluated the 4 samples + fp32 once, under its own kind
    rtn_q = {e.policy_id: e.quality for e in store.list_evaluations(study, "ptq")}
    gptq_q = {e.policy_id: e.quality for e in store.list_evaluations(study, "ptq:gptq")}
    assert len(rtn_q) == len(gptq_q) == 5 and rtn_q.keys() == gptq_q.keys()
    assert rtn_q != gptq_q

    # The CLI: a comma list, the stored evaluations reused, a quantizer column.
    res = CliRunner().invoke(app, ["proxies", "audit", "--model", "digits", "--samples", "4", "--proxy", "quant_mse",
                                   "--space", "int4_int8", "--quantizer", "rtn,gptq", "--study", "aq",
                                   "--db", sqlite_url, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])["audit"]
    assert {(r["proxy"], r["quantizer"]) for r in out} == {("quant_mse", "rtn"), ("quant_mse", "gptq")}
    assert len(store.list_evaluations(study, "ptq:gptq")) == 5
    res = CliRunner().invoke(app, ["proxies", "audit", "--quantizer", "nope", "--study", "aq2", "--db", sqlite_url])
    assert res.exit_code == 2 and "unknown quantizer 'nope'" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert store.get_study("aq2", missing_ok=True) is None
