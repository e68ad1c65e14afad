"""The options of QAT trials (``--qat 'key=value,...'``) and the names they give a trial.

No Ray here: the CLI checks ``--qat`` with these before anything runs.
A trial's options are the ``qat`` evaluator's, validated by its ``Options``
(:mod:`autocomp.evaluators.qat`) and kept as the non-default ones: they name the trial's stored
evaluation kind, ``qat:<hash>`` (:func:`trial_kind`), so two options sets are two trials and a
default added to the evaluator later renames nothing.

Example:
    >>> from autocomp.trial_options import parse_options, trial_kind
    >>> parse_options("epochs=1,lr=0.002,estimator=ste,learn_scales=true")
    {'epochs': 1, 'lr': 0.002, 'estimator': 'ste', 'learn_scales': True}
    >>> trial_kind({"epochs": 1})
    'qat:81473cf0b7'
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

from autocomp.errors import AutocompError
from autocomp.evaluators import evaluator_class

KIND = "qat"
# the evaluator's placement options: set by --device / --eval-dtype, never by --qat
PLACEMENT = {"device": "--device", "eval_dtype": "--eval-dtype"}


def parse_options(text: str | None) -> dict[str, Any]:
    """``key=value,...`` -> a dict; values read as int, float, true/false, none, else text.

    Raises:
        AutocompError: an item without ``=``, an empty or repeated key.
    """
    out: dict[str, Any] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise AutocompError(f"--qat: {item!r} is not key=value (e.g. --qat 'epochs=1,lr=0.002')")
        if key in out:
            raise AutocompError(f"--qat: {key!r} is given twice")
        out[key] = _value(raw)
    return out


def _value(raw: str) -> Any:
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def qat_fields() -> dict[str, Any]:
    """The ``qat`` evaluator's option names and their defaults."""
    opts = evaluator_class(KIND).Options
    return {f.name: (f.default if f.default is not dataclasses.MISSING else None) for f in dataclasses.fields(opts)}


def qat_options(options: Mapping[str, Any], steps: int | None = None, seed: int = 0) -> dict[str, Any]:
    """The trials' fixed options: ``options`` (``--qat``), ``steps`` (``--trial-steps``) and the
    search ``seed`` when ``options`` sets none, validated by the evaluator's ``Options`` and given
    back as the non-default ones (what names a trial).

    Raises:
        AutocompError: a bad option or value (the evaluator's one-line message), or ``steps``
            given twice with different values.
    """
    from autocomp.evaluators._base import make_options

    opts = dict(options)
    for key, flag in PLACEMENT.items():   # where a trial runs is not one of its options: it names no trial
        if key in opts:
            raise AutocompError(f"--qat: {key} is not a trial option: use {flag}")
    if steps is not None:
        if opts.get("steps", steps) != steps:
            raise AutocompError(f"--trial-steps {steps} and --qat steps={opts['steps']} disagree: give one")
        opts["steps"] = steps
    opts.setdefault("seed", seed)
    made = make_options(KIND, evaluator_class(KIND).Options, opts)
    defaults = qat_fields()
    return {k: v for k, v in dataclasses.asdict(made).items() if k in opts and v != defaults.get(k)}


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def trial_kind(options: Mapping[str, Any]) -> str:
    """The evaluation kind of a QAT trial with ``options`` (its non-default evaluator options)."""
    return f"{KIND}:{_hash(dict(options))}"


def trial_group(options: Mapping[str, Any], per_policy: int) -> str:
    """What names one trials run's set of trials: the fixed options, sampled or not (not M, so
    raising M adds trials to the same set)."""
    return _hash({"fixed": dict(options), "sampled": per_policy > 1})
