"""The plan compiler: goldens, determinism, the hash chain, sampling and assignment.

Most tests build a checked `Program` by hand (`build_fixture`) from a scenario
text that exercises every step kind: timeline steps and analyses are the real
parser's, lowered as the checker lowers them (`_lowered_timeline`,
`_lowered_analyses`: the fixture is not a scenario the checker accepts, its
funnel has an `int` stage and `base` is declared here), declarations are
written out as the checker would produce them, so edits to the text and to
single definitions are easy to make. Goldens,
invariants, determinism and the hash chain are also tested on the four
normative examples through `tiny_dsl.checks.check_file`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chi_square import chi_square_p
from tests.conftest import ROOT, SCENARIOS
from tests.golden import assert_golden
from tiny_dsl.checks import check_file, check_source
from tiny_dsl.checks import model as checked
from tiny_dsl.checks.model import (
    Constraint,
    Demographics,
    Distribution,
    Extraction,
    FieldSpec,
    Fragment,
    GroupRef,
    Intervention,
    OutputSpec,
    Persona,
    Population,
    Program,
    Segment,
    Settings,
    Share,
    Variant,
    World,
)
from tiny_dsl.diagnostics import render_text
from tiny_dsl.plan import Plan, budget_diagnostics, compile_plan, price_for, render_plan
from tiny_dsl.plan.estimate import (
    ACT_OUTPUT_TOKENS,
    EMBEDDED_MODEL,
    EXTRACT_OUTPUT_TOKENS,
    GENERATE_OUTPUT_TOKENS,
    MEMORY_LOOKBACK_ITEMS,
    MEMORY_PREFIX_ITEMS,
)
from tiny_dsl.plan.model import AnalyzeStep, AskStep, DeliverStep
from tiny_dsl.plan.render import CACHED, WIDTH
from tiny_dsl.plan.sampling import MemberSampler, assign_arms, control_count, member_rng
from tiny_dsl.source import SourceFile, Span
from tiny_dsl.syntax import ast, parse

PLAN_CASES = ROOT / "tests" / "cases" / "plan"

FIXTURE_PATH = "fixture.tts"
FIXTURE = """\
# A scenario that uses every step kind.
scenario plan_fixture {
  title "Plan fixture"
  seed 42
  model "gpt-4o-mini"
  budget 5.00 usd
}

persona lisa {
  name "Lisa Carter"
  age 28
  occupation { title "Data scientist" }
}
persona mia { name "Mia Okafor"; age 35; occupation "Market research moderator" }
persona sam { name "Sam Reyes"; occupation "UX researcher" }

population shoppers {
  from base
  size 30
  segment young {
    size 10
    age 25..35
    particularities "Students and young professionals."
    fragments [frugal]
  }
  segment northerners {
    size 8
    region [north]
  }
}

world store {
  mode survey
  agents shoppers
  context "An online shop."
  start "2025-03-03 08:00"
}

world panel {
  mode focus_group
  agents lisa, shoppers.young
  moderator mia
  context "A focus group."
}

intervention promo {
  channel email
  targets shoppers
  control 20%
  assign stratified by segment
  variant a { content "Save 20% today."; timing morning }
  variant b { content "Free shipping."; timing "16:30" }
  variant c { content "A gift with every order." }
}

intervention nudge {
  channel push
  targets shoppers
  variant only { content "Your basket misses you."; timing evening }
}

timeline {
  deliver promo in store
  wait 1 day
  deliver nudge in store
  ask store "Would you buy now?"
  broadcast panel "Welcome, everyone."
  run panel 2 rounds
  interview shoppers.northerners, lisa by sam "What stops you?", "What would help?"
  think lisa "I am tired of ads."
  checkpoint done
  ask store "Anything else?"
}

extract from store {
  intent int 1..10 "Purchase intent"
  opened bool "Whether the email was opened"
  mood enum [happy, neutral, annoyed]
}

