"""``hf:PATH``: a local Hugging Face model directory as a workload (nothing is downloaded).

The spec carries everything a Ray worker needs to load the same workload again::

    hf:PATH?data=FILE&task=causal-lm&seq=128&calib=32&eval=32

``PATH`` and ``FILE`` are percent-encoded (:func:`hf_spec` writes them; a path without ``%``,
``?`` or ``&`` may be written as is, spaces included). Keys:

* ``data`` (required): a text file, or JSONL with a ``"text"`` field (:mod:`autocomp.workloads.text`).
* ``task``: ``causal-lm`` (``AutoModelForCausalLM``; metric ``perplexity``, next-token
  cross-entropy for proxies) or ``encoder`` (``AutoModel``; metric ``cosine``: the mean cosine
  similarity of each token's last hidden state to the fp32 model's, with ``1 - cosine`` as the
  proxies' loss). Default: ``causal-lm`` when the config's architecture is a causal LM
  (``*ForCausalLM`` / ``*LMHeadModel``), else ``encoder``.
* ``seq`` (default 128): tokens per sequence; ``calib`` / ``eval`` (default 32 / 32): sequences.

The file's texts are tokenized with the directory's tokenizer (no special tokens; the
tokenizer's EOS, if it has one, between texts), cut into blocks of ``seq`` tokens and split as
:func:`autocomp.workloads.text.lm_splits` documents (evaluation = the last blocks). An encoder's
fp32 outputs are computed once when the workload loads (once per process) and kept as its
batches' targets.

Example:
    >>> hf_spec("/models/my gpt", data="/data/train.txt", task="causal-lm")
    'hf:/models/my%20gpt?data=/data/train.txt&task=causal-lm'
    >>> parse_hf_spec("/models/my%20gpt?data=x.txt&seq=64").seq_len
    64
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

import torch

from autocomp.errors import ModelSpecError
from autocomp.workload import Workload, cosine_fidelity, cosine_loss, cross_entropy, output_tensor, perplexity
from autocomp.workloads import text

TASKS = ("causal-lm", "encoder")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
_KEYS = {"data": str, "task": str, "seq": int, "calib": int, "eval": int}
_SAFE = "/:~._-+,@"


@dataclass(frozen=True)
class HFSpec:
    """The parts of an ``hf:`` spec (see the module docstring)."""

    path: str
    data: str | None = None
    task: str | None = None
    seq_len: int = 128
    n_calib: int = text.N_CALIB
    n_eval: int = text.N_EVAL

    def to_spec(self) -> str:
        """The ``hf:...`` string (keys left at their default are omitted)."""
        parts = [("data", self.data), ("task", self.task),
                 ("seq", None if self.seq_len == 128 else self.seq_len),
                 ("calib", None if self.n_calib == text.N_CALIB else self.n_calib),
                 ("eval", None if self.n_eval == text.N_EVAL else self.n_eval)]
        query = "&".join(f"{k}={quote(str(v), safe=_SAFE)}" for k, v in parts if v is not None)
        return "hf:" + quote(self.path, safe=_SAFE) + (f"?{query}" if query else "")


def hf_spec(path: str, data: str | None = None, task: str | None = None, seq_len: int | None = None) -> str:
    """The ``hf:`` spec of a model directory and its data (paths made absolute).

    Example:
        >>> hf_spec("/m", data="/d.jsonl", seq_len=64)
        'hf:/m?data=/d.jsonl&seq=64'
    """
    return HFSpec(_absolute(path), None if data is None else _absolute(data), task,
                  128 if seq_len is None else seq_len).to_spec()


def merge_spec(spec: str, data: str | None = None, task: str | None = None, seq_len: int | None = None) -> str:
    """``spec`` (``hf:...``) with the CLI's ``--data`` / ``--task`` / ``--seq-len`` put in (they win).

    Example:
        >>> merge_spec("hf:/m?seq=64", data="/d.txt")
        'hf:/m?data=/d.txt&seq=64'
    """
    s = parse_hf_spec(spec[len("hf:"):] if spec.startswith("hf:") else spec)
    return HFSpec(_absolute(s.path), _absolute(data) if data is not None else s.data, task or s.task,
                  s.seq_len if seq_len is None else seq_len, s.n_calib, s.n_eval).to_spec()


def parse_hf_spec(rest: str) -> HFSpec:
    """Parse what follows ``hf:``; raises a one-line :class:`ModelSpecError` for a bad key or value."""
    path, _, query = rest.partition("?")
    if not path.strip():
        raise ModelSpecError("model spec 'hf:': give a model directory, e.g. hf:./my-model --data train.txt")
    vals: dict = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k not in _KEYS:
            raise ModelSpecError(f"model spec 'hf:{rest}': unknown key {k!r} (keys: {', '.join(_KEYS)})")
        try:
            vals[k] = _KEYS[k](v)
        except ValueError:
            raise ModelSpecError(f"model spec 'hf:{rest}': {k}={v!r} is not an integer") from None
    s = HFSpec(unquote(path), vals.get("data"), vals.get("task"), vals.get("seq", 128), vals.get("calib", text.N_CALIB),
               vals.get("eval", text.N_EVAL))
    check_hf_spec(s)
    return s


def check_hf_spec(s: HFSpec) -> None:
    """The option values (no file is opened)."""
    if s.task is not None and s.task not in TASKS:
        raise ModelSpecError(f"unknown --task {s.task!r}: use {' or '.join(TASKS)}")
    for name, v, least in (("--seq-len", s.seq_len, 2), ("calib", s.n_calib, 1), ("eval", s.n_eval, 1)):
        if v < least:
            raise ModelSpecError(f"{name} must be at least {least}, got {v}")


def _absolute(p: str) -> str:
    return str(Path(p).expanduser().absolute())


def _import_transformers():
    # Offline before transformers (and huggingface_hub) read their settings at import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise ModelSpecError("hf: models need transformers, which is not installed: pip install 'autocomp[hf]'") from None
    transformers.logging.set_verbosity_error()  # e.g. "sequence longer than the model's maximum" while tokenizing
    return transformers


def check_directory(path: str) -> Path:
    """The model directory, checked: it exists, has a ``config.json``, weights and a tokenizer."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise ModelSpecError(f"hf:{path}: no such directory")
    if not (d / "config.json").is_file():
        raise ModelSpecError(f"hf:{path}: not a Hugging Face model directory (no config.json)")
    if not any((d / f).is_file() for f in WEIGHT_FILES):
        raise ModelSpecError(f"hf:{path}: no weights (none of {', '.join(WEIGHT_FILES[::2])})")
    if not any((d / f).is_file() for f in TOKENIZER_FILES):
        raise ModelSpecError(f"hf:{path}: no tokenizer (none of {', '.join(TOKENIZER_FILES[:2])}); "
                             "save one with tokenizer.save_pretrained(PATH)")
    return d


