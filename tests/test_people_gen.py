"""Generated people (language v2): `persona { generate }`, populations without
`from`, `vary` dimensions, and an agent's own `model` and `temperature`.

Checks and plans are tested on scenario text; runs on the built-in engine use the
scripted provider of `tests.test_runtime`, and on TinyTroupe (skipped where it is
not installed) the hash provider of `tests.test_tinytroupe_engine`. Bad input is
in `tests/cases/check/generated_people.tts`, the layout in
`tests/cases/fmt/generated_people.tts`.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.chi_square import chi_square_p
from tests.test_runtime import (
    generated_persona,
    run,
    scripted_client,
    sent,
    talk,
)
from tests.test_tinytroupe_engine import HashProvider, needs_tinytroupe
from tests.test_tinytroupe_engine import run as run_tinytroupe
from tiny_dsl.checks import check_file
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.estimate import GENERATE_OUTPUT_TOKENS, json_tokens
from tiny_dsl.plan.model import GenerateStep, Plan, ProposeStep
from tiny_dsl.plan.render import render_plan
from tiny_dsl.plan.sampling import vary_slots
from tiny_dsl.runtime.cache import LLMCache, cache_key
from tiny_dsl.runtime.engines.personas import persona_request, vary_values
from tiny_dsl.runtime.engines.prompts import render_prompt
from tiny_dsl.runtime.providers import EmbeddedProvider, OpenAICompatibleProvider
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    Message,
    ProviderConfigError,
)
from tiny_dsl.session import RunOptions, Session

SCENARIO = """\
scenario people {
  seed 7
  temperature 0.5
}

fragment calm {
  personality { traits ["You stay calm."] }
}

persona nurse {
  generate "A nurse from Lisbon in her thirties"
  context "A study of hospital staff"
  age 34
  fragments [calm]
  model "gpt-4o-mini"
  temperature 0.9
}

population folk {
  size 6
  context "People who buy gazpacho"
  particularities "They live in Spain"
  temperature 1.2
  vary taste "their favourite flavour" 3 values
  segment young {
    size 2
    particularities "Students"
  }
}

world room {
  mode survey
  agents folk, nurse
}

timeline {
  ask room "Do you like gazpacho?"
}

