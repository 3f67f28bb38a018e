"""Rounds and campaigns on both engines: `turns`, `run ... every`, multi-touch deliveries.

Each test runs the same small scenario on the built-in engine and on TinyTroupe
(skipped without it) with the hash provider of `tests.test_tinytroupe_engine`,
whose answers carry a digest of the request, and asserts what each agent heard
(the prompts of its turns) and remembered (its transcript events).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.test_tinytroupe_engine import HashProvider, needs_tinytroupe
from tiny_dsl.checks import check_file
from tiny_dsl.plan import compile_plan, render_plan
from tiny_dsl.plan.model import DeliverStep, Plan
from tiny_dsl.runtime.client import LLMClient
from tiny_dsl.runtime.engines.tinytroupe import COMPACT_MEMORY, TinyTroupeEngine
from tiny_dsl.session import RunOutcome, Session

ENGINES = ["builtin", pytest.param("tinytroupe", marks=needs_tinytroupe)]

PANEL = """
scenario rounds {
  seed 5
}

persona ana {
  name "Ana Ruiz"
  age 34
  occupation "Nurse"
}

persona ben {
  name "Ben Okoro"
  age 51
  occupation "Electrician"
}

world panel {
  mode focus_group
  agents ana, ben
  context "A panel about a new bus line."
  start "2025-03-03 08:00"
  TURNS
}

timeline {
  broadcast panel "What do you think of the new bus line?"
  RUN
}
"""


def plan_of(tmp_path: Path, source: str) -> Plan:
    path = tmp_path / "scenario.tts"
    path.write_text(textwrap.dedent(source))
    return compile_plan(check_file(path).require_program())


def panel(tmp_path: Path, turns: str = "", run: str = "run panel 1 round") -> Plan:
    return plan_of(tmp_path, PANEL.replace("TURNS", turns).replace("RUN", run))


def execute(plan: Plan, tmp_path: Path, engine: str) -> tuple[RunOutcome, HashProvider]:
    provider = HashProvider()
    client = LLMClient(provider, None, max_concurrency=8)
    chosen = TinyTroupeEngine(client, memory=COMPACT_MEMORY) if engine == "tinytroupe" else None
    result = Session(state_dir=tmp_path / "state").execute(
        plan, client, engine=chosen, output_dir=tmp_path / "out"
    )
    return result, provider


def heard_in_turn(provider: HashProvider, agent: str) -> list[str]:
    """Everything sent in each turn of `agent`, one string per turn."""
    return [
        "\n".join(m.content for m in r.messages)
        for r in provider.requests
        if r.purpose == f"act {agent}"
    ]


def events(result: RunOutcome, step_suffix: str) -> list[dict[str, Any]]:
    return [e.to_json() for e in result.transcript if e.step.endswith(step_suffix)]


# ---------------------------------------------------------------------------- turns


@pytest.mark.parametrize("engine", ENGINES)
def test_sequential_turns_hear_the_turns_before_their_own(tmp_path: Path, engine: str) -> None:
    plan = panel(tmp_path, turns="turns sequential")
    result, provider = execute(plan, tmp_path, engine)
    round_one = events(result, "run-panel-r1")
    ana_said = next(e for e in round_one if e["agent"] == "ana" and e["type"] == "TALK")
    # Ben acts after Ana, having heard her: her words are in his turn's prompt.
    (ben_prompt,) = heard_in_turn(provider, "ben")
    assert ana_said["content"] in ben_prompt
    (ana_prompt,) = heard_in_turn(provider, "ana")
    ben_said = next(e for e in round_one if e["agent"] == "ben" and e["type"] == "TALK")
    assert ben_said["content"] not in ana_prompt
    # Remembered in turn order: Ana acts, Ben hears her, then Ben acts and Ana hears him.
    order = [(e["agent"], e["kind"]) for e in round_one if e["type"] in ("TALK", "CONVERSATION")]
    assert order == [
        ("ana", "action"),
        ("ben", "stimulus"),
        ("ben", "action"),
        ("ana", "stimulus"),
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_simultaneous_turns_act_on_the_start_of_the_round(tmp_path: Path, engine: str) -> None:
    plan = panel(tmp_path)
    assert plan.worlds[0].turns == "simultaneous"
    result, provider = execute(plan, tmp_path, engine)
    round_one = events(result, "run-panel-r1")
    ana_said = next(e for e in round_one if e["agent"] == "ana" and e["type"] == "TALK")
    (ben_prompt,) = heard_in_turn(provider, "ben")
    assert ana_said["content"] not in ben_prompt
    # Both heard the other afterwards: the next round's prompts would carry it.
    heard = {(e["agent"], e["source"]) for e in round_one if e["type"] == "CONVERSATION"}
    assert heard == {("ben", "ana"), ("ana", "ben")}


# ---------------------------------------------------------------------------- every


@pytest.mark.parametrize("engine", ENGINES)
def test_rounds_every_move_the_clock_after_each_round(tmp_path: Path, engine: str) -> None:
    plan = panel(tmp_path, run="run panel 3 rounds every 2 hours")
    assert [step.every for step in plan.steps if step.kind == "run"] == [7200.0] * 3
    result, provider = execute(plan, tmp_path, engine)
    # The first round happens at the current time; the clock moves after each round.
    for number, hour in ((1, "08"), (2, "10"), (3, "12")):
        times = {e["time"] for e in events(result, f"run-panel-r{number}")}
        assert times == {f"2025-03-03T{hour}:00:00"}
    for agent in ("ana", "ben"):
        prompts = heard_in_turn(provider, agent)
        assert len(prompts) == 3
        if engine == "builtin":
            # Each turn's prompt shows the time of its round.
            for prompt, hour in zip(prompts, ("08:00", "10:00", "12:00"), strict=True):
                assert f"Monday 2025-03-03 {hour}" in prompt
        else:
            # TinyTroupe's prompt stamps each remembered event with its time.
            assert "[@2025-03-03T10:00:00]" not in prompts[1]
            assert "[@2025-03-03T10:00:00]" in prompts[2]


@pytest.mark.parametrize("engine", ENGINES)
def test_rounds_without_every_keep_the_clock(tmp_path: Path, engine: str) -> None:
    result, _ = execute(panel(tmp_path, run="run panel 2 rounds"), tmp_path, engine)
    times = {e.time for e in result.transcript}
    assert times == {"2025-03-03T08:00:00"}


# ------------------------------------------------------------------------ campaigns

CAMPAIGN = """
scenario campaign_sequence {
  seed 21
}

