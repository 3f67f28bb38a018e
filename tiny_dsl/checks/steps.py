"""The timeline: every step's references resolve and its numbers make sense.

Each step is lowered here, while it is checked, to its `model` dataclass
(names resolved, numbers read, the simulated time waited so far): this is the
one place that interprets timeline syntax. Also recorded are which worlds the
steps use and where each intervention is delivered, for the analyses and the
unused-declaration warnings.
"""

from __future__ import annotations

from datetime import timedelta

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context
from tiny_dsl.checks.values import as_float, read_int, show_number
from tiny_dsl.checks.worlds import check_conductor_in_group, covers, resolve_group
from tiny_dsl.diagnostics import Label
from tiny_dsl.syntax import ast
from tiny_dsl.syntax.parser import MAX_WAIT_DAYS

MAX_ROUNDS = 100
MAX_CONVERSE_TURNS = 50
MANY_ROUNDS = 20
# Longer jumps are typos; the limits also keep the simulated clock within the calendar.
MAX_TOTAL_WAIT_DAYS = 36500  # a century in the whole timeline
SECONDS_PER_DAY = 86_400


def check_timeline(ctx: Context, timeline: ast.Timeline) -> tuple[m.Step, ...]:
    """Check each step in order and lower those without errors; checkpoint names are
    unique within the timeline."""
    checkpoints: dict[str, ast.Ident] = {}
    elapsed = timedelta()
    # How far `run ... every` moved each world's clock, on top of the waits in `elapsed`.
    advanced: dict[str, timedelta] = {}
    lowered: list[m.Step] = []
    for step in timeline.steps:
        errors = ctx.error_count
        low: m.Step | None
        if isinstance(step, ast.BroadcastStep):
            low = m.BroadcastStep(step.world.name, step.text.value, step.span)
            _step_world(ctx, step.world, "broadcast")
        elif isinstance(step, ast.AskStep):
            low = m.AskStep(step.world.name, step.text.value, step.span)
            _step_world(ctx, step.world, "ask")
        elif isinstance(step, ast.DeliverStep):
            touch = step.touch.name if step.touch is not None else None
            now = elapsed + advanced.get(step.world.name, timedelta())
            low = m.DeliverStep(step.intervention.name, step.world.name, now, step.span, touch)
            check_deliver(ctx, step)
        elif isinstance(step, ast.RunStep):
            _step_world(ctx, step.world, "run")
            rounds = check_run_rounds(ctx, step)
            every = check_run_every(
                ctx, step, rounds, elapsed + advanced.get(step.world.name, timedelta())
            )
            low = None
            if rounds is not None and (step.every is None or every is not None):
                low = m.RunStep(step.world.name, rounds, step.span, every)
                if every is not None:
                    advanced[step.world.name] = advanced.get(step.world.name, timedelta()) + (
                        every * rounds
                    )
        elif isinstance(step, ast.WaitStep):
            low = check_wait(ctx, step, elapsed)
            if low is not None:
                elapsed += timedelta(seconds=low.seconds)
        elif isinstance(step, ast.InterviewStep):
            low = check_interview(ctx, step)
        elif isinstance(step, ast.ThinkStep):
            low = check_think(ctx, step)
        elif isinstance(step, ast.TellStep):
            low = check_tell(ctx, step)
        elif isinstance(step, ast.ConverseStep):
            low = check_converse(ctx, step)
        elif isinstance(step, ast.GoalStep):
            low = check_goal(ctx, step)
        elif isinstance(step, ast.ContextStep):
            low = m.ContextStep(step.world.name, step.text.value, step.span)
            _step_world(ctx, step.world, "context")
        else:
            check_checkpoint(ctx, step, checkpoints)
            low = m.CheckpointStep(step.name.name, step.span)
        if low is not None and ctx.error_count == errors:
            lowered.append(low)
    return tuple(lowered)


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
    world_known = _step_world(ctx, step.world, "deliver in")
    if found is None:
        return
    # Delivered even where the world is unknown (E201 says so): "never delivered"
    # on top of it would send the author looking for a missing step.
    delivered_in = ctx.delivered.setdefault(found.name, set())
    if not world_known:
        return
    delivered_in.add(step.world.name)
    intervention = ctx.interventions.get(found.name)
    if intervention is not None:
        check_deliver_touch(ctx, step, intervention)
    world = ctx.worlds.get(step.world.name)
    if intervention is None or world is None:
        return
    missing = [t for t in intervention.targets if not covers(world.agents, t, ctx)]
    if missing:
        check_target_not_in_world(ctx, step, missing)


def check_deliver_touch(ctx: Context, step: ast.DeliverStep, intervention: m.Intervention) -> None:
    """`deliver I.TOUCH` names one of I's touches; `deliver I` names a single-content I."""
    touches = [touch.name for touch in intervention.variants[0].touches]
    name = intervention.name
    if step.touch is None:
        if touches:
            ctx.report(
                diag.error(
                    codes.TOUCH_NOT_NAMED,
                    f"intervention `{name}` has several touches: say which one to deliver",
                    step.intervention.span,
                    f"touches: {', '.join(f'`{t}`' for t in touches)}",
                    help=[f"did you mean `deliver {name}.{touches[0]} in {step.world.name}`?"],
                )
            )
        return
    if not touches:
        ctx.report(
            diag.error(
                codes.NOT_MULTI_TOUCH,
                f"intervention `{name}` has no touches: its variants have one `content` each",
                step.touch.span,
                "not a touch",
                help=[f"deliver it whole: `deliver {name} in {step.world.name}`"],
            )
        )
    elif step.touch.name not in touches:
        suggestion = diag.did_you_mean(step.touch.name, touches)
        ctx.report(
            diag.error(
                codes.UNKNOWN_NAME,
                f"intervention `{name}` has no touch `{step.touch.name}`",
                step.touch.span,
                "no such touch",
                help=[suggestion or f"its touches are {', '.join(f'`{t}`' for t in touches)}"],
            )
        )


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


