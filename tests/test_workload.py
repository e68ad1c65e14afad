from __future__ import annotations

import math
import textwrap

import pytest
import torch

from autocomp.errors import ModelSpecError
from autocomp.workload import Workload, load_workload


def test_digits_is_trained_to_97_percent(digits):
    assert len(digits.calib) >= 2 and digits.eval
    assert digits.evaluate(digits.model()) >= 0.97
    x, y = digits.eval[0]
    assert x.shape[1:] == (1, 8, 8) and len(y) >= 400  # the fixed 25 % test split of 1797


def test_digits_model_is_cached(digits, tmp_path):
    from autocomp.workloads._cache import cache_dir

    assert any(p.name.startswith("digits-cnn") for p in cache_dir().iterdir())


USER_FILE = """
import torch
from autocomp.workload import Workload

def make():
    torch.manual_seed(0)
    x = torch.randn(32, 6); y = (x.sum(1) > 0).long()
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return Workload(name="tiny", model_factory=lambda: net, calib=[(x, y)], eval=[(x, y)])

def not_a_workload():
    return torch.nn.Linear(2, 2)

def broken():
    raise RuntimeError("no weights here")
"""


def test_user_workload_from_file_and_module(tmp_path, monkeypatch):
    f = tmp_path / "user_models.py"
    f.write_text(textwrap.dedent(USER_FILE))
    wl = load_workload(f"{f}:make")
    assert isinstance(wl, Workload) and wl.name == "tiny" and wl.spec == f"{f}:make"
    monkeypatch.syspath_prepend(str(tmp_path))
    wl2 = load_workload("user_models:make")
    assert wl2.evaluate(wl2.model()) >= 0.0


@pytest.mark.parametrize("spec,msg", [
    ("nonexistent_model", "unknown model"),
    ("no_such_pkg_xyz.mod:make", "cannot import"),
    ("autocomp.workload:no_such_factory", "has no attribute"),
    ("/nonexistent/dir/m.py:make", "no such file"),
    ("", "empty"),
])
def test_bad_specs(spec, msg):
    with pytest.raises(ModelSpecError, match=msg):
        load_workload(spec)


def test_factory_errors_are_one_line(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent(USER_FILE))
    with pytest.raises(ModelSpecError, match="must return"):
        load_workload(f"{f}:not_a_workload")
    with pytest.raises(ModelSpecError, match="no weights here"):
        load_workload(f"{f}:broken")


class _Bigram(torch.nn.Module):
    """A causal 'LM' whose logits at position t depend on token t only (a learned bigram table)."""

    def __init__(self, vocab: int = 7):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, ids):
        return self.table(ids)


def _manual_nll(model, ids):
    """Summed -log p(ids[t+1] | ids[t]) and the token count, from the bigram table itself."""
    logp = torch.log_softmax(model.table.weight.detach(), dim=-1)
    pairs = [(int(a), int(b)) for row in ids for a, b in zip(row[:-1], row[1:]) if int(b) != -100]
    return -sum(float(logp[a, b]) for a, b in pairs), len(pairs)


def test_causal_lm_loss_shifts_and_ignores_padding():
    from autocomp.workload import cross_entropy, mean_token_loss, perplexity

    model = _Bigram()
    ids = torch.randint(7, (3, 6), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[0, 4:] = -100                                       # padding at the end of sequence 0
    nll, n = _manual_nll(model, ids)
    with torch.no_grad():
        assert float(cross_entropy(model(ids), ids)) == pytest.approx(nll / n, rel=1e-5)
        nll_pad, n_pad = _manual_nll(model, labels)
        assert n_pad == n - 2
        assert float(cross_entropy(model(ids), labels)) == pytest.approx(nll_pad / n_pad, rel=1e-5)
    # the metrics pool tokens over batches: two batches of one and two sequences give the same value
    batches = [(ids[:1], labels[:1]), (ids[1:], labels[1:])]
    assert mean_token_loss(model, batches) == pytest.approx(nll_pad / n_pad, rel=1e-5)
    assert perplexity(model, batches) == pytest.approx(math.exp(nll_pad / n_pad), rel=1e-5)
    assert perplexity(model, [(ids, labels)]) == pytest.approx(perplexity(model, batches), rel=1e-6)


def test_class_logits_keep_plain_cross_entropy():
    from autocomp.workload import cross_entropy

    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    assert torch.allclose(cross_entropy(logits, y), torch.nn.functional.cross_entropy(logits, y))


def test_cosine_fidelity_is_one_for_the_reference_and_drops_with_noise():
    from autocomp.workload import cosine_fidelity, cosine_loss

    torch.manual_seed(0)
    enc = torch.nn.Linear(8, 8)
    x = torch.randn(4, 5, 8)
    with torch.no_grad():
        ref = enc(x)
    batches = [(x[:2], ref[:2]), (x[2:], ref[2:])]
    assert cosine_fidelity(enc, batches) == pytest.approx(1.0, abs=1e-6)
    neg = torch.nn.Linear(8, 8)
    with torch.no_grad():
        neg.weight.copy_(-enc.weight)
        neg.bias.copy_(-enc.bias)
    assert cosine_fidelity(neg, batches) == pytest.approx(-1.0, abs=1e-6)   # the bounds are [-1, 1]
    other = torch.nn.Linear(8, 8)
    c = cosine_fidelity(other, batches)
    assert -1.0 < c < 0.99
    with torch.no_grad():
        assert float(cosine_loss(other(x), ref)) == pytest.approx(1.0 - c, abs=1e-5)
