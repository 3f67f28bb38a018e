"""Diagnostic codes of the plan stage, registered when `tiny_dsl.plan` is imported.

Plan-stage problems are warnings: a plan can always be built from a checked
program, but it can tell the author, before any money is spent, that it will
not fit the budget they set.
"""

from tiny_dsl.diagnostics import register

BUDGET_EXCEEDED = "W401"
BUDGET_UNPRICED = "W402"

register(
    BUDGET_EXCEEDED,
    "budget-exceeded",
    """The plan's estimated cost is above the scenario's `budget`. The warning
    points at the step where the running estimate crosses the budget: a run
    would stop there. Raise the budget, pick a cheaper model, or make the
    scenario smaller (fewer members, rounds or questions). Estimates count
    characters / 4 as tokens and are meant for budgeting, not billing.""",
)
register(
    BUDGET_UNPRICED,
    "budget-unpriced",
    """The scenario sets a `budget`, but the model has no entry in the price
    table, so the plan cannot tell whether the run fits it. The estimate of
    calls and tokens is still shown; compare it with your provider's prices.""",
)
