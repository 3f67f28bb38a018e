"""The interpreter and the built-in engine: step semantics, concurrency, outputs.

Most tests drive hand-built plans with the real `LLMClient` over
`ScriptedProvider`, a fake provider whose answers are a pure function of the
request (so it behaves like a deterministic model behind the LLM cache) and
which can add random delays or fail on demand.
Tests marked `model` run the real embedded model (SmolLM2) through the
provider layer's `LLMClient` and `LLMCache`.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.origins import ORIGIN, origin_at
from tiny_dsl.checks import check_file
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import (
    AgentPlan,
    AskStep,
    BroadcastStep,
    CheckpointStep,
    DeliverStep,
    Delivery,
    Estimate,
    ExtractStep,
    FieldPlan,
    GenerateStep,
    InterventionPlan,
    InterviewStep,
    OutputPlan,
    Plan,
    PlanSettings,
    PopulationPlan,
    RunStep,
    Step,
    ThinkStep,
    VariantPlan,
    WaitStep,
    WorldPlan,
)
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.checkpoints import CheckpointStore
from tiny_dsl.runtime.client import ClientStats, LLMClient
from tiny_dsl.runtime.engines import (
    TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S,
    TINYTROUPE_EMBEDDED_N_CTX,
    EngineProfile,
    engine_profile,
)
from tiny_dsl.runtime.engines.builtin import BuiltinEngine
from tiny_dsl.runtime.engines.core import EngineStateError, TranscriptEvent
from tiny_dsl.runtime.engines.profile import COMPACT_MEMORY
from tiny_dsl.runtime.engines.prompts import derive_seed
from tiny_dsl.runtime.interpreter import PlanError, load_plan
from tiny_dsl.runtime.progress import PlainProgress, RunEvent
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    InvalidOutput,
    validate_json,
)
from tiny_dsl.session import RunOutcome, Session

# ----------------------------------------------------------------------------- helpers


Reply = Callable[[ChatRequest, str], dict[str, Any]]


def talk(content: str, target: str = "") -> dict[str, Any]:
    return {
        "actions": [
            {"type": "TALK", "content": content, "target": target},
        ],
        "cognitive_state": {"goals": "", "attention": "", "emotions": ""},
    }


def generated_persona(name: str, **changes: Any) -> dict[str, Any]:
    """A persona as the generation schema asks for it."""
    persona: dict[str, Any] = {
        "name": name,
        "age": 99,
        "gender": "unknown",
        "nationality": "Utopian",
        "residence": "Springfield",
        "education": "High school",
        "occupation": {"title": "model title", "organization": "Org", "description": "Works."},
        "personality": {
            "traits": ["You are calm."],
            "big_five": {
                trait: "Medium."
                for trait in (
                    "openness",
                    "conscientiousness",
                    "extraversion",
                    "agreeableness",
                    "neuroticism",
                )
            },
        },
        "preferences": {"interests": ["chess"], "likes": ["tea"], "dislikes": []},
        "beliefs": ["model belief"],
        "behaviors": {"general": []},
    }
    persona.update(changes)
    return persona


def digest(request: ChatRequest) -> str:
    return hashlib.sha256(request.messages[-1].content.encode()).hexdigest()[:8]


def default_reply(request: ChatRequest, who: str) -> dict[str, Any]:
    """Speech naming the speaker and a digest of what it saw; valid extraction and personas."""
    if request.schema_name == "agent_actions":
        return talk(f"{who} says {digest(request)}")
    if request.schema_name == "persona":
        return generated_persona(f"Person {who[-1]}")
    assert request.json_schema is not None
    values: dict[str, Any] = {}
    for name, schema in request.json_schema["properties"].items():
        value = schema["anyOf"][0]
        kind = value["type"]
        if kind == "integer":
            values[name] = value.get("minimum", 0)
        elif kind == "number":
            values[name] = value.get("maximum", 1.0)
        elif kind == "boolean":
            values[name] = True
        elif "enum" in value:
            values[name] = value["enum"][0]
        elif kind == "array":
            values[name] = [f"theme of {who}"]
        else:
            values[name] = f"text of {who}"
    return values


class ScriptedProvider:
    """A deterministic `Provider`: answers come from `reply(request, who)`.

    `who` is the agent the call is for, so the answers are a pure function of the
    request, like a deterministic model behind the LLM cache. `delay(request)`
    adds latency; `fail(request)` may return an exception to raise. Answers are
    checked against the request's schema as providers do, unless `validate` is
    off (a provider that only reads the schema as a hint). `requests` holds every
    request that reached the provider (the client answers the rest from its cache).
    """

    name = "fake"
    model = "scripted-1"
    supports_json_schema = True

    def __init__(
        self,
        reply: Reply = default_reply,
        *,
        delay: Callable[[ChatRequest], float] | None = None,
        fail: Callable[[ChatRequest], Exception | None] | None = None,
        validate: bool = True,
    ) -> None:
        self.requests: list[ChatRequest] = []
        self._reply, self._delay, self._fail, self._validate = reply, delay, fail, validate

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        if self._delay is not None:
            await asyncio.sleep(self._delay(request))
        error = self._fail(request) if self._fail else None
        if error is not None:
            raise error
        data = self._reply(request, request.purpose.split(" ", 1)[1])
        errors = validate_json(data, request.json_schema or {}) if self._validate else []
        if errors:
            raise InvalidOutput(
                "invalid", text=json.dumps(data), errors=errors, input_tokens=0, output_tokens=0
            )
        return ChatResponse(json.dumps(data), data, 10, 5, self.name, self.model)

    async def aclose(self) -> None:
        return None


def scripted_client(
    reply: Reply = default_reply,
    *,
    cache: LLMCache | None = None,
    delay: Callable[[ChatRequest], float] | None = None,
    fail: Callable[[ChatRequest], Exception | None] | None = None,
    validate: bool = True,
) -> LLMClient:
    """The real `LLMClient` over a `ScriptedProvider`; a shared `cache` makes a warm rerun.

    Concurrency is not limited below what the tests start, and retries do not
    wait, so timing-dependent behaviour shows and the tests stay fast.
    """
    provider = ScriptedProvider(reply, delay=delay, fail=fail, validate=validate)
    return LLMClient(provider, cache, max_concurrency=64, backoff_base_s=0.0)


def sent(client: LLMClient) -> list[ChatRequest]:
    """The requests that reached `client`'s scripted provider, in the order sent."""
    provider = client.provider
    assert isinstance(provider, ScriptedProvider)
    return provider.requests


