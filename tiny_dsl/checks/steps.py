"""The timeline: every step's references resolve and its numbers make sense.

Steps stay syntax nodes in the `Program` (the plan lowers them); what is
recorded here is which worlds the steps use and where each intervention is
delivered, for the analyses and the unused-declaration warnings.
"""

from __future__ import annotations

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context
from tiny_dsl.checks.values import as_float, read_int, show_number
from tiny_dsl.checks.worlds import check_conductor_in_group, covers, resolve_group
from tiny_dsl.diagnostics import Label
from tiny_dsl.syntax import ast

MAX_ROUNDS = 100
MANY_ROUNDS = 20
# Longer jumps are typos; the limits also keep the simulated clock within the calendar.
MAX_WAIT_DAYS = 3650  # ten years in one step
MAX_TOTAL_WAIT_DAYS = 36500  # a century in the whole timeline
SECONDS_PER_DAY = 86_400


def check_timeline(ctx: Context, timeline: ast.Timeline) -> None:
    """Check each step in order; checkpoint names are unique within the timeline."""
    checkpoints: dict[str, ast.Ident] = {}
    waited = 0.0
    for step in timeline.steps:
        if isinstance(step, ast.BroadcastStep | ast.AskStep):
            _step_world(
                ctx, step.world, "broadcast" if isinstance(step, ast.BroadcastStep) else "ask"
            )
        elif isinstance(step, ast.DeliverStep):
            check_deliver(ctx, step)
        elif isinstance(step, ast.RunStep):
            _step_world(ctx, step.world, "run")
            check_run_rounds(ctx, step)
        elif isinstance(step, ast.WaitStep):
            waited = check_wait(ctx, step, waited)
        elif isinstance(step, ast.InterviewStep):
            check_interview(ctx, step)
        elif isinstance(step, ast.ThinkStep):
            ctx.resolve(step.persona.name, step.persona.span, ("persona", "population"), "`think`")
        else:
            check_checkpoint(ctx, step, checkpoints)


def _step_world(ctx: Context, ident: ast.Ident, keyword: str) -> bool:
    if ctx.resolve(ident.name, ident.span, ("world",), f"`{keyword}`") is None:
        return False
    ctx.step_worlds.add(ident.name)
    return True


def check_deliver(ctx: Context, step: ast.DeliverStep) -> None:
    """`deliver I in W`: every target of I must be an agent of W."""
    found = ctx.resolve(
        step.intervention.name, step.intervention.span, ("intervention",), "`deliver`"
    )
    if not _step_world(ctx, step.world, "deliver in") or found is None:
        return
    ctx.delivered.setdefault(found.name, set()).add(step.world.name)
    intervention = ctx.interventions.get(found.name)
    world = ctx.worlds.get(step.world.name)
    if intervention is None or world is None:
        return
    missing = [t for t in intervention.targets if not covers(world.agents, t, ctx)]
    if missing:
        check_target_not_in_world(ctx, step, missing)


def check_target_not_in_world(
    ctx: Context, step: ast.DeliverStep, missing: list[m.GroupRef]
) -> None:
    """Targets of a delivered intervention who are not in the world it is delivered in."""
    names = ", ".join(f"`{t.text()}`" for t in missing)
    world = step.world.name
    ctx.report(
        diag.error(
            codes.TARGET_NOT_IN_WORLD,
            f"{names} {'is a target' if len(missing) == 1 else 'are targets'} of "
            f"`{step.intervention.name}` but not {'an agent' if len(missing) == 1 else 'agents'} "
            f"of world `{world}`",
            step.intervention.span,
            f"delivered in `{world}`",
            secondary=[
                Label(t.span, f"not an agent of `{world}`") for t in missing if t.span is not None
            ],
            help=[f"add {names} to the `agents` of `{world}`, or remove them from the targets"],
        )
    )


def check_run_rounds(ctx: Context, step: ast.RunStep) -> None:
    """`run W N rounds`: 1 to 100 rounds; more than 20 is allowed with a warning."""
    rounds = read_int(ctx, "run", step.rounds, 1, MAX_ROUNDS, "2")
    if rounds is not None and rounds > MANY_ROUNDS:
        ctx.report(
            diag.warning(
                codes.MANY_ROUNDS,
                f"{rounds} rounds is a long conversation: each round is one model call per agent",
                step.rounds.span,
                f"more than {MANY_ROUNDS} rounds",
                help=["check the cost with `tts plan`; a few rounds usually suffice"],
            )
        )


def check_wait(ctx: Context, step: ast.WaitStep, waited: float) -> float:
    """`wait` moves the simulated clock forward: not back, not nowhere, not off the calendar.

    Returns the time waited so far, this step included (when it is valid).
    """
    duration = step.duration
    if as_float(ctx, "wait", duration.amount) is None:
        return waited
    seconds = duration.seconds
    if seconds <= 0:
        problem = "longer than 0"
    elif seconds > MAX_WAIT_DAYS * SECONDS_PER_DAY:
        problem = f"at most {MAX_WAIT_DAYS} days"
    elif waited + seconds > MAX_TOTAL_WAIT_DAYS * SECONDS_PER_DAY:
        problem = f"at most {MAX_TOTAL_WAIT_DAYS} days in all the steps together"
    else:
        return waited + seconds
    ctx.report(
        diag.error(
            codes.OUT_OF_RANGE,
            f"`wait` must be {problem}, found {show_number(duration.amount)} {duration.unit}",
            duration.span,
            "out of range",
            help=["for example: `wait 1 day`"],
        )
    )
    return waited


def check_interview(ctx: Context, step: ast.InterviewStep) -> None:
    """`interview GROUP by P`: the group resolves, P is a persona not in the group."""
    members = resolve_group(ctx, step.group, "interview", "`interview`")
    name = step.interviewer.name
    if ctx.resolve(name, step.interviewer.span, ("persona",), "`interview ... by`") is None:
        return
    for member in members:
        if member.kind == "persona" and member.name == name and member.span is not None:
            check_conductor_in_group(
                ctx, name, step.interviewer.span, member.span, "interviewer", "interviewed"
            )


def check_checkpoint(ctx: Context, step: ast.CheckpointStep, seen: dict[str, ast.Ident]) -> None:
    """Checkpoint names are how a run is resumed or inspected: they must be unique."""
    first = seen.get(step.name.name)
    if first is None:
        seen[step.name.name] = step.name
        return
    ctx.report(
        diag.error(
            codes.DUPLICATE_NAME,
            f"checkpoint `{step.name.name}` is declared twice",
            step.name.span,
            "declared again here",
            secondary=[Label(first.span, "first declared here")],
            help=["give each checkpoint its own name"],
        )
    )