def _task_of(config, task: str | None) -> str:
    if task is not None:
        return task
    archs = getattr(config, "architectures", None) or []
    return "causal-lm" if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs) else "encoder"


def _token_stream(tok, texts: list[str]) -> list[int]:
    ids: list[int] = []
    sep = getattr(tok, "eos_token_id", None)
    for t in texts:
        if ids and sep is not None:
            ids.append(int(sep))
        ids.extend(tok(t, add_special_tokens=False)["input_ids"])
    return ids


def hf_workload(rest: str) -> Workload:
    """The workload of ``hf:rest`` (see the module docstring); raises one-line ModelSpecErrors."""
    s = parse_hf_spec(rest)
    tf = _import_transformers()
    d = check_directory(s.path)
    if s.data is None:
        raise ModelSpecError(f"hf:{s.path}: give the text to calibrate and evaluate on: --data FILE (text or JSONL)")
    texts = text.read_texts(s.data)   # before anything heavy loads: a bad file fails fast
    try:
        config = tf.AutoConfig.from_pretrained(d, local_files_only=True)
    except Exception as e:
        raise ModelSpecError(f"hf:{s.path}: cannot read config.json ({type(e).__name__}: {_line(e)})") from None
    task = _task_of(config, s.task)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if limit and s.seq_len > limit:
        raise ModelSpecError(f"--seq-len {s.seq_len} exceeds the model's {limit} positions")
    try:
        tok = tf.AutoTokenizer.from_pretrained(d, local_files_only=True)
    except Exception as e:
        raise ModelSpecError(f"hf:{s.path}: cannot load its tokenizer ({type(e).__name__}: {_line(e)})") from None
    calib, ev = text.lm_splits(_token_stream(tok, texts), s.seq_len, s.n_calib, s.n_eval, what=f"--data {s.data!r}")
    vocab = getattr(config, "vocab_size", None)
    if vocab and max(int(b[0].max()) for b in (*calib, *ev)) >= vocab:
        raise ModelSpecError(f"hf:{s.path}: its tokenizer yields ids beyond the model's vocabulary of {vocab}")
    name = Path(s.path).name or "hf"
    auto = tf.AutoModelForCausalLM if task == "causal-lm" else tf.AutoModel

    def load() -> torch.nn.Module:
        model = _from_pretrained(auto, d, task)
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False  # the key/value cache only costs memory here
        return model.eval()

    if task == "causal-lm":
        return Workload(name=name, model_factory=load, calib=calib, eval=ev, metric=perplexity, loss=cross_entropy,
                        quality="perplexity")
    model = load()
    # An encoder has no labels: its fp32 outputs are the targets, computed once here.
    calib, ev = _with_reference(model, calib), _with_reference(model, ev)
    return Workload(name=name, model_factory=lambda: model, calib=calib, eval=ev, metric=cosine_fidelity,
                    loss=cosine_loss, quality="cosine")


def _from_pretrained(auto, d: Path, task: str) -> torch.nn.Module:
    kwargs = {"local_files_only": True}
    if task == "encoder":
        kwargs["add_pooling_layer"] = False   # the pooler is not part of the hidden states scored
    try:
        try:
            return auto.from_pretrained(d, **kwargs)
        except TypeError:   # a model class without a pooler option
            kwargs.pop("add_pooling_layer", None)
            return auto.from_pretrained(d, **kwargs)
    except Exception as e:
        raise ModelSpecError(f"hf:{d}: cannot load the model ({type(e).__name__}: {_line(e)})") from None


def _with_reference(model: torch.nn.Module, batches: list) -> list:
    with torch.no_grad():
        return [(x, output_tensor(model(x)).detach().clone()) for x, _ in batches]


def _line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""