def prompts(client: LLMClient, who: str) -> list[str]:
    """Everything sent in the act calls of agent `who`, one string per call."""
    return [
        "\n".join(m.content for m in r.messages) for r in sent(client) if r.purpose == f"act {who}"
    ]


def persona(agent_id: str, name: str, **extra: Any) -> AgentPlan:
    return AgentPlan(id=agent_id, kind="persona", persona={"name": name, **extra})


def world(
    name: str,
    mode: str,
    agents: list[str],
    moderator: str | None = None,
    start: str = "2025-03-03T08:00:00",
) -> WorldPlan:
    return WorldPlan(
        name=name,
        mode=mode,  # type: ignore[arg-type]
        agents=agents,
        moderator=moderator,
        context=f"The {name}.",
        start=start,
    )


def extract(
    world_name: str, agents: list[str], fields: list[FieldPlan] | None = None
) -> ExtractStep:
    return ExtractStep(
        id="",
        origin=ORIGIN,
        world=world_name,
        agents=agents,
        fields=fields
        or [
            FieldPlan(name="score", kind="int", low=1, high=10, description="A score"),
            FieldPlan(name="likes", kind="bool"),
        ],
    )


def make_plan(
    agents: list[AgentPlan],
    worlds: list[WorldPlan],
    steps: list[Step],
    *,
    interventions: list[InterventionPlan] | None = None,
    populations: list[PopulationPlan] | None = None,
    formats: list[str] | None = None,
    scenario: str = "test_scenario",
    seed: int = 1,
) -> Plan:
    """A plan as `compile_plan` would make it: step ids, origins and chained hashes filled in.

    The chain mimics the compiler's: each step's hash covers the definitions and
    every step up to it, so editing step k changes the hashes from k on.
    """
    settings = PlanSettings(
        scenario=scenario,
        title="Test scenario",
        seed=seed,
        model=None,
        provider=None,
        temperature=0.7,
        budget_usd=None,
        max_concurrency=8,
        max_calls=None,
        engine="builtin",
    )
    definitions = json.dumps(
        [
            settings.model_dump(mode="json"),
            [a.model_dump(mode="json") for a in agents],
            [w.model_dump(mode="json") for w in worlds],
            [i.model_dump(mode="json") for i in interventions or []],
        ],
        sort_keys=True,
    )
    previous = hashlib.sha256(definitions.encode()).hexdigest()
    hashed: list[Step] = []
    for number, step in enumerate(steps, start=1):
        content = step.model_dump_json(exclude={"id", "origin", "hash"})
        previous = hashlib.sha256((previous + content).encode()).hexdigest()
        hashed.append(
            step.model_copy(
                update={
                    "id": step.id or f"{number:02d}-{step.kind}",
                    "origin": origin_at(f"test.tts:{number}:3")
                    if step.origin == ORIGIN
                    else step.origin,
                    "hash": previous,
                }
            )
        )
    return Plan(
        tiny_dsl_version="0.1.0",
        source_file="test.tts",
        source_hash="0" * 64,
        settings=settings,
        agents=agents,
        populations=populations or [],
        worlds=worlds,
        interventions=interventions or [],
        steps=hashed,
        output=OutputPlan(formats=formats or ["csv", "json", "jsonl"], dir="unused"),
        estimate=Estimate(
            calls=0, input_tokens=0, output_tokens=0, cost_usd=0.0, model="m", priced=False
        ),
        plan_hash=previous,
    )


def run(plan: Plan, client: LLMClient, tmp_path: Path, **options: Any) -> RunOutcome:
    """The pipeline after setup, as `tts run` goes through it (folder, reports, manifest)."""
    session = Session(state_dir=tmp_path / "state")
    return session.execute(plan, client, output_dir=tmp_path / "out", **options)


def transcript_lines(result: RunOutcome) -> list[str]:
    return (result.run_dir / "transcript.jsonl").read_text().splitlines()


PANEL = [
    persona("ann", "Ann Lee", age=30, occupation={"title": "Nurse"}),
    persona("bob", "Bob Stone", age=40, gender="male"),
    persona("cat", "Cat Diaz"),
    persona("mod", "Mo Derator"),
]

# ------------------------------------------------------------------- step semantics


def test_survey_agents_never_hear_each_other(tmp_path: Path) -> None:
    agents = PANEL[:2]
    steps: list[Step] = [
        AskStep(
            id="", origin=ORIGIN, world="poll", question="First question?", agents=["ann", "bob"]
        ),
        AskStep(
            id="", origin=ORIGIN, world="poll", question="Second question?", agents=["ann", "bob"]
        ),
    ]
    client = scripted_client()
    result = run(
        make_plan(agents, [world("poll", "survey", ["ann", "bob"])], steps), client, tmp_path
    )

    ann_said = [e.content for e in result.transcript if e.agent == "ann" and e.type == "TALK"]
    assert len(ann_said) == 2
    for prompt in prompts(client, "bob"):
        assert "ann says" not in prompt and "Ann Lee" not in prompt
    assert "Nobody else is present." in prompts(client, "bob")[0]
    # Each agent heard only the questions.
    heard = [(e.agent, e.content) for e in result.transcript if e.kind == "stimulus"]
    assert heard == [
        ("ann", "First question?"),
        ("bob", "First question?"),
        ("ann", "Second question?"),
        ("bob", "Second question?"),
    ]