import "stdlib/demographics/usa.tts"

population consumers {
  from usa
  size 12
  segment families {
    size 6
    particularities "Married with children, middle income."
  }
}

world inbox {
  mode survey
  agents consumers
  start "2025-03-03 08:00"
}

intervention campaign {
  targets consumers
  control 20%
  assign stratified by segment
  variant emotional {
    channel email
    touch first { timing morning; content "Feel the energy again with VitaBoost." }
    touch second { channel sms; timing evening; content "Still tired? VitaBoost ships tomorrow." }
  }
  variant rational {
    touch first { channel email; timing morning; content "VitaBoost: 89% report more energy." }
    touch second { channel push; content "Clinically tested. VitaBoost, $29 a month." }
  }
}

timeline {
  deliver campaign.first in inbox
  ask inbox "Would you buy VitaBoost? Rate it from 1 to 10."
  wait 2 days
  deliver campaign.second in inbox
}
"""


def campaign(tmp_path: Path) -> Plan:
    root = Path(__file__).resolve().parents[1]
    source = CAMPAIGN.replace('"stdlib/', f'"{root}/stdlib/')
    return plan_of(tmp_path, source)


def test_touches_keep_each_target_in_its_arm_with_the_nearest_channel(tmp_path: Path) -> None:
    plan = campaign(tmp_path)
    first, second = (step for step in plan.steps if isinstance(step, DeliverStep))
    assert (first.id, second.id) == ("02-deliver-campaign-first", "05-deliver-campaign-second")
    assert (first.touch, second.touch) == ("first", "second")
    arms = plan.interventions[0].assignment
    # One assignment, made for the intervention, for both touches.
    assert {d.agent: d.variant for d in first.deliveries} == {
        d.agent: d.variant for d in second.deliveries
    }
    assert all(arms[d.agent] == d.variant for d in [*first.deliveries, *second.deliveries])
    assert first.control == second.control == [a for a, arm in arms.items() if arm == "control"]
    by_arm = {
        (d.variant, d.content, d.channel, d.time) for d in [*first.deliveries, *second.deliveries]
    }
    assert by_arm == {
        ("emotional", "Feel the energy again with VitaBoost.", "email", "2025-03-03T09:00:00"),
        ("emotional", "Still tired? VitaBoost ships tomorrow.", "sms", "2025-03-05T19:00:00"),
        ("rational", "VitaBoost: 89% report more energy.", "email", "2025-03-03T09:00:00"),
        # No timing on the touch or the variant: delivered at the clock's time.
        ("rational", "Clinically tested. VitaBoost, $29 a month.", "push", "2025-03-05T08:00:00"),
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_each_touch_is_seen_and_remembered_in_the_arm(tmp_path: Path, engine: str) -> None:
    plan = campaign(tmp_path)
    result, provider = execute(plan, tmp_path, engine)
    arms = plan.interventions[0].assignment
    seen: dict[str, list[str]] = {}
    for event in result.transcript:
        if event.type == "VISUAL":
            assert event.source == "campaign"
            seen.setdefault(event.agent, []).append(event.content)
    treated = [agent for agent, arm in arms.items() if arm != "control"]
    assert sorted(seen) == sorted(treated)
    for agent in treated:
        first, second = seen[agent]
        if arms[agent] == "emotional":
            assert first == '[email] You receive an email: "Feel the energy again with VitaBoost."'
            assert second.startswith("[sms]") and "Still tired?" in second
        else:
            assert "89% report more energy" in first and first.startswith("[email]")
            assert second.startswith("[push]") and "Clinically tested" in second
    # The question after the first touch is answered with the first touch in mind.
    agent = treated[0]
    (prompt,) = heard_in_turn(provider, agent)
    assert seen[agent][0].split(": ", 1)[1].strip('"') in prompt


# ----------------------------------------------------------------------------- plan

V1_PANEL_HASHES_SOURCE = PANEL.replace("TURNS", "").replace("RUN", "run panel 2 rounds")


def test_defaults_leave_the_step_hashes_of_v1_scenarios_alone(tmp_path: Path) -> None:
    """`turns simultaneous` written out, like the defaults left out, hashes as v1 did;
    `turns sequential` and `every` change what the rounds do, so their hashes."""
    v1 = plan_of(tmp_path, V1_PANEL_HASHES_SOURCE)
    explicit = panel(tmp_path, turns="turns simultaneous", run="run panel 2 rounds")
    sequential = panel(tmp_path, turns="turns sequential", run="run panel 2 rounds")
    every = panel(tmp_path, run="run panel 2 rounds every 1 day")
    assert [s.hash for s in explicit.steps] == [s.hash for s in v1.steps]
    # `every` belongs to the run steps; `turns` to the world, which every step of it uses.
    assert v1.steps[0].hash == every.steps[0].hash != sequential.steps[0].hash
    for changed in (sequential, every):
        assert all(a.hash != b.hash for a, b in zip(changed.steps[1:], v1.steps[1:], strict=True))
    # The JSON form of the hashes leaves the new fields out at their defaults.
    assert "turns" not in v1.worlds[0].hash_form()
    assert "every" not in v1.steps[1].hash_form()
    assert sequential.worlds[0].hash_form()["turns"] == "sequential"


def test_plan_counts_and_shows_rounds(tmp_path: Path) -> None:
    plan = panel(tmp_path, turns="turns sequential", run="run panel 3 rounds every 90 minutes")
    runs = [step for step in plan.steps if step.kind == "run"]
    assert [step.calls for step in runs] == [2, 2, 2]  # one turn per agent and round
    # A later turn hears the earlier ones of its round: more tokens, the same calls.
    simultaneous = panel(tmp_path, run="run panel 3 rounds every 90 minutes")
    plain_runs = [step for step in simultaneous.steps if step.kind == "run"]
    assert [s.calls for s in plain_runs] == [s.calls for s in runs]
    assert all(a.input_tokens > b.input_tokens for a, b in zip(runs, plain_runs, strict=True))
    text = render_plan(plan)
    assert "sequential" in text
    assert "run panel round 1 of 3 in turn, then +90 minutes: 2 agen" in text


def test_deliveries_after_rounds_every_happen_at_the_moved_clock(tmp_path: Path) -> None:
    source = CAMPAIGN.replace(
        "  wait 2 days\n", "  wait 2 days\n  run inbox 2 rounds every 3 hours\n"
    ).replace('"stdlib/', f'"{Path(__file__).resolve().parents[1]}/stdlib/')
    plan = plan_of(tmp_path, source)
    second = next(s for s in plan.steps if isinstance(s, DeliverStep) and s.touch == "second")
    # 2 days and 2 x 3 hours after the start (08:00): the rational arm's untimed touch
    # comes at 14:00; the emotional arm's at its timing that day.
    times = {d.variant: d.time for d in second.deliveries}
    assert times == {"rational": "2025-03-05T14:00:00", "emotional": "2025-03-05T19:00:00"}
    text = render_plan(plan)
    assert "deliver campaign.second in inbox" in text
    assert "channel per message" in text


@pytest.mark.parametrize("engine", ENGINES)
def test_a_resumed_run_keeps_the_clock_the_rounds_moved(tmp_path: Path, engine: str) -> None:
    """The moved clocks are part of the checkpoint: a run resumed after the rounds asks
    its question at the time an uninterrupted run does."""
    rounds = "run panel 2 rounds every 1 hour\n  ask panel "
    first = panel(tmp_path, run=rounds + '"Would you take it?"')
    edited = panel(tmp_path, run=rounds + '"Would you take it to work?"')
    execute(first, tmp_path, engine)
    resumed, provider = execute(edited, tmp_path, engine)
    assert {r.purpose for r in provider.requests} == {"act ana", "act ben"}
    assert len(provider.requests) == 2  # only the edited ask ran
    asked = events(resumed, "ask-panel")
    assert asked and {e["time"] for e in asked} == {"2025-03-03T10:00:00"}
