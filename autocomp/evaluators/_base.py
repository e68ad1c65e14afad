"""The evaluator base class: how one policy of one workload becomes a :class:`~autocomp.metrics.Metrics`.

An evaluator has a ``name``, a frozen ``Options`` dataclass (validated when it is built: a bad
value raises a one-line :class:`~autocomp.errors.AutocompError`), an optional :meth:`Evaluator.setup`
for per-process state computed once per workload (PTQ's calibrated activation ranges), and
:meth:`Evaluator.evaluate`. Evaluators are plug-ins: they see values (policy, workload, metrics)
and never Ray, the store or the pipeline; :class:`autocomp.workers.pool.EvaluatorPool` hosts any
of them on warm Ray actors.

Placement: every ``Options`` derives from :class:`DeviceOptions` (``device``: ``cpu``, ``cuda``
or ``auto``; ``eval_dtype``: ``float32``, ``float16`` or ``bfloat16``). :meth:`Evaluator.prepare`
moves the workload's model and batches to the device once, before :meth:`Evaluator.setup`, and
returns the moved workload for :meth:`Evaluator.evaluate` to use; :meth:`Evaluator.precision`
is the autocast context the evaluation forward passes run in. The pool sets ``device`` for the
actors it places on GPUs. An ``Options`` class not derived from it runs on the CPU.

Example:
    >>> from dataclasses import dataclass
    >>> from autocomp.evaluators import Evaluator
    >>> from autocomp.metrics import Metrics
    >>> class Fixed(Evaluator):
    ...     name = "fixed"
    ...     @dataclass(frozen=True)
    ...     class Options:
    ...         value: float = 0.5
    ...     def evaluate(self, workload, policy):
    ...         return Metrics(policy.id, self.options.value, workload.quality)
    >>> Fixed(value=0.25).options
    Fixed.Options(value=0.25)
    >>> Fixed(colour="red")
    Traceback (most recent call last):
    ...
    autocomp.errors.AutocompError: evaluator 'fixed' has no option 'colour': its options are value
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from autocomp.devices import autocast, check_device, check_eval_dtype, local_device, on_device
from autocomp.errors import AutocompError
from autocomp.metrics import Metrics
from autocomp.policy import Policy
from autocomp.workload import Workload


@dataclass(frozen=True)
class DeviceOptions:
    """Where an evaluator runs; the base of every evaluator's ``Options``.

    Attributes:
        device: ``cpu`` (default), ``cuda``, or ``auto`` (CUDA when this process sees a GPU).
        eval_dtype: the autocast dtype of the evaluation forward passes (``float32``: none).
    """

    device: str = "cpu"
    eval_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_device(self.device, "device")
        check_eval_dtype(self.eval_dtype, "eval_dtype")


@dataclass(frozen=True)
class NoOptions(DeviceOptions):
    """The options of an evaluator that takes none (but where it runs)."""


class Evaluator:
    """Base class: subclasses set ``name`` (and ``Options``) and implement :meth:`evaluate`.

    Args:
        **options: fields of the evaluator's ``Options`` dataclass.

    Raises:
        AutocompError: an unknown option, or a value its ``Options.__post_init__`` rejects.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: whether an evaluation trains (QAT): the pipeline then runs it as Ray Tune trials, not on
    #: the warm actor pool that cheap evaluations share
    trains: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self.options = make_options(self.name or type(self).__name__, self.Options, options)
        self._ready: Workload | None = None   # the workload setup() ran for
        self._placed: Workload | None = None  # that workload on the device

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda``: where this evaluator's model and batches live."""
        return local_device(getattr(self.options, "device", "cpu"))

    def setup(self, workload: Workload) -> None:
        """Compute per-process state for ``workload`` once (default: none); see :meth:`prepare`."""

    def prepare(self, workload: Workload) -> Workload:
        """``workload`` on the device (moved once), :meth:`setup` run on it once; returns it.

        Example:
            >>> ev = get_evaluator("ptq", device="cpu")        # doctest: +SKIP
            >>> ev.prepare(wl) is wl        # on the CPU nothing moves   # doctest: +SKIP
            True
        """
        if self._ready is not workload:
            placed = on_device(workload, self.device)
            self.setup(placed)
            self._ready, self._placed = workload, placed
        return self._placed

    def precision(self):
        """The context the evaluation forward passes run in: autocast to ``eval_dtype``."""
        return autocast(self.device, getattr(self.options, "eval_dtype", "float32"))

    def evaluate(self, workload: Workload, policy: Policy) -> Metrics:  # pragma: no cover - abstract
        """Score ``policy`` on ``workload``: ``quality`` in the workload's quality metric, ``seconds``."""
        raise NotImplementedError

    def options_dict(self) -> dict[str, Any]:
        """The options as plain values (what an actor needs to build the same evaluator)."""
        return dataclasses.asdict(self.options)


def make_options(name: str, cls: type, options: Mapping[str, Any]) -> Any:
    """``cls(**options)`` with a one-line error for an option ``cls`` does not have."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in options if k not in fields]
    if unknown:
        have = ", ".join(fields) if fields else "none"
        raise AutocompError(f"evaluator {name!r} has no option {unknown[0]!r}: its options are {have}")
    try:
        return cls(**options)
    except AutocompError as e:      # DeviceOptions' checks do not know which evaluator they serve
        msg = str(e)
        raise AutocompError(msg if msg.startswith("evaluator ") else f"evaluator {name!r}: {msg}") from None