def test_focus_group_everyone_hears_untargeted_talk(tmp_path: Path) -> None:
    panel = world("panel", "focus_group", ["ann", "bob", "cat"], moderator="mod")
    steps: list[Step] = [
        BroadcastStep(id="", origin=ORIGIN, world="panel", text="Welcome!", speaker="mod"),
        RunStep(id="", origin=ORIGIN, world="panel", round=1, of=2, agents=["ann", "bob", "cat"]),
        RunStep(id="", origin=ORIGIN, world="panel", round=2, of=2, agents=["ann", "bob", "cat"]),
    ]
    client = scripted_client()
    result = run(make_plan(PANEL, [panel], steps), client, tmp_path)

    round1 = [e for e in result.transcript if e.step == "02-run"]
    ann_talk = next(e for e in round1 if e.agent == "ann" and e.type == "TALK")
    listeners = sorted(e.agent for e in round1 if e.kind == "stimulus" and e.source == "ann")
    assert listeners == ["bob", "cat", "mod"]  # the moderator listens too
    # Round 2 prompts show what everyone said in round 1; the moderator never acts.
    assert ann_talk.content in prompts(client, "bob")[1]
    assert ann_talk.content in prompts(client, "cat")[1]
    assert ann_talk.content not in prompts(client, "bob")[0]
    assert prompts(client, "mod") == []
    assert "Mo Derator says" in prompts(client, "ann")[0]
    # Others present are named so agents can address them.
    assert "Also present: Bob Stone, Cat Diaz, Mo Derator (moderator)." in prompts(client, "ann")[0]


def test_targeted_talk_reaches_only_its_target(tmp_path: Path) -> None:
    def reply(request: ChatRequest, who: str) -> dict[str, Any]:
        if who == "ann":
            return talk("Bob, what do you think?", target="Bob Stone")
        return talk(f"{who} agrees")

    panel = world("panel", "focus_group", ["ann", "bob", "cat"], moderator="mod")
    steps: list[Step] = [
        RunStep(id="", origin=ORIGIN, world="panel", round=1, of=1, agents=["ann", "bob", "cat"])
    ]
    result = run(make_plan(PANEL, [panel], steps), scripted_client(reply), tmp_path)

    talk_event = next(e for e in result.transcript if e.agent == "ann" and e.type == "TALK")
    assert (talk_event.target, talk_event.target_name) == ("bob", "Bob Stone")
    heard_by = [e.agent for e in result.transcript if e.kind == "stimulus" and e.source == "ann"]
    assert heard_by == ["bob"]


def test_interview_mode_talk_reaches_only_the_moderator(tmp_path: Path) -> None:
    room = world("room", "interview", ["ann", "bob"], moderator="mod")
    steps: list[Step] = [
        AskStep(id="", origin=ORIGIN, world="room", question="How are you?", agents=["ann", "bob"])
    ]
    result = run(make_plan(PANEL, [room], steps), scripted_client(), tmp_path)
    heard = [(e.agent, e.source) for e in result.transcript if e.kind == "stimulus" and e.source]
    assert heard == [("ann", "mod"), ("bob", "mod"), ("mod", "ann"), ("mod", "bob")]


def test_deliver_frames_by_channel_sets_clock_and_skips_control(tmp_path: Path) -> None:
    inbox = world("inbox", "survey", ["ann", "bob"])
    campaign = InterventionPlan(
        name="promo",
        channel="email",
        control=0.5,
        assign="random",
        variants=[VariantPlan(name="short", content="Buy now!", timing="afternoon")],
        targets=["ann", "bob"],
        assignment={"ann": "short", "bob": "control"},
    )
    steps: list[Step] = [
        DeliverStep(
            id="",
            origin=ORIGIN,
            intervention="promo",
            world="inbox",
            deliveries=[
                Delivery(
                    agent="ann",
                    variant="short",
                    content="Buy now!",
                    channel="email",
                    time="2025-03-03T14:00:00",
                )
            ],
            control=["bob"],
        ),
        WaitStep(id="", origin=ORIGIN, seconds=86400, text="1 day"),
        AskStep(
            id="", origin=ORIGIN, world="inbox", question="Will you buy?", agents=["ann", "bob"]
        ),
        extract("inbox", ["ann", "bob"]),
    ]
    client = scripted_client()
    result = run(make_plan(PANEL[:2], [inbox], steps, interventions=[campaign]), client, tmp_path)

    delivered = [e for e in result.transcript if e.step == "01-deliver"]
    assert [(e.agent, e.type, e.time, e.source) for e in delivered] == [
        ("ann", "VISUAL", "2025-03-03T14:00:00", "promo")
    ]
    assert delivered[0].content == '[email] You receive an email: "Buy now!"'
    # The wait moved both clocks by a day from where each was.
    assert "Current date and time: Tuesday 2025-03-04 14:00." in prompts(client, "ann")[0]
    assert "Current date and time: Tuesday 2025-03-04 08:00." in prompts(client, "bob")[0]
    assert "Buy now!" not in prompts(client, "bob")[0]
    rows = {row["agent"]: row for row in result.rows}
    assert rows["ann"]["variant"] == rows["ann"]["variant_promo"] == "short"
    assert rows["bob"]["variant"] == "control"


def test_interview_asks_each_question_in_turn(tmp_path: Path) -> None:
    steps: list[Step] = [
        InterviewStep(
            id="",
            origin=ORIGIN,
            interviewer="mod",
            agents=["ann", "bob"],
            questions=["Why did you join?", "What would you change?"],
        )
    ]
    client = scripted_client()
    result = run(
        make_plan(PANEL, [world("app", "survey", ["ann", "bob"])], steps), client, tmp_path
    )

    sequence = [(e.agent, e.kind, e.type, e.content[:12]) for e in result.transcript]
    ann_answers = [e.content for e in result.transcript if e.agent == "ann" and e.type == "TALK"]
    assert sequence[:5] == [
        ("mod", "action", "TALK", "Why did you "),
        ("ann", "stimulus", "CONVERSATION", "Why did you "),
        ("ann", "action", "TALK", ann_answers[0][:12]),
        ("mod", "stimulus", "CONVERSATION", ann_answers[0][:12]),
        ("ann", "action", "DONE", ""),
    ]
    assert sequence[5][3] == "What would y"
    # The second question's prompt shows the first answer; the sessions are 1:1.
    first, second = prompts(client, "ann")
    assert ann_answers[0] in second and ann_answers[0] not in first
    assert all("ann says" not in prompt for prompt in prompts(client, "bob"))
    assert all(e.world == "app" for e in result.transcript)