analyze {
  compare intent by promo
  summarize intent by segment
  funnel opened, intent
  expect share(opened) > 40%
  expect share(mood == annoyed) < 25%
  expect mean(intent) between 1 and 10
}
"""

BASE = Demographics(
    name="base",
    title="A small country",
    description="Adults of a small country.",
    source="made up for tests",
    distributions=(
        Distribution(
            "age",
            (
                Share("18-24", 0.2, 18, 24),
                Share("25-34", 0.3, 25, 34),
                Share("35-44", 0.3, 35, 44),
                Share("45-64", 0.2, 45, 64),
            ),
            span=None,  # type: ignore[arg-type]
        ),
        Distribution(
            "region",
            # As the checker gives it: the undeclared 10% goes to `other`.
            (Share("north", 0.25), Share("south", 0.45), Share("east", 0.2), Share("other", 0.1)),
            span=None,  # type: ignore[arg-type]
        ),
    ),
    span=None,  # type: ignore[arg-type]
)


# ------------------------------------------------------------------ fixtures


def _declarations(module: ast.Module) -> dict[str, Span]:
    """Span of each named declaration, and of the blocks that have no name."""
    spans: dict[str, Span] = {}
    for declaration in module.declarations:
        name = getattr(declaration, "name", None)
        if isinstance(declaration, ast.Scenario | ast.Extract):
            spans[type(declaration).__name__] = declaration.span
        elif isinstance(name, ast.Ident):
            spans[name.name] = declaration.span
    return spans


# The fixture's personas; its other group name, `shoppers`, is a population.
FIXTURE_PERSONAS = ("lisa", "mia", "sam")


def _group_ref(ref: ast.Ref) -> GroupRef:
    if len(ref.parts) == 2:
        return GroupRef("segment", ref.parts[0], ref.parts[1])
    kind = "persona" if ref.parts[0] in FIXTURE_PERSONAS else "population"
    return GroupRef(kind, ref.parts[0])


def _lowered_timeline(timeline: ast.Timeline) -> tuple[checked.Step, ...]:
    """The fixture's timeline as `tiny_dsl.checks.steps` lowers it."""
    steps: list[checked.Step] = []
    elapsed = timedelta()
    for step in timeline.steps:
        match step:
            case ast.BroadcastStep():
                steps.append(checked.BroadcastStep(step.world.name, step.text.value, step.span))
            case ast.DeliverStep():
                steps.append(
                    checked.DeliverStep(step.intervention.name, step.world.name, elapsed, step.span)
                )
            case ast.AskStep():
                steps.append(checked.AskStep(step.world.name, step.text.value, step.span))
            case ast.RunStep():
                rounds = step.rounds.value
                assert isinstance(rounds, int)
                steps.append(checked.RunStep(step.world.name, rounds, step.span))
            case ast.WaitStep(duration=duration):
                written = f"{duration.amount.raw} {duration.unit}"
                steps.append(checked.WaitStep(duration.seconds, written, step.span))
                elapsed += timedelta(seconds=duration.seconds)
            case ast.InterviewStep():
                group = tuple(_group_ref(ref) for ref in step.group)
                questions = tuple(question.value for question in step.questions)
                steps.append(
                    checked.InterviewStep(group, step.interviewer.name, questions, step.span)
                )
            case ast.ThinkStep():
                thinkers = tuple(_group_ref(ref) for ref in step.group)
                steps.append(checked.ThinkStep(thinkers, step.text.value, step.span))
            case ast.CheckpointStep():
                steps.append(checked.CheckpointStep(step.name.name, step.span))
    return tuple(steps)


def _bound(bound: ast.Number | ast.Percent) -> float:
    return bound.fraction if isinstance(bound, ast.Percent) else float(bound.value)


def _lowered_analyses(analyze: ast.Analyze, source: SourceFile) -> tuple[checked.Analysis, ...]:
    """The fixture's analyses as `tiny_dsl.checks.results` lowers them."""
    analyses: list[checked.Analysis] = []
    for statement in analyze.statements:
        text = " ".join(source.text[statement.span.start : statement.span.end].split())
        match statement:
            case ast.CompareStmt():
                analyses.append(
                    checked.CompareAnalysis(
                        statement.field.name, statement.by.name, text, statement.span
                    )
                )
            case ast.SummarizeStmt():
                analyses.append(
                    checked.SummarizeAnalysis(
                        statement.field.name, statement.by.name, text, statement.span
                    )
                )
            case ast.FunnelStmt():
                fields = tuple(field.name for field in statement.fields)
                analyses.append(checked.FunnelAnalysis(fields, text, statement.span))
            case ast.ExpectBetween() | ast.ExpectCompare():
                written = statement.aggregate
                member = written.value.dotted if isinstance(written.value, ast.Ref) else None
                aggregate = checked.Aggregate(
                    written.function.name, written.field.name, written.comparator, member
                )
                if isinstance(statement, ast.ExpectBetween):
                    low, high = _bound(statement.low), _bound(statement.high)
                    analyses.append(
                        checked.ExpectAnalysis(
                            aggregate, "between", text, statement.span, low=low, high=high
                        )
                    )
                else:
                    analyses.append(
                        checked.ExpectAnalysis(
                            aggregate,
                            statement.comparator,
                            text,
                            statement.span,
                            bound=_bound(statement.bound),
                        )
                    )
    return tuple(analyses)


def _property_span(module: ast.Module, key: str) -> Span | None:
    """Where the scenario block sets `key`, as `Settings` records it."""
    scenario = next(d for d in module.declarations if isinstance(d, ast.Scenario))
    for entry in scenario.body.entries:
        if isinstance(entry, ast.Property) and ast.key_text(entry.key) == key:
            return entry.span
    return None


