"""Contract suites for plug-ins, installed with autocomp (as ``optuna.testing`` is with Optuna).

Each family's contract is a pytest class without the ``Test`` prefix, so pytest collects it only
where a test module subclasses it. The subclass names the plug-in and runs every check autocomp's
own built-ins pass:

=======================  =====================================================================
:class:`ProxyContract`   ``proxy = "name"``: score == combine(parts), plain data, every (layer,
                         choice) covered, finite, validated frozen options, model untouched
:class:`AllocatorContract`  ``allocator = "name"``, ``options = {...}``: exact against brute
                         force, limits kept, infeasible budgets with the minimum, ties shared
:class:`EvaluatorContract`  ``evaluator = "name"``: the policy's :class:`~autocomp.metrics.Metrics`
                         in the workload's quality metric, reproducible, rebuilt from options
:class:`CostMetricContract`  ``metric = "name"``: vectorised == scalar costs, fp32, units,
                         formats, and budgets the allocators keep
:class:`QuantizerContract`  ``quantizer = "name"``: weights in the choice's format (codes in
                         range, scales per group), exact pruning, deterministic, model untouched
=======================  =====================================================================

Needs the ``test`` extra (``pip install 'autocomp[test]'``: pytest and hypothesis). Proxy and
evaluator suites run on the built-in ``digits`` workload (trained once, ~20 s, then cached).

Example (a test module of your own; the proxy's module registers it on import)::

    # test_my_proxy.py
    import my_package.proxies                       # registers "mine"
    from autocomp.testing import ProxyContract

    class TestMine(ProxyContract):
        proxy = "mine"
        bad_options = [({"scale": -1}, "scale must be positive")]

    $ python -m pytest -q test_my_proxy.py
"""
from __future__ import annotations

try:
    import hypothesis  # noqa: F401
    import pytest
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"autocomp.testing needs the test extra: pip install 'autocomp[test]' ({e})") from e

# Plain asserts in these modules then fail with pytest's introspection, as in a test module.
pytest.register_assert_rewrite("autocomp.testing.allocators", "autocomp.testing.costs",
                               "autocomp.testing.evaluators", "autocomp.testing.proxies",
                               "autocomp.testing.quantizers")

from autocomp.testing.allocators import AllocatorContract  # noqa: E402
from autocomp.testing.costs import CostMetricContract  # noqa: E402
from autocomp.testing.evaluators import EvaluatorContract  # noqa: E402
from autocomp.testing.proxies import ProxyContract  # noqa: E402
from autocomp.testing.quantizers import QuantizerContract  # noqa: E402

__all__ = ["AllocatorContract", "CostMetricContract", "EvaluatorContract", "ProxyContract", "QuantizerContract"]