def test_think_is_a_private_thought(tmp_path: Path) -> None:
    steps: list[Step] = [
        ThinkStep(id="", origin=ORIGIN, agents=["ann"], text="I am tired of ads."),
        AskStep(id="", origin=ORIGIN, world="poll", question="Mood?", agents=["ann", "bob"]),
    ]
    client = scripted_client()
    run(make_plan(PANEL[:2], [world("poll", "survey", ["ann", "bob"])], steps), client, tmp_path)
    assert "You think: I am tired of ads." in prompts(client, "ann")[0]
    assert "tired" not in prompts(client, "bob")[0]


def test_a_turn_ends_with_done_and_blank_actions_are_dropped(tmp_path: Path) -> None:
    def reply(request: ChatRequest, who: str) -> dict[str, Any]:
        # The turn schema has no DONE to answer, and every action needs a content.
        schema = request.json_schema or {}
        actions = schema["properties"]["actions"]
        assert actions["minItems"] == 1
        assert actions["items"]["properties"]["type"]["enum"] == ["TALK", "THINK"]
        return {
            "actions": [
                {"type": "THINK", "content": f"{who} hmm", "target": ""},
                {"type": "TALK", "content": "   ", "target": ""},
            ],
            "cognitive_state": {"goals": "", "attention": "", "emotions": "calm"},
        }

    panel = world("panel", "focus_group", ["ann", "bob"])
    steps: list[Step] = [
        RunStep(id="", origin=ORIGIN, world="panel", round=1, of=2, agents=["ann", "bob"]),
        RunStep(id="", origin=ORIGIN, world="panel", round=2, of=2, agents=["ann", "bob"]),
    ]
    client = scripted_client(reply)
    result = run(make_plan(PANEL[:2], [panel], steps), client, tmp_path)
    first_round = [(e.agent, e.type) for e in result.transcript if e.step == "01-run"]
    assert first_round == [("ann", "THINK"), ("ann", "DONE"), ("bob", "THINK"), ("bob", "DONE")]
    assert "ann hmm" not in prompts(client, "bob")[1]  # thoughts are private
    assert "emotions: calm" in prompts(client, "ann")[1]  # the cognitive state carries over


def test_generate_fleshes_out_members_with_unique_names(tmp_path: Path) -> None:
    def reply(request: ChatRequest, who: str) -> dict[str, Any]:
        if request.schema_name != "persona":
            return default_reply(request, who)
        return generated_persona("Sam Poe")  # every member gets the same name

    members = [
        AgentPlan(
            id=f"crowd/{index}",
            kind="member",
            population="crowd",
            segment="young",
            index=index,
            attributes={"age": 20 + index, "gender": "female", "occupation": "teacher"},
            particularities="Likes hiking.",
            fragments=[
                {"preferences": {"likes": ["tea", "hiking"]}, "beliefs": ["fragment belief"]},
                {"gender": "male", "occupation": {"organization": "School"}},
            ],
        )
        for index in (1, 2, 3)
    ]
    agents = [persona("sam", "Sam Poe"), *members]
    population = PopulationPlan(
        name="crowd",
        demographics="town",
        demographics_description="People of a small town.",
        size=3,
        segments={"young": 3},
        members=[m.id for m in members],
    )
    steps: list[Step] = [
        GenerateStep(id="", origin=ORIGIN, population="crowd", agents=[m.id for m in members]),
        extract("town", [m.id for m in members]),
    ]
    client = scripted_client(reply)
    plan = make_plan(
        agents, [world("town", "survey", [m.id for m in members])], steps, populations=[population]
    )
    result = run(plan, client, tmp_path)

    rows = {row["agent"]: row for row in result.rows}
    assert [rows[m.id]["name"] for m in members] == ["Sam Poe 2", "Sam Poe 3", "Sam Poe 4"]
    first = rows["crowd/1"]
    assert first["persona_age"] == 21 and first["persona_gender"] == "female"
    assert first["persona_occupation"] == "teacher"
    prompt = sent(client)[0].messages[1].content
    assert "age: 21; gender: female; occupation: teacher" in prompt
    assert "Likes hiking." in prompt and "People of a small town." in prompt
    # Fragments were merged TinyTroupe-style into what the model generated.
    store = CheckpointStore(tmp_path / "state", "test_scenario")
    state = store.load(plan.steps[0].hash)["engine_state"]["agents"]["crowd/1"]
    assert state["persona"]["preferences"]["likes"] == ["tea", "hiking"]
    assert state["persona"]["beliefs"] == ["model belief", "fragment belief"]
    assert state["persona"]["occupation"]["organization"] == "Org"  # generated value kept
    assert len(state["notes"]) == 3  # gender and organization conflicts, and the rename
    saved = json.loads((result.run_dir / "personas" / "crowd" / "1.agent.json").read_text())
    assert saved == {"type": "TinyPerson", "persona": state["persona"]}
    assert sorted(p.name for p in (result.run_dir / "personas" / "crowd").iterdir()) == [
        "1.agent.json",
        "2.agent.json",
        "3.agent.json",
    ]
    assert "personas/" in result.manifest.files


def test_a_saved_persona_is_reusable_with_persona_from(tmp_path: Path) -> None:
    """A generated member's `.agent.json` passes `tts check` as `persona x from` and
    declares the very persona the run simulated."""
    member = AgentPlan(
        id="crowd/1",
        kind="member",
        population="crowd",
        segment="general",
        index=1,
        attributes={"age": 41, "occupation": "baker"},
        fragments=[{"beliefs": ["Bread is life."]}],
    )
    population = PopulationPlan(
        name="crowd",
        demographics="town",
        demographics_description="People of a small town.",
        size=1,
        segments={"general": 1},
        members=[member.id],
    )
    steps: list[Step] = [GenerateStep(id="", origin=ORIGIN, population="crowd", agents=[member.id])]
    plan = make_plan(
        [member], [world("town", "survey", [member.id])], steps, populations=[population]
    )
    run_dir = run(plan, scripted_client(), tmp_path).run_dir
    saved = run_dir / "personas" / "crowd" / "1.agent.json"
    declared = declare_from_files(tmp_path, [saved])[0]
    assert declared == json.loads(saved.read_text())["persona"]
    assert declared["age"] == 41 and declared["occupation"]["title"] == "baker"
    assert "Bread is life." in declared["beliefs"]