def build_fixture(text: str = FIXTURE, *, size: int = 30, **settings: object) -> Program:
    """The checked program of `text` (a variant of FIXTURE), written out by hand.

    `size` resizes the population (its `general` segment takes the change);
    keyword settings override the scenario's."""
    source = SourceFile(FIXTURE_PATH, text)
    module, problems = parse(source)
    assert problems == []
    at = _declarations(module)
    timeline = next(d for d in module.declarations if isinstance(d, ast.Timeline))
    analyze = next(d for d in module.declarations if isinstance(d, ast.Analyze))
    values: dict[str, object] = {
        "name": "plan_fixture",
        "title": "Plan fixture",
        "description": "",
        "seed": 42,
        "model": "gpt-4o-mini",
        "provider": None,
        "base_url": None,
        "temperature": 0.7,
        "budget_usd": 5.0,
        "max_concurrency": 8,
        "max_calls": None,
        "engine": "builtin",
        "span": at["Scenario"],
        "budget_span": _property_span(module, "budget"),
        "max_calls_span": _property_span(module, "max_calls"),
    }
    values.update(settings)
    frugal = {"preferences": {"likes": ["Discounts."]}, "behaviors": ["Compares prices."]}
    pop = at["shoppers"]
    return Program(
        root=FIXTURE_PATH,
        sources={FIXTURE_PATH: source},
        settings=Settings(**values),  # type: ignore[arg-type]
        personas={
            "lisa": Persona(
                "lisa",
                {"name": "Lisa Carter", "age": 28, "occupation": {"title": "Data scientist"}},
                (),
                None,
                at["lisa"],
            ),
            "mia": Persona(
                "mia",
                {"name": "Mia Okafor", "age": 35, "occupation": "Market research moderator"},
                (),
                None,
                at["mia"],
            ),
            "sam": Persona(
                "sam", {"name": "Sam Reyes", "occupation": "UX researcher"}, (), None, at["sam"]
            ),
        },
        fragments={"frugal": Fragment("frugal", frugal, None, at["Scenario"])},
        demographics={"base": replace(BASE, span=at["Scenario"])},
        populations={
            "shoppers": Population(
                "shoppers",
                "base",
                size,
                (
                    Segment(
                        "young",
                        10,
                        (Constraint("age", 25, 35),),
                        "Students and young professionals.",
                        ("frugal",),
                        pop,
                    ),
                    Segment(
                        "northerners", 8, (Constraint("region", labels=("north",)),), "", (), pop
                    ),
                    Segment("general", size - 18, (), "", (), pop),
                ),
                "",
                pop,
            )
        },
        worlds={
            "store": World(
                "store",
                "survey",
                (GroupRef("population", "shoppers"),),
                None,
                "An online shop.",
                datetime(2025, 3, 3, 8, 0),
                at["store"],
            ),
            "panel": World(
                "panel",
                "focus_group",
                (GroupRef("persona", "lisa"), GroupRef("segment", "shoppers", "young")),
                "mia",
                "A focus group.",
                datetime(2025, 1, 1, 9, 0),
                at["panel"],
            ),
        },
        interventions={
            "promo": Intervention(
                "promo",
                "email",
                (GroupRef("population", "shoppers"),),
                0.2,
                "stratified",
                "segment",
                (
                    Variant("a", "Save 20% today.", "morning", at["promo"]),
                    Variant("b", "Free shipping.", "16:30", at["promo"]),
                    Variant("c", "A gift with every order.", None, at["promo"]),
                ),
                at["promo"],
            ),
            "nudge": Intervention(
                "nudge",
                "push",
                (GroupRef("population", "shoppers"),),
                0.0,
                "random",
                None,
                (Variant("only", "Your basket misses you.", "evening", at["nudge"]),),
                at["nudge"],
            ),
        },
        timeline=_lowered_timeline(timeline),
        extractions=(
            Extraction(
                "store",
                (
                    FieldSpec("intent", "int", "Purchase intent", 1, 10),
                    FieldSpec("opened", "bool", "Whether the email was opened"),
                    FieldSpec("mood", "enum", "", members=("happy", "neutral", "annoyed")),
                ),
                at["Extract"],
            ),
        ),
        analyses=_lowered_analyses(analyze, source),
        output=OutputSpec(("csv",), None, None),
    )


@pytest.fixture(scope="module")
def fixture_plan() -> Plan:
    return compile_plan(build_fixture())


def example_program(path: Path) -> Program:
    """A scenario checked by the real checker (path relative to the working directory)."""
    result = check_file(path)
    errors = [d for d in result.diagnostics if d.is_error]
    assert not errors, render_text(errors, result.sources)
    assert result.program is not None
    return result.program


def compile_text(text: str = FIXTURE, **kwargs: object) -> Plan:
    return compile_plan(build_fixture(text, **kwargs))  # type: ignore[arg-type]


def hashes(plan: Plan) -> dict[str, str]:
    return {step.id: step.hash for step in plan.steps}


# The word a step's statement starts with, where it is not the step's kind.
_FIRST_WORDS = {
    "generate": {"population"},
    "analyze": {"compare", "summarize", "funnel", "expect"},
}


def _assert_invariants(plan: Plan, program: Program) -> None:
    """What must hold of every plan: unique ids, origins at their statements, a lossless
    JSON form, unique agents, and the plan hash at the end of the chain."""
    ids = [step.id for step in plan.steps]
    assert len(ids) == len(set(ids))
    for step in plan.steps:
        origin = step.origin
        source = program.sources[origin.file]
        assert 1 <= origin.line <= source.line_count
        words = source.line_text(origin.line)[origin.column - 1 :].split()
        assert words, f"{step.id}: {origin} points at nothing"
        # The offsets and the line/column agree, and the region is the statement.
        assert source.position(origin.start) == (origin.line, origin.column)
        assert source.text[origin.start : origin.end].split()[0] == words[0]
        assert words[0] in _FIRST_WORDS.get(step.kind, {step.kind}), (step.id, words[0])
    assert Plan.model_validate_json(plan.model_dump_json(indent=2)) == plan
    agent_ids = [agent.id for agent in plan.agents]
    assert len(agent_ids) == len(set(agent_ids))
    assert plan.plan_hash == plan.steps[-1].hash


# ------------------------------------------------------------------- goldens


