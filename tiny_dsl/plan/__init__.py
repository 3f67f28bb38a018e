"""Stage 3: a checked `Program` to an execution `Plan`, and the plan's human view.

`compile_plan` lowers; `render_plan` draws what `tts plan` prints;
`plan.model_dump_json(indent=2)` is the artifact `tts plan --json` writes and
`tts run` reads back with `Plan.model_validate_json`.
"""

from tiny_dsl.plan.compile import compile_plan, plan_diagnostics
from tiny_dsl.plan.estimate import (
    DEFAULT_MAX_CALLS,
    EMBEDDED_MODEL,
    budget_diagnostics,
    price_for,
    run_refusals,
)
from tiny_dsl.plan.hashing import PROMPT_VERSION, canonical_json
from tiny_dsl.plan.model import SCHEMA_VERSION, Plan
from tiny_dsl.plan.render import render_plan

__all__ = [
    "DEFAULT_MAX_CALLS",
    "EMBEDDED_MODEL",
    "PROMPT_VERSION",
    "SCHEMA_VERSION",
    "Plan",
    "budget_diagnostics",
    "canonical_json",
    "compile_plan",
    "plan_diagnostics",
    "price_for",
    "render_plan",
    "run_refusals",
]