def test_persona_files_stay_inside_the_run_folder(tmp_path: Path) -> None:
    from tiny_dsl.runtime.outputs import write_personas

    personas = {"crowd/007": {"name": "Cy"}, "../../evil": {"name": "Eve"}}  # a hand-edited plan
    assert write_personas(tmp_path / "run", personas) == 2
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json"))
    assert written == ["run/personas/__/__/evil.agent.json", "run/personas/crowd/007.agent.json"]


def declare_from_files(folder: Path, saved: list[Path]) -> list[dict[str, Any]]:
    """Declare each saved `.agent.json` as `persona pN from "..."` in a scenario in
    `folder`; `tts check` must accept it without a diagnostic. Returns the personas
    the checker declared, in order."""
    from click.testing import CliRunner

    from tiny_dsl.checks import check_file
    from tiny_dsl.cli import main

    names = [f"p{number}" for number in range(len(saved))]
    declarations = "".join(
        f'persona {name} from "{path.relative_to(folder).as_posix()}"\n'
        for name, path in zip(names, saved, strict=True)
    )
    scenario = folder / "reuse.tts"
    scenario.write_text(
        'scenario reuse {\n  title "Reuse"\n}\n\n'
        f"{declarations}\n"
        f"world shop {{\n  mode survey\n  agents {', '.join(names)}\n}}\n\n"
        'timeline {\n  ask shop "How is business?"\n}\n',
        encoding="utf-8",
    )
    outcome = CliRunner().invoke(main, ["check", str(scenario)])
    assert outcome.exit_code == 0, outcome.output
    checked = check_file(scenario)
    assert checked.diagnostics == [] and checked.program is not None
    return [checked.program.personas[name].spec for name in names]


def test_merge_and_attributes_follow_tinytroupe() -> None:
    from tiny_dsl.runtime.engines.builtin.personas import apply_attributes, merge_persona
    from tiny_dsl.runtime.engines.personas import unique_name

    notes: list[str] = []
    merged = merge_persona(
        {"likes": ["tea"], "occupation": {"title": "A"}, "gender": "female", "bio": ""},
        {
            "likes": ["tea", "jam"],
            "occupation": {"organization": "B"},
            "gender": "male",
            "bio": "x",
        },
        notes,
    )
    assert merged == {
        "likes": ["tea", "jam"],
        "occupation": {"title": "A", "organization": "B"},
        "gender": "female",
        "bio": "x",
    }
    assert len(notes) == 1 and "gender" in notes[0] and "kept the generated one" in notes[0]
    assert apply_attributes(merged, {"occupation": "C", "age": 30})["occupation"]["title"] == "C"
    assert unique_name("Ann", {"ann", "ann 2"}) == "Ann 3"


def test_seeds_depend_on_step_and_agent_only() -> None:
    assert derive_seed(1, "02-ask", "ann") == derive_seed(1, "02-ask", "ann")
    assert derive_seed(1, "02-ask", "ann") != derive_seed(1, "02-ask", "bob")
    assert derive_seed(1, "02-ask", "ann") != derive_seed(2, "02-ask", "ann")
    assert 0 <= derive_seed(7, "x") < 2**31


def test_results_never_depend_on_completion_order(tmp_path: Path) -> None:
    agents = [persona(f"p{i}", f"Person {i}") for i in range(12)]
    ids = [a.id for a in agents]
    steps: list[Step] = [
        BroadcastStep(id="", origin=ORIGIN, world="room", text="Go!", speaker=None),
        RunStep(id="", origin=ORIGIN, world="room", round=1, of=2, agents=ids),
        RunStep(id="", origin=ORIGIN, world="room", round=2, of=2, agents=ids),
        InterviewStep(
            id="", origin=ORIGIN, interviewer="p0", agents=ids[1:5], questions=["a?", "b?"]
        ),
        extract("room", ids),
    ]
    plan = make_plan(agents, [world("room", "focus_group", ids)], steps)
    outputs = []
    for attempt in range(2):
        rng = random.Random(attempt)

        def delay(request: ChatRequest, rng: random.Random = rng) -> float:
            return rng.random() * 0.02

        client = scripted_client(delay=delay)
        result = run(plan, client, tmp_path / str(attempt))
        outputs.append((transcript_lines(result), (result.run_dir / "results.csv").read_text()))
    assert outputs[0] == outputs[1]


def test_failed_step_names_step_and_origin(tmp_path: Path) -> None:
    def fail(request: ChatRequest) -> Exception | None:
        return RuntimeError("provider exploded") if request.purpose == "act bob" else None

    steps: list[Step] = [
        AskStep(id="", origin=ORIGIN, world="poll", question="Q?", agents=["ann", "bob"])
    ]
    plan = make_plan(PANEL[:2], [world("poll", "survey", ["ann", "bob"])], steps)
    outcome = run(plan, scripted_client(fail=fail), tmp_path)
    assert outcome.exit_code == 3
    (error,) = outcome.diagnostics
    assert error.code == "E520" and error.message == "step 01-ask failed: provider exploded"
    assert outcome.run_dir is not None
    assert error.notes == (f"partial run in {outcome.run_dir}",)
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["error"] == "test.tts:1:3: step 01-ask failed: provider exploded"
    assert manifest["status"] == "failed" and manifest["exit_code"] == 3
    assert manifest["steps"][0]["status"] == "failed"
    assert not (tmp_path / "out" / "latest").exists()


def test_refuses_unknown_schema_versions_and_uncompiled_plans(tmp_path: Path) -> None:
    plan = make_plan(PANEL[:1], [], [CheckpointStep(id="", origin=ORIGIN, name="x")])
    saved = tmp_path / "plan.json"
    saved.write_text(json.dumps({**plan.model_dump(mode="json"), "schema_version": 99}))
    with pytest.raises(PlanError, match="schema version 99 is not supported"):
        load_plan(saved)
    saved.write_text(plan.model_dump_json())
    assert load_plan(saved) == plan
    unhashed = plan.model_copy(update={"steps": [plan.steps[0].model_copy(update={"hash": ""})]})
    refused = run(unhashed, scripted_client(), tmp_path)
    assert refused.exit_code == 2 and refused.run_dir is None
    assert refused.diagnostics[0].code == "E510"
    assert "chained hash" in refused.diagnostics[0].message