def test_fixture_golden(fixture_plan: Plan) -> None:
    assert_golden(render_plan(fixture_plan), PLAN_CASES / "fixture.plan.txt")
    assert_golden(fixture_plan.model_dump_json(indent=2) + "\n", PLAN_CASES / "fixture.plan.json")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_example_golden(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    program = example_program(path.relative_to(ROOT))
    plan = compile_plan(program)
    _assert_invariants(plan, program)
    assert_golden(render_plan(plan), PLAN_CASES / f"{path.stem}.plan.txt")
    assert_golden(plan.model_dump_json(indent=2) + "\n", PLAN_CASES / f"{path.stem}.plan.json")


# ---------------------------------------------------------------- invariants


def test_fixture_invariants(fixture_plan: Plan) -> None:
    _assert_invariants(fixture_plan, build_fixture())


def test_step_ids_are_readable_and_in_plan_order(fixture_plan: Plan) -> None:
    assert [step.id for step in fixture_plan.steps] == [
        "01-generate-shoppers",
        "02-deliver-promo",
        "03-wait-1-day",
        "04-deliver-nudge",
        "05-ask-store",
        "06-broadcast-panel",
        "07-run-panel-r1",
        "08-run-panel-r2",
        "09-interview-shoppers.northerners+lisa",
        "10-think-lisa",
        "11-checkpoint-done",
        "12-ask-store",
        "13-extract-store",
        "14-analyze",
    ]


def test_agents_are_the_used_personas_then_members(fixture_plan: Plan) -> None:
    ids = [agent.id for agent in fixture_plan.agents]
    assert ids[:3] == ["lisa", "mia", "sam"]
    assert ids[3:] == [f"shoppers/{i:03d}" for i in range(1, 31)]
    member = fixture_plan.agent("shoppers/001")
    assert member.segment == "young"
    assert member.fragments == [
        {"preferences": {"likes": ["Discounts."]}, "behaviors": ["Compares prices."]}
    ]
    assert member.particularities == "Students and young professionals."
    assert fixture_plan.agent("shoppers/011").segment == "northerners"
    assert fixture_plan.agent("shoppers/019").segment == "general"


def test_member_ids_widen_past_999() -> None:
    plan = compile_text(size=1000)
    assert plan.agents[3].id == "shoppers/0001"
    assert plan.agents[-1].id == "shoppers/1000"


def test_worlds_broadcast_speaker_and_expanded_groups(fixture_plan: Plan) -> None:
    panel = fixture_plan.world("panel")
    assert panel.agents == ["lisa", *[f"shoppers/{i:03d}" for i in range(1, 11)]]
    assert panel.moderator == "mia"
    assert fixture_plan.world("store").start == "2025-03-03T08:00:00"
    broadcast = next(step for step in fixture_plan.steps if step.kind == "broadcast")
    assert broadcast.speaker == "mia"
    interview = next(step for step in fixture_plan.steps if step.kind == "interview")
    assert interview.agents == [*[f"shoppers/{i:03d}" for i in range(11, 19)], "lisa"]
    assert interview.questions == ["What stops you?", "What would help?"]
    think = next(step for step in fixture_plan.steps if step.kind == "think")
    assert think.agents == ["lisa"]


def test_deliveries_follow_assignment_and_the_simulated_clock(fixture_plan: Plan) -> None:
    promo, nudge = (step for step in fixture_plan.steps if isinstance(step, DeliverStep))
    assignment = fixture_plan.interventions[0].assignment
    assert {d.agent: d.variant for d in promo.deliveries} == {
        agent: arm for agent, arm in assignment.items() if arm != "control"
    }
    assert promo.control == [agent for agent, arm in assignment.items() if arm == "control"]
    times = {d.variant: d.time for d in promo.deliveries}
    # morning, "16:30", and no timing (the clock as it stands) on the world's first day
    assert times == {
        "a": "2025-03-03T09:00:00",
        "b": "2025-03-03T16:30:00",
        "c": "2025-03-03T08:00:00",
    }
    # after `wait 1 day`, evening of the next day
    assert {d.time for d in nudge.deliveries} == {"2025-03-04T19:00:00"}
    assert nudge.control == [] and len(nudge.deliveries) == 30
    assert {d.channel for d in nudge.deliveries} == {"push"}


def test_analyses_are_resolved(fixture_plan: Plan) -> None:
    analyze = fixture_plan.steps[-1]
    assert isinstance(analyze, AnalyzeStep)
    compare, summarize, funnel, share, share_of, mean = analyze.analyses
    assert (compare.kind, compare.field, compare.by) == ("compare", "intent", "promo")
    assert (summarize.kind, summarize.by) == ("summarize", "segment")
    assert funnel.fields == ["opened", "intent"]
    assert (share.aggregate, share.match_comparator, share.match_value) == ("share", None, None)
    assert (share.comparator, share.bound) == (">", 0.4)
    assert (share_of.field, share_of.match_comparator, share_of.match_value) == (
        "mood",
        "==",
        "annoyed",
    )
    assert (share_of.comparator, share_of.bound) == ("<", 0.25)
    assert (mean.comparator, mean.low, mean.high) == ("between", 1.0, 10.0)
    assert mean.text == "expect mean(intent) between 1 and 10"


def test_json_round_trip(fixture_plan: Plan) -> None:
    text = fixture_plan.model_dump_json(indent=2)
    again = Plan.model_validate_json(text)
    assert again == fixture_plan
    assert again.model_dump_json(indent=2) == text


def _all_plans_json() -> str:
    """The fixture's plan and every example's, as JSON (run in a fresh process too)."""
    plans = [compile_plan(build_fixture())]
    plans.extend(compile_plan(example_program(path.relative_to(ROOT))) for path in SCENARIOS)
    return "\n".join(plan.model_dump_json(indent=2) for plan in plans)


def test_plans_are_identical_across_processes_and_hash_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    script = "from tests.test_plan import _all_plans_json; print(_all_plans_json())"
    outputs = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] == _all_plans_json() + "\n"


