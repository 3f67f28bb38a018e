"""Conversation steps (`tell`, `converse`, `goal`, `context`, `think` for a group):
syntax, checks, plan estimates, and what each agent hears and remembers on both engines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_runtime import prompts, scripted_client, sent
from tests.test_runtime import run as run_builtin
from tests.test_tinytroupe_engine import HashProvider, needs_tinytroupe
from tests.test_tinytroupe_engine import run as run_tinytroupe
from tiny_dsl.checks import check_source
from tiny_dsl.checks import model as m
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import Plan
from tiny_dsl.plan.render import render_plan
from tiny_dsl.runtime.engines.builtin import BuiltinEngine
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax import ast, parse
from tiny_dsl.syntax.formatter import format_source

SCENARIO = """\
scenario talks {
  title "Conversations"
  seed 3
}

persona ann {
  name "Ann Lee"
  age 30
  occupation "Nurse"
}

persona bob {
  name "Bob Stone"
  age 40
  occupation "Baker"
}

persona rep {
  name "Rita Rep"
  age 35
  occupation "Sales representative"
}

world poll {
  mode survey
  agents ann, bob
  context "A quiet poll."
  start "2025-03-03 08:00"
}

timeline {
  goal ann "Find a cheap phone plan."
  context poll "The shop is closing soon."
  tell ann, bob "Hello from the lab."
  converse ann, bob with rep 2 turns "Get a discount."
  think ann, bob "I am tired."
  ask poll "How was it?"
}
"""


def _plan(text: str = SCENARIO) -> Plan:
    return compile_plan(check_source(SourceFile("talks.tts", text)).require_program())


def _steps(plan: Plan) -> dict[str, Any]:
    return {step.kind: step for step in plan.steps}


# ----------------------------------------------------------------------------- syntax


def test_think_takes_a_group_as_interview_does() -> None:
    module, problems = parse(SourceFile("t.tts", 'timeline {\n  think panel.young, lisa "x"\n}\n'))
    assert problems == []
    (timeline,) = module.declarations
    assert isinstance(timeline, ast.Timeline)
    (step,) = timeline.steps
    assert isinstance(step, ast.ThinkStep)
    assert [ref.dotted for ref in step.group] == ["panel.young", "lisa"]


def test_conversation_steps_format_canonically_and_idempotently() -> None:
    messy = (
        "timeline {\n"
        '  tell   ann ,bob   "Hi."\n'
        '  converse ann,bob   with rep 1 turn   "Sell."\n'
        '  goal ann   "Win."\n'
        '  context   poll "Rain."\n'
        '  think ann,  bob "Hm."\n'
        "}\n"
    )
    formatted, problems = format_source(SourceFile("t.tts", messy))
    assert problems == []
    assert formatted == (
        "timeline {\n"
        '  tell ann, bob "Hi."\n'
        '  converse ann, bob with rep 1 turn "Sell."\n'
        '  goal ann "Win."\n'
        '  context poll "Rain."\n'
        '  think ann, bob "Hm."\n'
        "}\n"
    )
    assert format_source(SourceFile("t.tts", formatted)) == (formatted, [])


# ----------------------------------------------------------------------------- checks


def _with_step(step: str) -> str:
    return SCENARIO.replace('  ask poll "How was it?"\n', f"  {step}\n")


def _problems(step: str) -> list[Any]:
    diagnostics = check_source(SourceFile("talks.tts", _with_step(step))).diagnostics
    return [d for d in diagnostics if d.is_error]


def test_steps_are_lowered_with_their_groups() -> None:
    program = check_source(SourceFile("talks.tts", SCENARIO)).require_program()
    goal, context, tell, converse, think, _ask = program.timeline
    ann, bob = m.GroupRef("persona", "ann"), m.GroupRef("persona", "bob")
    assert goal == m.GoalStep((ann,), "Find a cheap phone plan.", goal.span)
    assert context == m.ContextStep("poll", "The shop is closing soon.", context.span)
    assert tell == m.TellStep((ann, bob), "Hello from the lab.", tell.span)
    assert converse == m.ConverseStep((ann, bob), "rep", 2, "Get a discount.", converse.span)
    assert think == m.ThinkStep((ann, bob), "I am tired.", think.span)


def test_converse_partner_in_the_group_is_an_error_at_both() -> None:
    step = 'converse ann, rep with rep 2 turns "Sell."'
    text = _with_step(step)
    (problem,) = _problems(step)
    assert problem.code == "E214"
    assert problem.message == (
        "`rep` is the conversation partner and cannot also be one of the group"
    )
    assert problem.primary is not None
    (also,) = problem.secondary
    at = text.index(step)
    assert (problem.primary.span.start, problem.primary.message) == (
        at + step.index("with rep") + 5,
        "the conversation partner",
    )
    assert (also.span.start, also.message) == (at + step.index("rep"), "also one of the group")


@pytest.mark.parametrize(
    ("step", "where", "suggestion"),
    [
        ('tell anne "Hi."', "`tell`", "ann"),
        ('goal bobb "Win."', "`goal`", "bob"),
        ('think ann, bobb "Hm."', "`think`", "bob"),
        ('converse anne with rep 1 turn "x"', "`converse`", "ann"),
        ('converse ann with repp 1 turn "x"', "`converse ... with`", "rep"),
        ('context pol "Rain."', "`context`", "poll"),
    ],
)
def test_unknown_names_get_did_you_mean(step: str, where: str, suggestion: str) -> None:
    (problem,) = _problems(step)
    assert where in problem.message
    assert f"did you mean `{suggestion}`?" in "\n".join(problem.help)


@pytest.mark.parametrize("turns", ["0", "51"])
def test_converse_turns_out_of_range(turns: str) -> None:
    (problem,) = _problems(f'converse ann with rep {turns} turns "x"')
    assert problem.code == "E304"
    assert problem.message == f"`converse` must be from 1 to 50, found {turns}"


def test_converse_partner_must_be_a_persona() -> None:
    (problem,) = _problems('converse ann with poll 1 turn "x"')
    assert problem.code == "E215"


# ------------------------------------------------------------------------------- plan


def test_plan_estimates_calls_exactly_and_shows_the_steps() -> None:
    plan = _plan()
    steps = _steps(plan)
    assert [step.id for step in plan.steps] == [
        "01-goal-ann",
        "02-context-poll",
        "03-tell-ann+bob",
        "04-converse-ann+bob",
        "05-think-ann+bob",
        "06-ask-poll",
    ]
    assert {kind: step.calls for kind, step in steps.items()} == {
        "goal": 0,
        "context": 0,
        "tell": 2,
        "converse": 8,
        "think": 0,
        "ask": 2,
    }
    assert steps["converse"].input_tokens > steps["tell"].input_tokens > 0
    assert steps["context"].agents == ["ann", "bob"]
    assert "rep" in {agent.id for agent in plan.agents}
    text = render_plan(plan)
    assert "tell 2 agents, each answers: Hello from the lab." in text
    assert "2 agents each talk 1:1 with rep, 2 turns each: Get a di" in text
    assert "goal for 1 agent: Find a cheap phone plan." in text
    assert "context of poll changes for 2 agents: The shop" in text


# --------------------------------------------------------------------- built-in engine


def _system(prompt: str) -> str:
    return prompt.split("\n[", 1)[0]


def test_builtin_agents_hear_and_remember_what_the_design_says(tmp_path: Path) -> None:
    plan = _plan()
    client = scripted_client()
    result = run_builtin(plan, client, tmp_path)
    events = result.transcript

    # Calls made: exactly the plan's estimate.
    assert len(sent(client)) == sum(step.calls for step in plan.steps) == 12

    ann, bob, rep = prompts(client, "ann"), prompts(client, "bob"), prompts(client, "rep")
    assert len(ann) == 1 + 2 + 1 and len(bob) == 1 + 2 + 1 and len(rep) == 4
    tell_ann, tell_bob = ann[0], bob[0]
    # tell: the experimenter's line, outside any world; bob never hears ann's answer.
    assert 'You are asked: "Hello from the lab."' in tell_ann
    assert "Setting:" not in tell_ann and "Nobody else is present." in tell_ann
    ann_answer = next(
        e.content
        for e in events
        if e.step == "03-tell-ann+bob" and e.agent == "ann" and e.type == "TALK"
    )
    assert ann_answer not in tell_bob
    # goal: in memory and in every later turn prompt; only ann has it.
    assert "You set yourself a goal: Find a cheap phone plan." in tell_ann
    assert all("Your goals: Find a cheap phone plan." in _system(p) for p in ann)
    assert all("Your goals" not in _system(p) for p in bob[:1] + bob[3:])
    # context: remembered, and the world's setting replaced in later turns in it.
    assert "The situation changes: The shop is closing soon." in tell_bob
    assert "Setting: The shop is closing soon." in ann[-1]
    assert "A quiet poll." not in ann[-1]
    # converse: the goal holds while the conversation lasts, the member speaks first,
    # each side hears the other only, and the partner forgets every conversation.
    assert "Your goals: Find a cheap phone plan.; Get a discount." in _system(ann[1])
    assert "Get a discount." not in _system(ann[-1])
    assert "Also present: Rita Rep." in ann[1]
    converse = [e for e in events if e.step == "04-converse-ann+bob"]
    assert all(e.world is None for e in converse)
    first_line = next(e for e in converse if e.kind == "action" and e.type == "TALK")
    assert (first_line.agent, first_line.target) == ("ann", "rep")
    ann_to_rep = [e.content for e in converse if e.agent == "ann" and e.type == "TALK"]
    rep_to_ann = [
        e.content for e in converse if e.agent == "rep" and e.type == "TALK" and e.target == "ann"
    ]
    assert len(ann_to_rep) == 2 and len(rep_to_ann) == 2
    # The two conversations run concurrently: rep's prompts are told apart by who it hears.
    with_ann = [p for p in rep if "Ann Lee says to you" in p]
    with_bob = [p for p in rep if p not in with_ann]
    assert len(with_ann) == len(with_bob) == 2
    assert ann_to_rep[0] in with_ann[0] and ann_to_rep[1] not in with_ann[0]
    assert all(line in with_ann[1] for line in [*ann_to_rep, rep_to_ann[0]])
    assert rep_to_ann[0] in ann[2] and rep_to_ann[0] not in ann[1]
    assert all(line not in p for line in ann_to_rep for p in with_bob + bob)
    assert all(e.world is None for e in events if e.step in ("01-goal-ann", "03-tell-ann+bob"))
    assert {e.world for e in events if e.step == "02-context-poll"} == {"poll"}
    assert [e.type for e in events if e.step == "01-goal-ann"] == ["GOAL"]
    assert [e.type for e in events if e.step == "02-context-poll"] == ["CONTEXT", "CONTEXT"]
    # think for a group: each member's own thought.
    assert "You think: I am tired." in ann[-1] and "You think: I am tired." in bob[-1]
    markdown = (result.run_dir / "transcript.md").read_text()
    assert "## 1. goal ann" in markdown and "## 4. converse ann, bob with rep" in markdown
    assert "Ann Lee sets a goal: Find a cheap phone plan." in markdown
    assert "The situation changes for Ann Lee, Bob Stone: The shop is closing soon." in markdown
    assert f'**Ann Lee** to Rita Rep: "{ann_to_rep[0]}" _(heard by Rita Rep)_' in markdown


# ------------------------------------------------------------------ TinyTroupe engine


def _heard(provider: HashProvider, purpose: str) -> list[str]:
    return [
        "\n".join(message.content for message in request.messages)
        for request in provider.requests
        if request.purpose == purpose
    ]


@needs_tinytroupe
def test_tinytroupe_agents_hear_and_remember_what_the_design_says(tmp_path: Path) -> None:
    plan = _plan()
    provider = HashProvider()
    result, _ = run_tinytroupe(plan, tmp_path, provider)
    events = result.transcript
    acting = [r for r in provider.requests if r.purpose.startswith(("act ", "converse "))]
    assert len(acting) == len(provider.requests) == sum(step.calls for step in plan.steps) == 12

    # goal: TinyTroupe's INTERNAL_GOAL_FORMULATION, named GOAL as on the built-in engine.
    assert [(e.agent, e.type, e.world) for e in events if e.step == "01-goal-ann"] == [
        ("ann", "GOAL", None)
    ]
    # context: broadcast_context_change on every agent of the world. (TinyTroupe 0.6's
    # prompt template reads the context from the persona, not the mental state that
    # change_context sets, so the agents' prompts do not show it: docs/language.md.)
    assert [(e.agent, e.type) for e in events if e.step == "02-context-poll"] == [
        ("ann", "CONTEXT"),
        ("bob", "CONTEXT"),
    ]
    # tell: listen_and_act, outside any world; nobody else hears the answer.
    tell = [e for e in events if e.step == "03-tell-ann+bob"]
    assert all(e.world is None for e in tell)
    heard = [(e.agent, e.content) for e in tell if e.type == "CONVERSATION"]
    assert heard == [("ann", "Hello from the lab."), ("bob", "Hello from the lab.")]
    ann_tell, bob_tell = _heard(provider, "act ann")[0], _heard(provider, "act bob")[0]
    assert "Hello from the lab." in ann_tell and "Find a cheap phone plan." in ann_tell
    assert "Find a cheap phone plan." not in bob_tell
    ann_answer = next(e.content for e in tell if e.agent == "ann" and e.type == "TALK")
    assert ann_answer not in bob_tell

    # converse: the member speaks first with the goal, they alternate, each hears
    # only the other, and the partner starts every conversation afresh.
    converse = [e for e in events if e.step == "04-converse-ann+bob"]
    assert all(e.world is None for e in converse)
    talks = [e.agent for e in converse if e.kind == "action" and e.type == "TALK"]
    assert talks == ["ann", "rep"] * 2 + ["bob", "rep"] * 2
    ann_lines = [e.content for e in converse if e.agent == "ann" and e.type == "TALK"]
    rep_with_ann = _heard(provider, "converse ann (rep)")
    rep_with_bob = _heard(provider, "converse bob (rep)")
    assert len(rep_with_ann) == len(rep_with_bob) == 2
    assert "Get a discount." in _heard(provider, "converse ann")[0]
    assert ann_lines[0] in rep_with_ann[0]
    assert all(line not in prompt for line in ann_lines for prompt in rep_with_bob)
    rep_heard = [e for e in converse if e.agent == "rep" and e.type == "CONVERSATION"]
    assert {e.source for e in rep_heard} == {"ann", "bob"}
    # think for a group.
    thoughts = [(e.agent, e.type) for e in events if e.step == "05-think-ann+bob"]
    assert thoughts == [("ann", "THOUGHT"), ("bob", "THOUGHT")]


def test_builtin_goals_and_contexts_survive_a_checkpoint() -> None:
    plan = _plan()
    goal, context = plan.steps[0], plan.steps[1]

    async def resumed() -> BuiltinEngine:
        engine = BuiltinEngine(scripted_client())
        await engine.setup(plan)
        transcript = await engine.execute(goal) + await engine.execute(context)
        state = json.loads(json.dumps(engine.dump_state()))
        again = BuiltinEngine(scripted_client())
        await again.setup(plan)
        again.load_state(state, transcript)
        return again

    engine = asyncio.run(resumed())
    assert engine.dump_state()["contexts"] == {"poll": "The shop is closing soon."}
    assert engine.dump_state()["agents"]["ann"]["goals"] == ["Find a cheap phone plan."]
    assert engine.dump_state()["agents"]["bob"]["goals"] == []