extract from room {
  likes bool "Whether they like gazpacho"
}
"""


def line_of(text: str) -> int:
    """The 1-based line of SCENARIO that starts with `text` (after indentation)."""
    return next(
        n for n, line in enumerate(SCENARIO.splitlines(), 1) if line.strip().startswith(text)
    )


def compile_text(text: str, tmp_path: Path, name: str = "people.tts") -> Plan:
    path = tmp_path / name
    path.write_text(text)
    return compile_plan(check_file(path).require_program())


def reply(proposals: dict[str, list[str]] | None = None):  # type: ignore[no-untyped-def]
    """Scripted answers: personas named after the agent, the given proposals."""

    def answer(request: ChatRequest, who: str) -> dict[str, Any]:
        if request.schema_name == "agent_actions":
            return talk(f"{who} speaks")
        if request.schema_name == "persona":
            return generated_persona(f"Person {who}", age=50)
        if request.schema_name == "proposal":
            assert request.json_schema is not None
            return {
                name: (proposals or {}).get(name)
                or [f"{name} {i}" for i in range(schema["minItems"])]
                for name, schema in request.json_schema["properties"].items()
            }
        return {"likes": True}

    return answer


# ------------------------------------------------------------------ checks and plan


def test_plan_has_generate_personas_then_propose_then_generate(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)
    ids = [step.id for step in plan.steps]
    assert ids[:3] == ["01-generate-personas", "02-propose-folk", "03-generate-folk"]
    personas, propose, members = plan.steps[:3]
    assert isinstance(personas, GenerateStep) and personas.population is None
    assert personas.agents == ["nurse"] and personas.calls == 1
    assert personas.origin.line == line_of("persona nurse")  # the first generate persona
    assert isinstance(propose, ProposeStep) and propose.calls == 1
    assert [(d.name, d.values) for d in propose.dimensions] == [("taste", 3)]
    assert propose.origin.line == line_of("vary taste")
    assert isinstance(members, GenerateStep) and members.calls == 6
    assert plan.estimate.calls == 1 + 1 + 6 + 7 + 7  # + ask and extract for 7 agents

    nurse = plan.agent("nurse")
    assert nurse.generate == "A nurse from Lisbon in her thirties"
    assert nurse.generate_context == "A study of hospital staff"
    # Only the fields written; the fragment merges after generation.
    assert nurse.persona == {"age": 34}
    assert nurse.fragments == [{"personality": {"traits": ["You stay calm."]}}]
    assert (nurse.model, nurse.temperature) == ("gpt-4o-mini", 0.9)
    assert nurse.model_origin is not None and nurse.model_origin.line == line_of('model "gpt')

    member = plan.agent("folk/001")
    assert member.attributes == {}
    assert member.particularities == "They live in Spain; Students"
    assert plan.agent("folk/006").particularities == "They live in Spain"
    assert (member.model, member.temperature) == (None, 1.2)
    population = plan.populations[0]
    assert population.demographics == "" and population.particularities == "They live in Spain"
    # A saved plan.json runs as compiled.
    assert Plan.model_validate_json(plan.model_dump_json()) == plan


def test_text_plan_shows_the_new_steps_and_their_calls(tmp_path: Path) -> None:
    text = render_plan(compile_text(SCENARIO, tmp_path))
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()[:2].isdigit()}
    assert "generate 1 persona: nurse" in lines["01-generate-personas"]
    assert lines["01-generate-personas"].split()[-2] == "1"
    assert "propose values for folk: taste (3)" in lines["02-propose-folk"]
    assert lines["02-propose-folk"].split()[-2] == "1"
    assert lines["03-generate-folk"].split()[-2] == "6"
    assert "population folk: 6 members generated from its context" in text
    assert "vary taste: 3 values, their favourite flavour" in text
    assert "(model gpt-4o-mini, temperature 0.9)" in text


@pytest.mark.parametrize("values", [7, 10, 13])
def test_vary_over_10000_members_is_quota_exact_and_passes_chi_square(values: int) -> None:
    size = 10_000
    slots = vary_slots(3, "folk", f"dim{values}", values, size)
    counts = Counter(slots)
    # Quota exact: every slot used floor or ceil(size / values) times, the extras once each.
    assert set(counts) == set(range(values))
    assert set(counts.values()) <= {size // values, math.ceil(size / values)}
    assert sum(c == math.ceil(size / values) for c in counts.values()) == size % values or (
        size % values == 0
    )
    uniform = {str(slot): 1.0 for slot in range(values)}
    assert chi_square_p(Counter(str(s) for s in slots), uniform) > 0.01
    # Spread at random: the first and the second half of the members each pass too.
    for half in (slots[: size // 2], slots[size // 2 :]):
        assert chi_square_p(Counter(str(s) for s in half), uniform) > 0.01
    assert vary_slots(3, "folk", f"dim{values}", values, size) == slots
    assert vary_slots(4, "folk", f"dim{values}", values, size) != slots


def test_vary_over_10000_planned_members_on_every_dimension(tmp_path: Path) -> None:
    text = SCENARIO.replace("size 6", "size 10000").replace(
        'vary taste "their favourite flavour" 3 values',
        'vary taste "their favourite flavour" 3 values\n'
        '  vary habit "how they shop"\n'
        '  vary mood "how they feel" 7 values',
    )
    plan = compile_text(text, tmp_path)
    members = [agent for agent in plan.agents if agent.population == "folk"]
    assert len(members) == 10_000
    for name, values in (("taste", 3), ("habit", 10), ("mood", 7)):
        counts = Counter(member.vary_slots[name] for member in members)
        assert set(counts.values()) <= {10_000 // values, math.ceil(10_000 / values)}
        uniform = {str(slot): 1.0 for slot in range(values)}
        assert chi_square_p(Counter({str(k): v for k, v in counts.items()}), uniform) > 0.01
    # The dimensions are drawn independently of each other.
    joint = Counter((m.vary_slots["taste"], m.vary_slots["mood"]) for m in members)
    uniform_joint = {str(pair): 1.0 for pair in ((t, m) for t in range(3) for m in range(7))}
    assert chi_square_p(Counter({str(k): v for k, v in joint.items()}), uniform_joint) > 0.01


def test_v1_generation_prompt_is_unchanged() -> None:
    """A population with demographics renders the member prompt as before v2."""
    text = render_prompt(
        "generate_user.j2",
        demographics="US adults",
        without_demographics=False,
        context="A survey",
        attributes="age: 31",
        particularities="Likes tea",
    )
    assert text == (
        "Create one person who belongs to this population.\n"
        "Population: US adults\n"
        "Context: A survey\n"
        "Their characteristics, which the persona must match: age: 31.\n"
        "Particularities: Likes tea\n"
        "Give them a realistic full name and make every detail consistent with the above. "
        'Write traits, beliefs and behaviors in the second person ("You ...").'
    )


# ------------------------------------------------------------------ built-in engine


def test_generate_persona_keeps_written_fields_then_merges_fragments(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)
    client = scripted_client(reply())
    result = run(plan, client, tmp_path)
    assert result.exit_code == 0, result.diagnostics
    [request] = [r for r in sent(client) if r.purpose == "generate nurse"]
    user = request.messages[-1].content
    assert user.startswith("Create this person: A nurse from Lisbon in her thirties\n")
    assert "Context: A study of hospital staff" in user
    assert 'These details are fixed, and the persona must match them: {"age":34}' in user
    assert request.schema_name == "persona"
    assert (request.model, request.temperature) == ("gpt-4o-mini", 0.9)
    saved = json.loads((result.run_dir / "personas" / "nurse.agent.json").read_text())
    persona = saved["persona"]
    assert persona["age"] == 34  # written, over the generated 50
    assert persona["name"] == "Person nurse"  # generated
    assert persona["personality"]["traits"] == ["You are calm.", "You stay calm."]


def test_vary_values_reach_prompts_rows_and_keep_the_quota(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)
    client = scripted_client(reply({"taste": ["salty", "sweet", "spicy"]}))
    result = run(plan, client, tmp_path)
    assert result.exit_code == 0, result.diagnostics
    [proposal] = [r for r in sent(client) if r.purpose == "propose folk"]
    assert proposal.json_schema is not None
    taste = proposal.json_schema["properties"]["taste"]
    assert (taste["minItems"], taste["maxItems"]) == (3, 3)
    assert "- taste: their favourite flavour (3 values)" in proposal.messages[-1].content
    assert "Particularities: They live in Spain" in proposal.messages[-1].content
    assert proposal.temperature == 1.2  # the population's own
    by_member = {row["agent"]: row["persona_taste"] for row in result.rows if row["population"]}
    assert Counter(by_member.values()) == {"salty": 2, "sweet": 2, "spicy": 2}
    for agent_id, value in by_member.items():
        [request] = [r for r in sent(client) if r.purpose == f"generate {agent_id}"]
        user = request.messages[-1].content
        assert f"Their characteristics, which the persona must match: taste: {value}." in user
        assert "Population:" not in user  # no demographics
        assert request.temperature == 1.2
    slots = {a.id: a.vary_slots["taste"] for a in plan.agents if a.population}
    assert all(by_member[i] == ["salty", "sweet", "spicy"][s] for i, s in slots.items())


def test_repeated_proposals_are_repaired_with_a_note_and_an_exact_quota(
    tmp_path: Path,
) -> None:
    plan = compile_text(SCENARIO, tmp_path)
    client = scripted_client(reply({"taste": ["Salty", " salty ", "sweet"]}))
    result = run(plan, client, tmp_path)
    assert result.exit_code == 0, result.diagnostics
    values = Counter(row["persona_taste"] for row in result.rows if row["population"])
    assert values == {"Salty": 3, "sweet": 3}
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    [note] = [n for n in manifest["notes"] if "taste" in n]
    assert "2 distinct values of the 3 asked for (1 empty or repeated dropped)" in note


def test_vary_values_are_a_pure_function_of_the_answer(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)
    step = next(s for s in plan.steps if isinstance(s, ProposeStep))
    members = [a for a in plan.agents if a.population == "folk"]
    first = vary_values(step, {"taste": ["a", "b", "c"]}, members)
    assert vary_values(step, {"taste": ["a", "b", "c"]}, list(reversed(members))) == first
    with pytest.raises(RuntimeError, match="no usable value"):
        vary_values(step, {"taste": ["", "  ", ""]}, members)


def test_agent_model_reaches_turns_and_extractions_and_the_manifest(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)
    client = scripted_client(reply())
    result = run(plan, client, tmp_path)
    [turn] = [r for r in sent(client) if r.purpose == "act nurse"]
    assert (turn.model, turn.temperature) == ("gpt-4o-mini", 0.9)
    [extraction] = [r for r in sent(client) if r.purpose == "extract nurse"]
    assert (extraction.model, extraction.temperature) == ("gpt-4o-mini", 0.0)
    [member_turn] = [r for r in sent(client) if r.purpose == "act folk/001"]
    assert (member_turn.model, member_turn.temperature) == (None, 1.2)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["agent_models"]["nurse"] == {"model": "gpt-4o-mini", "temperature": 0.9}
    assert manifest["agent_models"]["folk/001"] == {"model": "scripted-1", "temperature": 1.2}
    # nurse: generate, act, extract; the others: 1 proposal + 6 x (generate, act, extract)
    assert manifest["calls_by_model"] == {"gpt-4o-mini": 3, "scripted-1": 19}


def test_cache_key_is_unchanged_without_an_agent_model(tmp_path: Path) -> None:
    cache = LLMCache(tmp_path / "cache.sqlite")
    client = scripted_client(reply(), cache=cache)
    request = ChatRequest(
        messages=(Message("user", "hi"),),
        temperature=0.5,
        max_tokens=10,
        json_schema={"type": "object", "properties": {"likes": {"type": "boolean"}}},
        purpose="extract x",
    )
    own = ChatRequest(**{**request.__dict__, "model": "gpt-4o"})
    asyncio.run(client.complete(request))
    asyncio.run(client.complete(own))
    # The provider's model in the key for None, as before `model` existed.
    assert cache.get(cache_key("fake", "scripted-1", request)) is not None
    assert cache.get(cache_key("fake", "gpt-4o", request)) is not None
    assert cache_key("fake", "scripted-1", own) == cache_key("fake", "scripted-1", request)
    cache.close()


def test_openai_sends_the_agents_model_and_embedded_refuses_another() -> None:
    provider = OpenAICompatibleProvider(
        base_url="http://127.0.0.1:1/v1", model="gpt-4o-mini", api_key="unused"
    )
    request = ChatRequest(messages=(Message("user", "hi"),), temperature=0.2, max_tokens=5)
    assert provider._payload(request, "json_schema")["model"] == "gpt-4o-mini"
    mine = ChatRequest(**{**request.__dict__, "model": "gpt-4o"})
    assert provider._payload(mine, "json_schema")["model"] == "gpt-4o"
    embedded = EmbeddedProvider()
    assert embedded.serves(embedded.model) and not embedded.serves("gpt-4o")
    with pytest.raises(ProviderConfigError, match="only runs"):
        asyncio.run(embedded.complete(mine))


def test_embedded_run_refuses_an_agents_model_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "people.tts"
    path.write_text(SCENARIO)
    outcome = Session(state_dir=tmp_path / "state").run(
        path, RunOptions(provider="embedded", output_dir=tmp_path / "out")
    )
    assert outcome.exit_code == 2
    [problem] = outcome.diagnostics
    assert problem.code == "E513"
    assert "persona `nurse` asks for model 'gpt-4o-mini'" in problem.message
    assert problem.primary is not None and problem.primary.span.line == line_of('model "gpt')
    assert problem.primary.span.column == 3
    assert problem.help and "--provider openai" in problem.help[0]


def test_members_without_vary_keep_v1_requests(tmp_path: Path) -> None:
    """A v1 population's member request: no `model`, the scenario's temperature."""
    text = """\
