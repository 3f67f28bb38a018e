"""Diagnostic codes of the plan stage, registered when `tiny_dsl.plan` is imported.

Plan-stage problems are warnings: a plan can always be built from a checked
program, but it can tell the author, before any money is spent, that it will
not fit the budget they set.
"""

from tiny_dsl.diagnostics import register

BUDGET_EXCEEDED = "W401"
BUDGET_UNPRICED = "W402"
CALLS_EXCEED_LIMIT = "W403"
# `tts run` refuses a plan over its limits before any model is called.
RUN_CALLS_EXCEED_LIMIT = "E501"
RUN_OVER_BUDGET = "E502"

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
register(
    CALLS_EXCEED_LIMIT,
    "calls-exceed-limit",
    """The plan's estimated number of LLM calls is above the scenario's
    `max_calls`, or above 10,000 when the scenario sets no `max_calls`. The
    warning points at the statement where the running count crosses the
    limit; `tts run` will refuse to start (E501) unless `--allow-over-budget`.
    A number typed with a zero too many (a population of `size 12000` in a
    focus group that runs 10 rounds) is the usual cause: fix it, or raise
    `max_calls` when the scenario really is that large.""",
)
register(
    RUN_CALLS_EXCEED_LIMIT,
    "run-calls-exceed-limit",
    """`tts run` refused to start because the plan's estimated number of LLM
    calls is above the scenario's `max_calls` (10,000 when it sets none).
    Nothing was sent to any model. The diagnostic points at the statement
    where the count crosses the limit and says how many calls it makes. Fix
    the statement if a number is a typo, raise `max_calls`, or pass
    `--allow-over-budget` to start anyway (an explicit `max_calls` still stops
    the run when it is reached).""",
)
register(
    RUN_OVER_BUDGET,
    "run-over-budget",
    """`tts run` refused to start because the plan's estimated cost is above
    the scenario's `budget`. Nothing was sent to any model. The diagnostic
    points at the statement where the running estimate crosses the budget.
    Make the scenario smaller, choose a cheaper model, raise `budget`, or
    pass `--allow-over-budget` to start anyway (the budget still stops the
    run when it is spent).""",
)