# -------------------------------------------------------------------------- outputs


REQUIRED_MANIFEST_KEYS = {
    "tiny_dsl_version",
    "scenario",
    "plan_hash",
    "source_hash",
    "seed",
    "provider",
    "model",
    "configured",
    "answered_by",
    "engine",
    "started",
    "finished",
    "duration_s",
    "steps",
    "model_calls",
    "cache_hits",
    "retries",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "env_vars",
    "status",
    "exit_code",
}


def test_outputs_manifest_and_latest(tmp_path: Path, llm_cache: LLMCache) -> None:
    steps: list[Step] = [
        AskStep(id="", origin=ORIGIN, world="poll", question="Q?", agents=["ann", "bob"]),
        CheckpointStep(id="", origin=ORIGIN, name="after_q"),
        extract(
            "poll",
            ["ann", "bob"],
            [
                FieldPlan(name="themes", kind="list"),
                FieldPlan(name="mood", kind="enum", members=["up", "down"]),
            ],
        ),
    ]
    plan = make_plan(PANEL[:2], [world("poll", "survey", ["ann", "bob"])], steps)
    client = scripted_client(cache=llm_cache)
    first = run(plan, client, tmp_path, env_vars=["OPENAI_API_KEY"])
    files = {p.name for p in first.run_dir.iterdir()}
    assert files == {
        "manifest.json",
        "plan.json",
        "transcript.jsonl",
        "transcript.md",
        "results.csv",
        "results.json",
        "results.jsonl",
        "personas",
    }
    saved = json.loads((first.run_dir / "personas" / "ann.agent.json").read_text())
    assert saved == {"type": "TinyPerson", "persona": PANEL[0].persona}
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert set(manifest) >= REQUIRED_MANIFEST_KEYS
    assert manifest["model_calls"] == 4 and manifest["cache_hits"] == 0
    assert isinstance(manifest["model_calls"], int) and isinstance(manifest["cache_hits"], int)
    assert manifest["env_vars"] == ["OPENAI_API_KEY"]
    assert manifest["answered_by"] == [{"provider": "fake", "model": "scripted-1"}]
    assert [s["status"] for s in manifest["steps"]] == ["executed"] * 3
    assert manifest["run_id"] == first.run_id and first.run_id.endswith(plan.plan_hash[:8])

    csv_lines = (first.run_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0] == (
        "agent,name,world,population,segment,persona_age,persona_gender,persona_occupation,"
        "themes,mood,_missing,_quality"
    )
    assert csv_lines[1] == "ann,Ann Lee,poll,,,30,,Nurse,theme of ann,up,,"
    assert csv_lines[2] == "bob,Bob Stone,poll,,,40,male,,theme of bob,up,,"
    event = json.loads(transcript_lines(first)[0])
    assert set(event) >= {"seq", "step", "world", "agent", "agent_name", "kind", "type", "time"}
    markdown = (first.run_dir / "transcript.md").read_text()
    assert (
        "## 1. ask poll" in markdown
        and '[2025-03-03 08:00] To Ann Lee, Bob Stone: "Q?"' in markdown
    )

    # A second run (everything restored) gets its own folder and becomes `latest`.
    second = run(plan, scripted_client(cache=llm_cache), tmp_path)
    assert second.run_dir != first.run_dir
    latest = tmp_path / "out" / "latest"
    assert latest.is_symlink() and latest.resolve() == second.run_dir.resolve()
    assert json.loads((latest / "manifest.json").read_text())["run_id"] == second.run_id


def test_progress_lines_when_not_a_terminal(tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    events: list[RunEvent] = []
    display = PlainProgress(stream)

    def on_event(event: RunEvent) -> None:
        events.append(event)
        display(event)

    steps: list[Step] = [
        AskStep(id="", origin=ORIGIN, world="poll", question="Q?", agents=["ann", "bob"]),
        WaitStep(id="", origin=ORIGIN, seconds=60, text="1 minute"),
    ]
    plan = make_plan(PANEL[:2], [world("poll", "survey", ["ann", "bob"])], steps)
    run(plan, scripted_client(), tmp_path, on_event=on_event)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[1/2] ask poll: 2 calls (0 cached) ")
    assert lines[1].startswith("[2/2] wait 1 minute: ")
    assert lines[2].startswith("done in ")
    assert [e.kind for e in events] == [
        "run_started",
        "step_started",
        "step_finished",
        "step_started",
        "step_finished",
        "run_finished",
    ]


def test_live_progress_renders_and_displays_are_chosen_by_stream() -> None:
    import io

    from rich.console import Console

    from tiny_dsl.runtime.progress import LiveProgress, QuietProgress, make_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(quiet=True, stream=Terminal()), QuietProgress)
    assert isinstance(make_progress(stream=io.StringIO()), PlainProgress)
    assert isinstance(make_progress(stream=Terminal()), LiveProgress)

    screen = io.StringIO()
    stats = ClientStats(model_calls=3, cache_hits=2, input_tokens=1200, cost_usd=0.5)
    with LiveProgress(
        Console(file=screen, force_terminal=True, color_system=None, width=100)
    ) as live:
        live(RunEvent("run_started", total=2, stats=stats, restored=1))
        live(RunEvent("step_started", total=2, stats=stats, index=1, label="ask poll"))
        live(RunEvent("step_finished", total=2, stats=stats, index=1, label="ask poll", calls=5))
        live(RunEvent("run_finished", total=2, stats=stats))
    shown = screen.getvalue()
    assert "resuming: 1 of 2 steps restored" in shown and "ask poll: 5 calls" in shown
    assert "2/2" in shown and "1,200 in" in shown and "$0.5000" in shown


