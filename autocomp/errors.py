"""User-facing errors: the CLI prints their message on one line and exits with code 2."""
from __future__ import annotations


class AutocompError(Exception):
    """An error the user can fix (bad input, infeasible budget, unreachable database)."""

    exit_code = 2


class ModelSpecError(AutocompError):
    """The ``--model`` spec does not name a loadable workload."""


class BudgetError(AutocompError):
    """A malformed budget string."""


class InfeasibleBudget(AutocompError):
    """No policy in the search space meets the budget.

    Attributes:
        minimum: smallest achievable value of each constraint's metric, in the constraint's unit.
    """

    def __init__(self, message: str, minimum: dict[str, float] | None = None):
        super().__init__(message)
        self.minimum = dict(minimum or {})


class SearchSpaceError(AutocompError):
    """A malformed or inconsistent search space."""


class StoreError(AutocompError):
    """The study database cannot be opened, written, or does not hold what was asked for."""


class VersionError(AutocompError, ValueError):
    """A serialised value (policy, budget, metrics ...) of a version this autocomp cannot read."""