def check_run_rounds(ctx: Context, step: ast.RunStep) -> int | None:
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
    return rounds


def check_run_every(
    ctx: Context, step: ast.RunStep, rounds: int | None, elapsed: timedelta
) -> timedelta | None:
    """`every DURATION`: longer than 0, at most a `wait`'s longest jump, and all the
    rounds together within the timeline's century; None when absent or invalid."""
    duration = step.every
    if duration is None or as_float(ctx, "every", duration.amount) is None:
        return None
    seconds = duration.seconds
    total = seconds * (rounds or 1)
    if seconds <= 0:
        problem = "longer than 0"
    elif seconds > MAX_WAIT_DAYS * SECONDS_PER_DAY:
        problem = f"at most {MAX_WAIT_DAYS} days"
    elif elapsed.total_seconds() + total > MAX_TOTAL_WAIT_DAYS * SECONDS_PER_DAY:
        problem = f"at most {MAX_TOTAL_WAIT_DAYS} days in all the steps together"
    else:
        return timedelta(seconds=seconds)
    ctx.report(
        diag.error(
            codes.OUT_OF_RANGE,
            f"`every` must be {problem}, found {show_number(duration.amount)} {duration.unit}",
            duration.span,
            "out of range",
            help=["for example: `run panel 3 rounds every 1 day`"],
        )
    )
    return None


def check_wait(ctx: Context, step: ast.WaitStep, elapsed: timedelta) -> m.WaitStep | None:
    """`wait` moves the simulated clock forward: not back, not nowhere, not off the calendar.

    `elapsed` is the time the earlier steps waited; None when this wait is invalid.
    """
    duration = step.duration
    if as_float(ctx, "wait", duration.amount) is None:
        return None
    seconds = duration.seconds
    if seconds <= 0:
        problem = "longer than 0"
    elif seconds > MAX_WAIT_DAYS * SECONDS_PER_DAY:
        problem = f"at most {MAX_WAIT_DAYS} days"
    elif elapsed.total_seconds() + seconds > MAX_TOTAL_WAIT_DAYS * SECONDS_PER_DAY:
        problem = f"at most {MAX_TOTAL_WAIT_DAYS} days in all the steps together"
    else:
        return m.WaitStep(seconds, f"{duration.amount.raw} {duration.unit}", step.span)
    ctx.report(
        diag.error(
            codes.OUT_OF_RANGE,
            f"`wait` must be {problem}, found {show_number(duration.amount)} {duration.unit}",
            duration.span,
            "out of range",
            help=["for example: `wait 1 day`"],
        )
    )
    return None


def check_interview(ctx: Context, step: ast.InterviewStep) -> m.InterviewStep | None:
    """`interview GROUP by P`: the group resolves, P is a persona not in the group or
    an external agent."""
    members = resolve_group(ctx, step.group, "interview", "`interview`")
    name = step.interviewer.name
    where = "`interview ... by`"
    if ctx.resolve(name, step.interviewer.span, ("persona", "agent"), where) is None:
        return None
    for member in members:
        if member.kind == "persona" and member.name == name and member.span is not None:
            check_conductor_in_group(
                ctx, name, step.interviewer.span, member.span, "interviewer", "interviewed"
            )
    questions = tuple(question.value for question in step.questions)
    return m.InterviewStep(tuple(members), name, questions, step.span)


def check_think(ctx: Context, step: ast.ThinkStep) -> m.ThinkStep | None:
    """`think GROUP "text"`: the group resolves (personas, populations, segments)."""
    members = resolve_group(ctx, step.group, "think", "`think`")
    return m.ThinkStep(tuple(members), step.text.value, step.span) if members else None


def check_tell(ctx: Context, step: ast.TellStep) -> m.TellStep | None:
    """`tell GROUP "text"`: the group resolves."""
    members = resolve_group(ctx, step.group, "tell", "`tell`")
    return m.TellStep(tuple(members), step.text.value, step.span) if members else None


def check_goal(ctx: Context, step: ast.GoalStep) -> m.GoalStep | None:
    """`goal GROUP "text"`: the group resolves."""
    members = resolve_group(ctx, step.group, "goal", "`goal`")
    return m.GoalStep(tuple(members), step.text.value, step.span) if members else None


def check_converse(ctx: Context, step: ast.ConverseStep) -> m.ConverseStep | None:
    """`converse GROUP with P N turns "goal"`: the group resolves, P is a persona not in
    the group or an external agent, N is 1 to 50 turns on each side."""
    members = resolve_group(ctx, step.group, "converse", "`converse`")
    name = step.partner.name
    where = "`converse ... with`"
    partner = ctx.resolve(name, step.partner.span, ("persona", "agent"), where)
    for member in members:
        if member.kind == "persona" and member.name == name and member.span is not None:
            check_conductor_in_group(
                ctx, name, step.partner.span, member.span, "conversation partner", "group"
            )
    turns = read_int(ctx, "converse", step.turns, 1, MAX_CONVERSE_TURNS, "3")
    if partner is None or turns is None or not members:
        return None
    return m.ConverseStep(tuple(members), name, turns, step.goal.value, step.span)


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