def test_normative_focus_group_runs_end_to_end(tmp_path: Path) -> None:
    program = check_file(ROOT / "scenarios" / "focus_group.tts").require_program()
    plan = compile_plan(program)
    client = scripted_client()
    result = run(plan, client, tmp_path)
    assert result.exit_code == 0
    assert len(result.rows) == 3
    assert {row["name"] for row in result.rows} == {"Lisa Carter", "Tomas Novak", "Marcos Almeida"}
    # 5 rounds of 3 participants, then one extraction each; the moderator only speaks.
    assert client.stats.model_calls == 5 * 3 + 3
    assert json.loads((result.run_dir / "results.json").read_text()) == result.rows
    # `md` is the reporting module's; it is asked for exactly that format.
    assert result.manifest.reports.model_dump() == {
        "requested": ["md"],
        "status": "written",
        "files": ["report.md"],
        "reason": "",
    }
    assert (result.run_dir / "report.md").is_file()


def test_no_secret_reaches_any_file_a_run_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    steps: list[Step] = [
        AskStep(id="", origin=ORIGIN, world="poll", question="Q?", agents=["ann"]),
        extract("poll", ["ann"]),
    ]
    plan = make_plan(PANEL[:1], [world("poll", "survey", ["ann"])], steps)
    result = run(plan, scripted_client(), tmp_path, env_vars=["OPENAI_API_KEY"])
    assert result.manifest.env_vars == ["OPENAI_API_KEY"]
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(written) > 5
    for path in written:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        assert secret.encode() not in data, path


# --------------------------------------------------------------- the embedded model

TINY_PANEL = """
scenario tiny_panel {
  title "Tiny panel"
  seed 5
}

persona ana {
  name "Ana Silva"
  age 34
  occupation "Nurse"
}

persona ben {
  name "Ben Okoro"
  age 45
  occupation "Accountant"
}

world room {
  mode focus_group
  agents ana, ben
  context "A short online chat about a $10 monthly vitamin subscription."
}

timeline {
  broadcast room "Would you pay $10 a month for vitamins delivered to your door?"
  run room 1 rounds
}

extract from room {
  would_buy bool         "Whether the person would subscribe"
  interest  int 1..10    "How interested the person is, from 1 to 10"
}

output {
  formats [json, csv]
}
"""


def compile_text(text: str, path: Path) -> Plan:
    path.write_text(text)
    return compile_plan(check_file(path).require_program())


def embedded_client(cache_path: Path) -> Any:
    pytest.importorskip("llama_cpp")
    from tiny_dsl.runtime.providers import EmbeddedProvider

    # One llama.cpp thread: with a thread per core, generation slows down by an order of
    # magnitude as soon as anything else competes for the CPU (a parallel test run).
    provider = EmbeddedProvider(n_threads=1)
    return LLMClient(provider, LLMCache(cache_path), max_concurrency=4)


@pytest.mark.model
def test_embedded_focus_group_gives_schema_valid_rows_and_replays(tmp_path: Path) -> None:
    plan = compile_text(TINY_PANEL, tmp_path / "tiny.tts")
    first = Session(state_dir=tmp_path / "state").execute(
        plan,
        embedded_client(tmp_path / "cache.sqlite"),
        output_dir=tmp_path / "out",
    )
    assert first.manifest.model_calls >= 4
    assert first.manifest.model_dump()["answered_by"] == [
        {"provider": "embedded", "model": "SmolLM2-135M-Instruct"}
    ]
    assert len(first.rows) == 2
    for row in first.rows:
        assert row["would_buy"] is None or isinstance(row["would_buy"], bool)
        assert row["interest"] is None or (
            isinstance(row["interest"], int) and 1 <= row["interest"] <= 10
        )
        for field, reason in row["_missing"].items():
            assert row[field] is None and reason
    # Same plan, new checkpoints: everything comes from the LLM cache.
    second = Session(state_dir=tmp_path / "state-2").execute(
        plan,
        embedded_client(tmp_path / "cache.sqlite"),
        output_dir=tmp_path / "out",
    )
    assert second.manifest.model_calls == 0
    assert second.manifest.cache_hits == first.manifest.model_calls
    assert second.rows == first.rows
    assert transcript_lines(second) == transcript_lines(first)


TINY_POPULATION = """
scenario tiny_population {
  title "Tiny population"
  seed 5
}

import "stdlib/demographics/usa.tts"
import "stdlib/fragments.tts"

population people {
  from usa
  size 3
  segment young {
    size 2
    age 25..35
    particularities "Early in their career."
    fragments [health_conscious]
  }
}

world town {
  mode survey
  agents people
}

timeline {
  broadcast town "Welcome."
}
"""


@pytest.mark.model
def test_embedded_population_gives_distinct_valid_personas(tmp_path: Path) -> None:
    plan = compile_text(TINY_POPULATION, tmp_path / "population.tts")
    result = Session(state_dir=tmp_path / "state").execute(
        plan,
        embedded_client(tmp_path / "cache.sqlite"),
        output_dir=tmp_path / "out",
    )
    members = [agent for agent in plan.agents if agent.kind == "member"]
    assert [m.segment for m in members] == ["young", "young", "general"]
    assert result.manifest.model_calls == 3
    files = sorted((result.run_dir / "personas" / "people").iterdir())
    assert [f.name for f in files] == ["001.agent.json", "002.agent.json", "003.agent.json"]
    personas = declare_from_files(tmp_path, files)  # valid TinyTroupe agent specifications
    assert len({p["name"].casefold() for p in personas}) == 3
    for member, persona in zip(members, personas, strict=True):
        assert persona["age"] == member.attributes["age"]
        assert persona["occupation"]["title"] == member.attributes["occupation"]
        if member.segment == "young":
            assert 25 <= persona["age"] <= 35
            (fragment,) = member.fragments
            assert set(fragment["beliefs"]) <= set(persona["beliefs"])
            assert set(fragment["behaviors"]["general"]) <= set(persona["behaviors"]["general"])