def test_compiling_twice_gives_the_same_plan(fixture_plan: Plan) -> None:
    assert compile_text().model_dump_json() == fixture_plan.model_dump_json()


# ---------------------------------------------------------------- hash chain


def _changed(before: Plan, after: Plan) -> list[str]:
    assert [s.id for s in before.steps] == [s.id for s in after.steps]
    return [a.id for a, b in zip(before.steps, after.steps, strict=True) if a.hash != b.hash]


def test_changing_the_last_step_changes_only_the_last_hash(fixture_plan: Plan) -> None:
    edited = compile_text(FIXTURE.replace("between 1 and 10", "between 2 and 9"))
    assert _changed(fixture_plan, edited) == ["14-analyze"]
    assert edited.plan_hash != fixture_plan.plan_hash


def test_changing_an_early_step_changes_every_later_hash(fixture_plan: Plan) -> None:
    edited = compile_text(FIXTURE.replace("wait 1 day", "wait 2 days"))
    ids = [step.id for step in fixture_plan.steps]
    assert [s.id for s in edited.steps][2] == "03-wait-2-days"
    changed = [
        a.id for a, b in zip(fixture_plan.steps, edited.steps, strict=True) if a.hash != b.hash
    ]
    assert changed == ids[2:]


def test_a_question_change_keeps_the_prefix(fixture_plan: Plan) -> None:
    edited = compile_text(FIXTURE.replace("Anything else?", "Anything more?"))
    assert _changed(fixture_plan, edited) == ["12-ask-store", "13-extract-store", "14-analyze"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda text: text.replace("timeline {", "# the story\ntimeline {"),
        lambda text: text.replace("  wait 1 day\n", "\n  wait 1 day   # a pause\n\n"),
        lambda text: "\n\n# leading comment\n" + text,
    ],
    ids=["comment", "blank-lines-and-trailing-comment", "leading-lines"],
)
def test_comments_and_blank_lines_change_no_hash(fixture_plan: Plan, edit) -> None:  # type: ignore[no-untyped-def]
    edited = compile_text(edit(FIXTURE))
    assert hashes(edited) == hashes(fixture_plan)
    assert [s.origin for s in edited.steps] != [s.origin for s in fixture_plan.steps]


def test_a_definition_change_invalidates_the_steps_that_use_it(fixture_plan: Plan) -> None:
    program = build_fixture()
    lisa = program.personas["lisa"]
    program.personas["lisa"] = replace(lisa, spec={**lisa.spec, "age": 29})
    changed = _changed(fixture_plan, compile_plan(program))
    # lisa is first used by the panel's broadcast; everything before stays cached
    assert changed == [step.id for step in fixture_plan.steps[5:]]


def test_extending_a_run_keeps_its_earlier_rounds() -> None:
    before = compile_text(
        FIXTURE.replace("run panel 2 rounds", "run panel 2 rounds\n  checkpoint end")
    )
    after = compile_text(
        FIXTURE.replace("run panel 2 rounds", "run panel 3 rounds\n  checkpoint end")
    )
    assert hashes(before)["07-run-panel-r1"] == hashes(after)["07-run-panel-r1"]
    assert hashes(before)["08-run-panel-r2"] == hashes(after)["08-run-panel-r2"]
    assert after.steps[8].id == "09-run-panel-r3"


def test_settings_change_every_hash(fixture_plan: Plan) -> None:
    edited = compile_text(temperature=0.2)
    assert all(a.hash != b.hash for a, b in zip(fixture_plan.steps, edited.steps, strict=True))


# ---------------------------------------------------------------- assignment


def _arm_sizes(assignment: dict[str, str]) -> Counter[str]:
    return Counter(assignment.values())


def test_fixture_assignment_is_balanced(fixture_plan: Plan) -> None:
    promo = fixture_plan.interventions[0]
    sizes = _arm_sizes(promo.assignment)
    assert sizes["control"] == control_count(30, 0.2) == 6
    assert max(sizes[v] for v in "abc") - min(sizes[v] for v in "abc") <= 1
    segments = {agent.id: agent.segment for agent in fixture_plan.agents}
    for segment, size in {"young": 10, "northerners": 8, "general": 12}.items():
        arms = Counter(arm for agent, arm in promo.assignment.items() if segments[agent] == segment)
        assert abs(arms["control"] - size * 0.2) < 1
        assert max(arms[v] for v in "abc") - min(arms[v] for v in "abc") <= 1
    assert promo.targets == list(promo.assignment)


def test_assignment_is_reproducible_and_depends_on_the_seed(fixture_plan: Plan) -> None:
    promo = fixture_plan.interventions[0]
    assert compile_text().interventions[0].assignment == promo.assignment
    assert compile_text(seed=43).interventions[0].assignment != promo.assignment


@pytest.mark.parametrize(
    ("targets", "control", "expected"),
    [(24, 0.2, 5), (10, 0.25, 3), (2, 0.1, 1), (1, 0.1, 0), (30, 0.0, 0), (0, 0.5, 0), (5, 1.0, 5)],
)
def test_control_count(targets: int, control: float, expected: int) -> None:
    assert control_count(targets, control) == expected


