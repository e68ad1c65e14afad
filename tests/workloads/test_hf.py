"""``--model hf:PATH``: tiny GPT-2 and BERT directories (saved with an offline tokenizer) load as workloads."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from autocomp.errors import ModelSpecError
from autocomp.workload import load_workload, validate_workload
from autocomp.workloads.hf import hf_spec, merge_spec, parse_hf_spec
from autocomp.workloads.text import N_CALIB, N_EVAL


def test_spec_round_trips_paths_with_spaces_and_specials():
    spec = hf_spec("/m dir/a&b?c%d", data="/data/x y.jsonl", task="encoder", seq_len=64)
    s = parse_hf_spec(spec[len("hf:"):])
    assert (s.path, s.data, s.task, s.seq_len) == ("/m dir/a&b?c%d", "/data/x y.jsonl", "encoder", 64)
    assert merge_spec(spec, seq_len=32).endswith("seq=32") and "task=encoder" in merge_spec(spec, seq_len=32)


@pytest.mark.parametrize("rest,msg", [("", "give a model directory"), ("/m?colour=red", "unknown key 'colour'"),
                                      ("/m?seq=long", "not an integer"), ("/m?task=seq2seq", "unknown --task"),
                                      ("/m?seq=1", "--seq-len must be at least 2")])
def test_bad_spec_keys(rest, msg):
    with pytest.raises(ModelSpecError, match=msg):
        parse_hf_spec(rest)


def test_causal_lm_from_a_directory(hf_dirs):
    wl = load_workload(hf_spec(str(hf_dirs["gpt"]), data=str(hf_dirs["text"]), seq_len=32))
    assert wl.quality == "perplexity" and wl.spec.startswith("hf:")
    model = validate_workload(wl)
    assert type(model).__name__ == "GPT2LMHeadModel"
    n_cal = sum(len(x) for x, _ in wl.calib)
    n_ev = sum(len(x) for x, _ in wl.eval)
    assert n_cal == N_CALIB and n_ev == N_EVAL and all(x.shape[1] == 32 for x, _ in wl.eval)
    # the evaluation blocks are the end of the file, the calibration blocks its start: disjoint
    assert not any(torch.equal(a, b) for x, _ in wl.calib for a in x for y, _ in wl.eval for b in y)
    ppl = wl.evaluate(model)
    vocab = model.config.vocab_size
    assert 1.0 < ppl < 3 * vocab  # random weights: about the vocabulary size, never astronomically off
    # perplexity is exp of the pooled mean token loss, whatever the batching
    flat = [(torch.cat([x for x, _ in wl.eval]),) * 2]
    assert math.isclose(wl.metric(model, flat), ppl, rel_tol=1e-4)
    # the same spec loads the same data again (as a Ray worker would)
    again = load_workload(wl.spec)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again.eval, wl.eval))


def test_jsonl_data_and_task_inferred(hf_dirs):
    wl = load_workload(hf_spec(str(hf_dirs["gpt"]), data=str(hf_dirs["jsonl"]), seq_len=16))
    assert wl.quality == "perplexity" and sum(len(x) for x, _ in wl.eval) == N_EVAL


def test_encoder_scores_cosine_to_its_fp32_outputs(hf_dirs):
    wl = load_workload(hf_spec(str(hf_dirs["bert"]), data=str(hf_dirs["text"]), task="encoder", seq_len=32))
    model = validate_workload(wl)
    assert wl.quality == "cosine" and getattr(model, "pooler", None) is None  # the pooler is not scored
    assert wl.evaluate(model) == pytest.approx(1.0, abs=1e-5)
    noisy = copy.deepcopy(model)             # perturbed weights: far from the fp32 outputs
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    assert wl.evaluate(noisy) < 0.9
    x, ref = wl.calib[0]
    assert float(wl.loss(model(x), ref)) == pytest.approx(0.0, abs=1e-5)


def test_missing_parts_are_one_line_errors(hf_dirs, tmp_path):
    from autocomp.testing.hf_dirs import save_tiny_model

    data = str(hf_dirs["text"])
    cases = {
        "no such directory": hf_spec(str(tmp_path / "nothing"), data=data),
        "no weights": hf_spec(str(save_tiny_model(tmp_path / "nw", with_weights=False)), data=data),
        "no tokenizer": hf_spec(str(save_tiny_model(tmp_path / "nt", with_tokenizer=False)), data=data),
        "--data": hf_spec(str(hf_dirs["gpt"])),
        "no such file": hf_spec(str(hf_dirs["gpt"]), data=str(tmp_path / "none.txt")),
        "exceeds the model's 64 positions": hf_spec(str(hf_dirs["gpt"]), data=data, seq_len=100),
    }
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    cases["holds no text"] = hf_spec(str(hf_dirs["gpt"]), data=str(empty))
    short = tmp_path / "short.txt"
    short.write_text("def f(x): return x")
    cases["at least 2 are needed"] = hf_spec(str(hf_dirs["gpt"]), data=str(short), seq_len=16)
    for msg, spec in cases.items():
        with pytest.raises(ModelSpecError, match=msg) as e:
            load_workload(spec)
        assert "\n" not in str(e.value), msg


def test_missing_transformers_is_one_line(hf_dirs, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)   # import transformers raises ImportError
    with pytest.raises(ModelSpecError, match="need transformers"):
        load_workload(hf_spec(str(hf_dirs["gpt"]), data=str(hf_dirs["text"])))


@pytest.mark.parametrize("task", ["causal-lm", "encoder"])
def test_ptq_does_per_worker_work_once(hf_dirs, task):
    """Tokenizing, the float model, its fp32 outputs and activation statistics: once, not per policy."""
    from autocomp.evaluators import get_evaluator
    from autocomp.modules import quantizable_layers
    from autocomp.policy import Choice, Policy

    wl = load_workload(hf_spec(str(hf_dirs["gpt" if task == "causal-lm" else "bert"]), data=str(hf_dirs["text"]),
                               task=task, seq_len=32))
    built = []
    factory = wl.model_factory
    wl.model_factory = lambda: built.append(1) or factory()
    ev = get_evaluator("ptq")
    ev.prepare(wl)
    float_model = wl.model()
    fp = wl.evaluate(float_model)
    calls = []
    float_model.register_forward_hook(lambda mod, *a: calls.append(mod is float_model))  # copies inherit it
    batches = [b[0] for b in wl.eval]
    names = [n for n, m in quantizable_layers(float_model) if type(m).__name__ != "Embedding"]
    qualities = [ev.evaluate(wl, Policy.uniform(names, Choice(w_bits=b, a_bits=8))).quality for b in (8, 2)]
    assert len(built) <= 1 and calls and not any(calls)   # the float model is built once and never re-run
    assert all(a is b[0] for a, b in zip(batches, wl.eval))   # the same tokenized batches
    assert abs(qualities[0] - fp) < abs(qualities[1] - fp)   # 8 bits stays closer to fp32 than 2 bits