def test_engine_state_round_trips(tmp_path: Path) -> None:
    steps: list[Step] = [
        DeliverStep(
            id="",
            origin=ORIGIN,
            intervention="promo",
            world="poll",
            deliveries=[
                Delivery(agent="ann", variant="v", content="Hi", channel="push", time=None)
            ],
            control=[],
        ),
        WaitStep(id="", origin=ORIGIN, seconds=3600, text="1 hour"),
        AskStep(id="", origin=ORIGIN, world="poll", question="Q?", agents=["ann", "bob"]),
    ]
    plan = make_plan(PANEL[:2], [world("poll", "survey", ["ann", "bob"])], steps)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[TranscriptEvent]]:
        engine = BuiltinEngine(scripted_client())
        await engine.setup(plan)
        transcript: list[TranscriptEvent] = []
        for step in plan.steps:
            transcript += await engine.execute(step)
        state = engine.dump_state()
        saved = [TranscriptEvent.from_json(event.to_json()) for event in transcript]
        copy = BuiltinEngine(scripted_client())
        await copy.setup(plan)
        copy.load_state(json.loads(json.dumps(state)), saved)
        with pytest.raises(EngineStateError, match="transcript does not hold"):
            copy.load_state(state, saved[:-1])
        return state, copy.dump_state(), transcript

    state, restored, transcript = asyncio.run(scenario())
    assert state == restored
    assert state["agents"]["ann"]["clock"] == "2025-03-03T09:00:00"
    assert state["worlds"]["poll"] == "2025-03-03T09:00:00"
    # An agent's memory is saved as the numbers of its events: the transcript holds them.
    assert state["agents"]["ann"]["memory"] == [e.seq for e in transcript if e.agent == "ann"]
    assert "Q?" not in json.dumps(state)


# ------------------------------------------------------------------ engine structure


def test_engine_profile_tunes_only_tinytroupe_on_the_embedded_model() -> None:
    slow = engine_profile("tinytroupe", "embedded")
    assert slow == engine_profile("tinytroupe", None)  # no provider named: the embedded one
    assert slow == EngineProfile(
        n_ctx=TINYTROUPE_EMBEDDED_N_CTX,
        attempt_timeout_s=TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S,
        memory=COMPACT_MEMORY,
    )
    for engine, provider in [("builtin", "embedded"), ("builtin", None), ("tinytroupe", "openai")]:
        assert engine_profile(engine, provider) == EngineProfile(None, 120.0, None)


def _imported_modules(package: Path) -> set[str]:
    """Every `tiny_dsl` module the files under `package` import."""
    imported: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    return {name for name in imported if name.startswith("tiny_dsl")}


def test_engines_import_only_the_core_and_extraction_nothing_of_the_runtime() -> None:
    engines = ROOT / "tiny_dsl" / "runtime" / "engines"
    builtin = _imported_modules(engines / "builtin")
    tinytroupe = _imported_modules(engines / "tinytroupe")
    assert not {m for m in builtin if m.startswith("tiny_dsl.runtime.engines.tinytroupe")}
    assert not {m for m in tinytroupe if m.startswith("tiny_dsl.runtime.engines.builtin")}
    assert "tiny_dsl.runtime.engines" not in builtin | tinytroupe  # the chooser, above both
    extraction = _imported_modules(ROOT / "tiny_dsl" / "extraction")
    assert not {m for m in extraction if m.startswith("tiny_dsl.runtime")}


# ------------------------------------------------------------- the pipeline's run folder

SURVEY_TEXT = """scenario coffee {
  seed 1
}

persona ann {
  name "Ann Lee"
  age 30
}

persona bob {
  name "Bob Roy"
  age 40
}

world room {
  mode survey
  agents ann, bob
}

timeline {
  ask room "Do you like coffee?"
}

extract from room {
  likes_coffee bool "Whether the person likes coffee"
}
"""


def test_html_only_output_still_gets_results_json_and_statistics(tmp_path: Path) -> None:
    # Regression: with `formats [csv, html]` the report said "results.json is missing"
    # and showed no statistics.
    text = SURVEY_TEXT + "analyze {\n  expect share(likes_coffee) > 10%\n}\n"
    text += "output {\n  formats [csv, html]\n}\n"
    plan = compile_text(text, tmp_path / "coffee.tts")
    outcome = run(plan, scripted_client(), tmp_path)
    assert outcome.exit_code == 0 and outcome.run_dir is not None and outcome.manifest
    assert json.loads((outcome.run_dir / "results.json").read_text()) == outcome.rows
    assert outcome.manifest.analysis and "analysis.json" in outcome.manifest.files
    assert outcome.manifest.reports.files == ["report.html"]
    html = (outcome.run_dir / "report.html").read_text()
    assert "is missing" not in html
    assert "share(likes_coffee)" in html and '<span class="badge pass">PASS</span>' in html
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["files"][-1] == "report.html"  # written once, reports included


def test_a_scenario_without_analyze_has_no_analysis_and_no_complaint(tmp_path: Path) -> None:
    # Regression: report.md said "analysis.json is missing: statistics recomputed".
    plan = compile_text(SURVEY_TEXT + "output {\n  formats [md]\n}\n", tmp_path / "c.tts")
    outcome = run(plan, scripted_client(), tmp_path)
    assert outcome.run_dir is not None and outcome.manifest is not None
    assert not outcome.manifest.analysis
    assert not (outcome.run_dir / "analysis.json").exists()
    markdown = (outcome.run_dir / "report.md").read_text()
    assert "is missing" not in markdown and "recomputed" not in markdown


def test_analyze_steps_pass_through_the_runtime(tmp_path: Path) -> None:
    text = SURVEY_TEXT + "analyze {\n  expect share(likes_coffee) > 90%\n}\n"
    plan = compile_text(text, tmp_path / "coffee.tts")
    outcome = run(plan, scripted_client(), tmp_path)
    assert outcome.result is not None
    analyze = outcome.result.steps[-1]
    assert analyze.kind == "analyze" and analyze.status == "executed" and analyze.calls == 0
    # The scripted answers say true for everyone: the expectation holds.
    assert outcome.exit_code == 0 and outcome.manifest and outcome.manifest.expectations_failed == 0
    again = run(plan, scripted_client(), tmp_path)
    assert again.executed == [] and again.analysis == outcome.analysis