@settings(max_examples=150, deadline=None)
@given(
    strata_sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    control=st.sampled_from([0.0, 0.1, 0.2, 0.25, 1 / 3, 0.5]),
    variants=st.integers(1, 4),
    seed=st.integers(0, 10**6),
)
def test_assignment_is_balanced_overall_and_per_stratum(
    strata_sizes: list[int], control: float, variants: int, seed: int
) -> None:
    targets = [f"t{i}" for i in range(sum(strata_sizes))]
    strata = [f"s{s}" for s, size in enumerate(strata_sizes) for _ in range(size)]
    names = [f"v{i}" for i in range(variants)]
    assignment = assign_arms(seed, "x", targets, strata, control, names)
    assert assignment == assign_arms(seed, "x", targets, strata, control, names)
    assert list(assignment) == targets
    overall = _arm_sizes(assignment)
    assert overall["control"] == control_count(len(targets), control)
    assert max(overall[v] for v in names) - min(overall[v] for v in names) <= 1
    for s, size in enumerate(strata_sizes):
        arms = Counter(
            assignment[t] for t, st_ in zip(targets, strata, strict=True) if st_ == f"s{s}"
        )
        quota = overall["control"] * size / len(targets) if targets else 0
        assert abs(arms["control"] - quota) < 1
        assert max(arms[v] for v in names) - min(arms[v] for v in names) <= 1


# ------------------------------------------------------------------ sampling


def test_segment_constraints_hold_for_every_member() -> None:
    plan = compile_text(size=1000)
    members = [agent for agent in plan.agents if agent.kind == "member"]
    assert len(members) == 1000
    for member in members:
        assert set(member.attributes) == {"age", "region"}
        assert 18 <= member.attributes["age"] <= 64
        if member.segment == "young":
            assert 25 <= member.attributes["age"] <= 35
        if member.segment == "northerners":
            assert member.attributes["region"] == "north"


def test_members_do_not_depend_on_population_size(fixture_plan: Plan) -> None:
    bigger = compile_text(size=60)
    for agent in fixture_plan.agents:
        assert bigger.agent(agent.id).attributes == agent.attributes


def test_member_draws_are_seeded_per_member() -> None:
    sampler = MemberSampler(BASE, ())
    first = sampler.sample(member_rng(42, "p", 7))
    assert sampler.sample(member_rng(42, "p", 7)) == first
    draws = {json.dumps(sampler.sample(member_rng(42, "p", i))) for i in range(50)}
    assert len(draws) > 30


def _bracket(age: int) -> str:
    return next(s.label for s in BASE.distributions[0].shares if s.low <= age <= s.high)  # type: ignore[operator]


def test_draws_match_declared_shares() -> None:
    sampler = MemberSampler(BASE, ())
    draws = [sampler.sample(member_rng(1, "chi", i)) for i in range(10_000)]
    regions = Counter(d["region"] for d in draws)
    # the undeclared 10% is drawn as "other"
    assert chi_square_p(regions, {"north": 0.25, "south": 0.45, "east": 0.2, "other": 0.1}) > 0.01
    ages = Counter(_bracket(d["age"]) for d in draws)
    assert chi_square_p(ages, {s.label: s.share for s in BASE.distributions[0].shares}) > 0.01


def test_shares_short_of_100_by_rounding_draw_no_other() -> None:
    """99.7% is rounding for the checker (no `other`), so the sampler draws none either."""
    source = SourceFile(
        "rounding.tts",
        """
scenario s { }
demographics d { region { north 33.3%; south 33.3%; east 33.1% } }
population p { from d; size 3 }
""",
    )
    result = check_source(source, path=ROOT / "rounding.tts")
    assert [d.code for d in result.diagnostics] == ["W103"]  # p is in no world; shares are fine
    sampler = MemberSampler(result.require_program().demographics["d"], ())
    regions = Counter(sampler.sample(member_rng(5, "p", i))["region"] for i in range(10_000))
    assert set(regions) == {"north", "south", "east"}
    assert chi_square_p(regions, {"north": 0.333, "south": 0.333, "east": 0.331}) > 0.01


def test_constrained_draws_follow_the_restricted_distribution() -> None:
    sampler = MemberSampler(
        BASE, (Constraint("age", 25, 35), Constraint("region", labels=("north", "east")))
    )
    draws = [sampler.sample(member_rng(2, "chi", i)) for i in range(10_000)]
    assert all(25 <= d["age"] <= 35 and d["region"] in ("north", "east") for d in draws)
    # 25..34 keeps its 30%; 35..44 keeps a tenth of its 30% (the age 35 alone)
    ages = Counter("35" if d["age"] == 35 else "25-34" for d in draws)
    assert chi_square_p(ages, {"25-34": 0.30, "35": 0.03}) > 0.01
    regions = Counter(d["region"] for d in draws)
    assert chi_square_p(regions, {"north": 0.25, "east": 0.2}) > 0.01


def test_population_of_1000_matches_the_declared_shares() -> None:
    plan = compile_text(size=1000)
    general = [a for a in plan.agents if a.segment == "general"]
    regions = Counter(a.attributes["region"] for a in general)
    assert chi_square_p(regions, {"north": 0.25, "south": 0.45, "east": 0.2, "other": 0.1}) > 0.01


def test_a_constraint_on_an_undescribed_attribute_is_drawn_from_the_constraint() -> None:
    sampler = MemberSampler(
        BASE, (Constraint("income", labels=("high",)), Constraint("children", 1, 3))
    )
    draws = [sampler.sample(member_rng(3, "p", i)) for i in range(200)]
    assert {d["income"] for d in draws} == {"high"}
    assert {d["children"] for d in draws} == {1, 2, 3}