scenario s { seed 1 }
demographics d { age { 20..30 100% } }
population p { from d; size 1 }
world w { mode survey; agents p }
timeline { ask w "Hi?" }
"""
    plan = compile_text(text, tmp_path)
    member = plan.agent("p/001")
    request = persona_request(plan, member, "", "", "01-generate-p")
    assert request.model is None and request.temperature == plan.settings.temperature
    assert "Population: \n" in request.messages[-1].content


def test_a_resumed_run_keeps_the_proposed_values(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)

    def fail(request: ChatRequest) -> Exception | None:
        return RuntimeError("down") if request.purpose == "generate folk/003" else None

    failing = scripted_client(reply({"taste": ["salty", "sweet", "spicy"]}), fail=fail)
    assert run(plan, failing, tmp_path).exit_code != 0
    resumed = scripted_client(reply({"taste": ["other", "values", "now"]}))
    result = run(plan, resumed, tmp_path)
    assert result.exit_code == 0, result.diagnostics
    assert not [r for r in sent(resumed) if r.purpose == "propose folk"]
    tastes = Counter(row["persona_taste"] for row in result.rows if row["population"])
    assert tastes == {"salty": 2, "sweet": 2, "spicy": 2}


# ------------------------------------------------------------------ TinyTroupe engine


class PeopleProvider(HashProvider):
    """The hash provider, with proposals of exactly N distinct values (`prefix i`)."""

    def __init__(self, prefix: str = "", **options: Any) -> None:
        super().__init__(**options)
        self._prefix = prefix

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if request.schema_name != "proposal":
            return await super().complete(request)
        self.requests.append(request)
        assert request.json_schema is not None
        data = {
            name: [f"{self._prefix or name} {i}" for i in range(schema["minItems"])]
            for name, schema in request.json_schema["properties"].items()
        }
        return ChatResponse(json.dumps(data), data, 10, 5, self.name, self.model)


@needs_tinytroupe
def test_generated_people_are_real_tinypersons_on_tinytroupe(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)
    provider = PeopleProvider()
    result, client = run_tinytroupe(plan, tmp_path, provider)
    assert result.exit_code == 0, result.diagnostics
    # The same generation requests as the built-in engine's.
    builtin = scripted_client(reply())
    run(plan, builtin, tmp_path / "builtin")
    for purpose in ("generate nurse", "generate folk/001", "propose folk"):
        [ours] = [r for r in provider.requests if r.purpose == purpose]
        [theirs] = [r for r in sent(builtin) if r.purpose == purpose]
        assert ours.messages == theirs.messages and ours.seed == theirs.seed
        assert (ours.model, ours.temperature) == (theirs.model, theirs.temperature)
    saved = json.loads((result.run_dir / "personas" / "nurse.agent.json").read_text())
    assert saved["type"] == "TinyPerson"
    nurse = saved["persona"]
    assert nurse["age"] == 34 and "You stay calm." in nurse["personality"]["traits"]
    rows = [row for row in result.rows if row["population"]]
    assert Counter(row["persona_taste"] for row in rows) == {
        "taste 0": 2,
        "taste 1": 2,
        "taste 2": 2,
    }
    # The bridge applies each agent's own model and temperature to its TinyTroupe calls.
    turns = [r for r in provider.requests if r.purpose == "act nurse"]
    assert turns and all((r.model, r.temperature) == ("gpt-4o-mini", 0.9) for r in turns)
    [extraction] = [r for r in provider.requests if r.purpose == "extract nurse"]
    assert (extraction.model, extraction.temperature) == ("gpt-4o-mini", 0.0)
    member_turns = [r for r in provider.requests if r.purpose == "act folk/001"]
    assert member_turns and all((r.model, r.temperature) == (None, 1.2) for r in member_turns)
    assert client.calls_by_model["gpt-4o-mini"] == 3


@needs_tinytroupe
def test_a_resumed_tinytroupe_run_keeps_the_proposed_values(tmp_path: Path) -> None:
    plan = compile_text(SCENARIO, tmp_path)

    def fail(request: ChatRequest) -> Exception | None:
        return RuntimeError("down") if request.purpose == "generate folk/003" else None

    failed, _ = run_tinytroupe(plan, tmp_path, PeopleProvider("first", fail=fail))
    assert failed.exit_code != 0
    provider = PeopleProvider("second")
    result, _ = run_tinytroupe(plan, tmp_path, provider)
    assert result.exit_code == 0, result.diagnostics
    assert not [r for r in provider.requests if r.purpose == "propose folk"]
    tastes = Counter(row["persona_taste"] for row in result.rows if row["population"])
    assert tastes == {"first 0": 2, "first 1": 2, "first 2": 2}


def test_a_generated_persona_is_estimated_at_a_generated_size(tmp_path: Path) -> None:
    """Its turns carry the persona the model will write, not just the fields written."""
    base = """\
scenario s { seed 1 }
persona ana { %s }
world w { mode survey; agents ana }
timeline { ask w "Hi?" }
"""
    generated = compile_text(base % 'generate "A nurse"; age 34', tmp_path, "g.tts")
    written = compile_text(base % 'name "Ana"; age 34', tmp_path, "w.tts")
    ask_generated, ask_written = generated.steps[-1], written.steps[-1]
    assert ask_generated.calls == ask_written.calls == 1
    difference = ask_generated.input_tokens - ask_written.input_tokens
    assert difference == GENERATE_OUTPUT_TOKENS - json_tokens({"name": "Ana", "age": 34})