# ----------------------------------------------------------------- estimates


def test_calls_per_step_kind(fixture_plan: Plan) -> None:
    calls = {step.id: step.calls for step in fixture_plan.steps}
    assert calls == {
        "01-generate-shoppers": 30,
        "02-deliver-promo": 0,
        "03-wait-1-day": 0,
        "04-deliver-nudge": 0,
        "05-ask-store": 30,
        "06-broadcast-panel": 0,
        "07-run-panel-r1": 11,
        "08-run-panel-r2": 11,
        "09-interview-shoppers.northerners+lisa": 18,  # 9 agents x 2 questions
        "10-think-lisa": 0,
        "11-checkpoint-done": 0,
        "12-ask-store": 30,
        "13-extract-store": 30,
        "14-analyze": 0,
    }
    assert fixture_plan.estimate.calls == sum(calls.values())
    assert fixture_plan.estimate.input_tokens == sum(s.input_tokens for s in fixture_plan.steps)
    for step in fixture_plan.steps:
        assert (step.calls == 0) == (step.input_tokens == 0 == step.output_tokens), step.id
    assert fixture_plan.steps[0].output_tokens == 30 * GENERATE_OUTPUT_TOKENS
    assert fixture_plan.steps[4].output_tokens == 30 * ACT_OUTPUT_TOKENS
    assert fixture_plan.steps[12].output_tokens == 30 * EXTRACT_OUTPUT_TOKENS


def test_prompts_grow_with_memory_until_the_window_is_full() -> None:
    asks = "\n".join(f'  ask store "Question number {i:02d}?"' for i in range(40))
    start = FIXTURE.index("timeline {")
    end = FIXTURE.index("extract from")
    plan = compile_text(FIXTURE[:start] + "timeline {\n" + asks + "\n}\n\n" + FIXTURE[end:])
    per_ask = [step.input_tokens for step in plan.steps if isinstance(step, AskStep)]
    # each ask stores two items (question, answer) in every agent's memory
    full = (MEMORY_PREFIX_ITEMS + MEMORY_LOOKBACK_ITEMS) // 2
    assert all(a < b for a, b in pairwise(per_ask[: full + 1]))
    assert len(set(per_ask[full:])) == 1


def test_cost_at_the_scenario_model_prices(fixture_plan: Plan) -> None:
    estimate = fixture_plan.estimate
    assert estimate.model == "gpt-4o-mini" and estimate.priced
    expected = (estimate.input_tokens * 0.15 + estimate.output_tokens * 0.60) / 1e6
    assert estimate.cost_usd == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("gpt-4o-mini", (0.15, 0.60)),
        ("gpt-4o", (2.50, 10.00)),
        ("gpt-4o-mini-2024-07-18", (0.15, 0.60)),
        ("openai/gpt-4.1-nano", (0.10, 0.40)),
        ("GPT-5", (1.25, 10.00)),
        ("o3", (2.00, 8.00)),
        (None, (0.0, 0.0)),
        (EMBEDDED_MODEL, (0.0, 0.0)),
        ("llama3.1:8b", None),
        ("gpt-4o-mini-turbo", None),
    ],
)
def test_price_for(model: str | None, prices: tuple[float, float] | None) -> None:
    assert price_for(model) == prices


def test_embedded_model_is_free_and_named() -> None:
    plan = compile_text(model=None, budget_usd=None)
    assert plan.estimate.model == EMBEDDED_MODEL
    assert plan.estimate.priced and plan.estimate.cost_usd == 0
    text = render_plan(plan)
    assert f"embedded {EMBEDDED_MODEL} (offline, free)" in text
    assert "$0.00 (embedded model)" in text


def test_unknown_model_is_unpriced_and_said_so() -> None:
    program = build_fixture(model="my-local-model", provider="openai-compatible")
    plan = compile_plan(program)
    assert not plan.estimate.priced and plan.estimate.cost_usd == 0
    text = render_plan(plan)
    assert "unknown: no prices for my-local-model" in text
    (diagnostic,) = budget_diagnostics(plan, program)
    assert diagnostic.code == "W402" and not diagnostic.is_error
    assert "no prices are known for model `my-local-model`" in diagnostic.message


def test_budget_within_reach_says_nothing(fixture_plan: Plan) -> None:
    assert budget_diagnostics(fixture_plan, build_fixture()) == []
    assert "headroom" in render_plan(fixture_plan)


def test_budget_exceeded_names_the_step_where_it_runs_out() -> None:
    program = build_fixture(budget_usd=0.02)
    plan = compile_plan(program)
    (diagnostic,) = budget_diagnostics(plan, program)
    assert diagnostic.code == "W401"
    # cumulative cost crosses $0.02 at the second ask
    running, crossing = 0.0, None
    prices = price_for("gpt-4o-mini")
    assert prices is not None
    for step in plan.steps:
        running += (step.input_tokens * prices[0] + step.output_tokens * prices[1]) / 1e6
        if running > 0.02:
            crossing = step
            break
    assert crossing is not None
    assert f"a run would stop at step `{crossing.id}`" in diagnostic.message
    text = render_text([diagnostic], program.sources)
    assert "fixture.tts:6:3: warning[W401]" in text  # the `budget` line
    assert f"{crossing.origin.line} |" in text  # and the step's statement
    assert f"at {crossing.id}: `tts run` refuses to start" in render_plan(plan)


# -------------------------------------------------------------------- render


def test_render_fits_the_fixed_width(fixture_plan: Plan) -> None:
    for line in render_plan(fixture_plan).splitlines():
        assert len(line) <= WIDTH, line


def test_render_marks_cached_steps(fixture_plan: Plan) -> None:
    covered = {"01-generate-shoppers", "02-deliver-promo"}
    lines = render_plan(fixture_plan, covered=covered).splitlines()
    marked = [line.split()[0] for line in lines if line.endswith(CACHED)]
    assert marked == sorted(covered)


def test_color_only_adds_styling(fixture_plan: Plan) -> None:
    colored = render_plan(fixture_plan, color=True, covered={"03-wait-1-day"})
    assert "\x1b[" in colored
    assert re.sub(r"\x1b\[[0-9;]*m", "", colored) == render_plan(
        fixture_plan, covered={"03-wait-1-day"}
    )


def _rendered(text: str) -> str:
    result = check_source(SourceFile("render.tts", text))
    return render_plan(compile_plan(result.require_program()))


def test_render_a_population_sampled_without_attributes() -> None:
    """Members of a demographics with no distributions have no attributes to
    summarise: the segment is listed, with no table under it (it used to raise)."""
    text = _rendered(
        """
scenario s { }
demographics bare { }
population folk { from bare; size 2 }
world w { mode survey; agents folk }
timeline { ask w "Why?" }
"""
    )
    assert "  population folk: 2 members from bare\n    segment general: 2 members\n\n" in text


def test_render_counts_agree_with_their_verbs() -> None:
    one = _rendered(
        """
scenario s { }
persona ann { name "Ann" }
world w { mode focus_group; agents ann }
timeline { run w 1 round }
"""
    )
    assert "(1 step, schema" in one
    assert "run w round 1 of 1: 1 agent acts" in one
    assert "1 LLM call, limit" in one
    many = _rendered(
        """
scenario s { }
persona ann { name "Ann" }
demographics bare { }
population folk { from bare; size 3 }
world w { mode focus_group; agents folk, ann }
intervention tip { channel email; targets folk; control 34%; variant v { content "Hi." } }
timeline {
  deliver tip in w
  think folk "Hm."
  think ann "Ah."
}
"""
    )
    assert "(4 steps, schema" in many
    assert "deliver tip in w: v 2; control 1 hears nothing" in many
    assert "3 agents think: Hm." in many
    assert "ann thinks: Ah." in many
    assert "3 LLM calls, limit" in many


# ------------------------------------------------------- through the checker

EMAIL = ROOT / "scenarios" / "email_ab.tts"


def _email_plan(tmp_path: Path, edit=lambda text: text) -> Plan:  # type: ignore[no-untyped-def]
    """The email example, edited, checked from another directory, and planned."""
    path = tmp_path / "email_ab.tts"
    path.write_text(edit(EMAIL.read_text(encoding="utf-8")), encoding="utf-8")
    return compile_plan(example_program(path))


@pytest.fixture(scope="module")
def email_plan() -> Plan:
    return compile_plan(example_program(EMAIL))


def test_example_ids_and_assignment(email_plan: Plan) -> None:
    assert [step.id for step in email_plan.steps] == [
        "01-generate-consumers",
        "02-deliver-email_campaign",
        "03-wait-1-day",
        "04-checkpoint-after_campaign",
        "05-ask-inbox",
        "06-extract-inbox",
        "07-analyze",
    ]
    arms = _arm_sizes(email_plan.interventions[0].assignment)
    assert arms["control"] == 5  # 20% of 24, rounded
    assert abs(arms["emotional"] - arms["rational"]) <= 1
    for agent in email_plan.agents:
        if agent.segment == "young_professionals":
            assert 25 <= agent.attributes["age"] <= 35


def test_example_hashes_do_not_depend_on_location_or_comments(
    email_plan: Plan, tmp_path: Path
) -> None:
    moved = _email_plan(tmp_path, lambda text: text.replace("timeline {", "# steps\n\ntimeline {"))
    assert hashes(moved) == hashes(email_plan)
    assert moved.source_hash != email_plan.source_hash


def test_example_last_step_change(email_plan: Plan, tmp_path: Path) -> None:
    edited = _email_plan(
        tmp_path, lambda text: text.replace("between 1 and 10", "between 2 and 10")
    )
    assert _changed(email_plan, edited) == ["07-analyze"]


def test_example_early_step_change(email_plan: Plan, tmp_path: Path) -> None:
    edited = _email_plan(tmp_path, lambda text: text.replace("wait 1 day", "wait 2 days"))
    assert [a.hash == b.hash for a, b in zip(email_plan.steps, edited.steps, strict=True)] == [
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]


# ------------------------------------------------------------------ layering


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, `from tiny_dsl import syntax` as `tiny_dsl.syntax`."""
    import ast as python_ast

    names: set[str] = set()
    for node in python_ast.walk(python_ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, python_ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, python_ast.ImportFrom) and node.module is not None:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "tiny_dsl" / "plan").glob("*.py")), ROOT / "tiny_dsl" / "checks" / "model.py"],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_the_checked_model_and_the_plan_never_use_syntax(path: Path) -> None:
    """The checks lower every statement: the plan stage never re-reads syntax trees."""
    syntax = {name for name in _imported_modules(path) if name.startswith("tiny_dsl.syntax")}
    assert syntax == set()
