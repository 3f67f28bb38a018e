"""The TinyTroupe engine, on the real TinyTroupe library.

TinyTroupe is an optional extra (see the README): every test that needs it is
skipped, with the install instructions as the reason, when it is absent.
`pytest.importorskip("tinytroupe")` is not used because importing TinyTroupe
directly is exactly what the adapter exists to avoid (banner, root logging,
a log file in the working directory); the check looks for the package without
importing it.

Most tests use a deterministic in-test provider whose answers are a hash of
the request, so any difference in what an agent remembers shows up in what it
says. The test marked `model` runs a cut-down example on the embedded model.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.llama_server import embedded_model_server
from tiny_dsl.checks import check_file
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import DeliverStep, ExtractStep, Plan, RunStep
from tiny_dsl.runtime import engines
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.client import LLMClient
from tiny_dsl.runtime.engines import (
    TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S,
    TINYTROUPE_EMBEDDED_N_CTX,
    EngineUnavailable,
    make_engine,
)
from tiny_dsl.runtime.engines.tinytroupe import (
    COMPACT_MEMORY,
    INSTALL_HINT,
    TinyTroupeEngine,
    tinytroupe_installed,
)
from tiny_dsl.runtime.providers import OpenAICompatibleProvider
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    InvalidOutput,
    ProviderError,
)
from tiny_dsl.session import RunOptions, RunOutcome, Session

needs_tinytroupe = pytest.mark.skipif(not tinytroupe_installed(), reason=INSTALL_HINT)

SCENARIOS = ROOT / "scenarios"


# ------------------------------------------------------------------------ helpers


def compiled(name: str) -> Plan:
    return compile_plan(check_file(SCENARIOS / f"{name}.tts").require_program())


def _value(schema: dict[str, Any], key: str, digest: str) -> Any:
    """A schema-valid value whose strings carry `digest`."""
    for branch in schema.get("anyOf", ()):
        if branch.get("type") != "null":
            return _value(branch, key, digest)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        if "actions" in schema["properties"]:
            actions = [
                {"type": "THINK", "content": f"thinking {digest}", "target": ""},
                {"type": "TALK", "content": f"my view {digest}", "target": ""},
                {"type": "DONE", "content": "", "target": ""},
            ]
            allowed = schema["properties"]["actions"]["maxItems"]
            if allowed < 3:
                actions.pop(0)  # the thought goes first, then the DONE
            return {
                "actions": actions[:allowed],
                "cognitive_state": _value(
                    schema["properties"]["cognitive_state"], "cognitive_state", digest
                ),
            }
        return {k: _value(sub, k, digest) for k, sub in schema["properties"].items()}
    if kind == "array":
        return [_value(schema["items"], key, digest)]
    if kind == "string":
        text = f"Name {digest}" if key == "name" else f"{key} {digest}"
        return text[: schema.get("maxLength", len(text))]
    if kind == "integer":
        return int(schema.get("minimum", 30))
    if kind == "number":
        return float(schema.get("minimum", 0.5))
    return True


class HashProvider:
    """Answers are a function of the request: a schema instance carrying its hash.

    `fail(request)` may return an exception to raise instead; `extraction(data)`
    may rewrite extraction answers.
    """

    name = "hash"
    model = "hash-1"
    supports_json_schema = True

    def __init__(
        self,
        fail: Callable[[ChatRequest], Exception | None] | None = None,
        extraction: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.requests: list[ChatRequest] = []
        self._fail = fail
        self._extraction = extraction

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        await asyncio.sleep(0)
        if self._fail is not None and (error := self._fail(request)) is not None:
            raise error
        digest = hashlib.sha256(
            json.dumps([[m.role, m.content] for m in request.messages]).encode()
        ).hexdigest()[:8]
        data = _value(request.json_schema, "", digest) if request.json_schema else None
        if data is not None and request.schema_name == "extraction" and self._extraction:
            data = self._extraction(data)
        text = json.dumps(data) if data is not None else f"text {digest}"
        return ChatResponse(
            text=text,
            data=data,
            input_tokens=sum(len(m.content) for m in request.messages) // 4,
            output_tokens=len(text) // 4,
            provider=self.name,
            model=self.model,
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def run(
    plan: Plan,
    tmp_path: Path,
    provider: Any,
    *,
    cache: LLMCache | None = None,
    engine: bool = True,
    timeout_s: float = 120.0,
) -> tuple[RunOutcome, LLMClient]:
    client = LLMClient(provider, cache, max_concurrency=8, attempt_timeout_s=timeout_s)
    result = Session(state_dir=tmp_path / "state").execute(
        plan,
        client,
        engine=TinyTroupeEngine(client, memory=COMPACT_MEMORY) if engine else None,
        output_dir=tmp_path / "out",
    )
    return result, client


def transcript(result: RunOutcome) -> list[dict[str, Any]]:
    return [event.to_json() for event in result.transcript]


# ---------------------------------------------------------------- without TinyTroupe


def test_missing_tinytroupe_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "tinytroupe_installed", lambda: False)
    plan = compiled("fed_rate_hike")
    client = LLMClient(HashProvider(), None)
    with pytest.raises(EngineUnavailable) as caught:
        make_engine("tinytroupe", plan, client)
    message = str(caught.value)
    assert "placeholder" in message and "git+https://github.com/microsoft/TinyTroupe" in message
    assert make_engine(None, plan, client).name == "builtin"


# ------------------------------------------------------------------ import containment

IMPORT_CHECK = textwrap.dedent(
    """
    import io, json, logging, os, sys
    root = logging.getLogger()
    ours = logging.StreamHandler(io.StringIO())
    root.addHandler(ours)
    root.setLevel(logging.INFO)
    def snapshot():
        return {"cwd": os.getcwd(), "handlers": [id(h) for h in root.handlers],
                "level": root.level, "path": list(sys.path)}
    before = snapshot()
    import tiny_dsl.runtime.engines.tinytroupe as adapter
    tt = adapter.import_tinytroupe()
    after = snapshot()
    print(json.dumps({
        "unchanged": before == after,
        "api_type": tt.package.config_manager.get("api_type"),
        "consolidation": tt.package.config_manager.get("enable_memory_consolidation"),
        "banner_lines": len(tt.banner.splitlines()),
        "files": sorted(os.listdir(".")),
        "root_records": ours.stream.getvalue(),
    }))
    """
)


@needs_tinytroupe
def test_import_leaves_cwd_logging_and_stdout_alone(tmp_path: Path) -> None:
    # A config.ini in the working directory that TinyTroupe would read if it looked.
    (tmp_path / "config.ini").write_text("[OpenAI]\nAPI_TYPE=ollama\n")
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 1  # our JSON only: the banner was captured
    report = json.loads(lines[0])
    assert report["unchanged"]
    assert report["api_type"] == "tiny_dsl" and report["consolidation"] is False
    assert report["banner_lines"] > 10
    assert report["files"] == ["config.ini"]  # no tinytroupe.*.log
    assert report["root_records"] == ""


@needs_tinytroupe
def test_config_and_log_land_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_dsl.runtime.engines.tinytroupe.loader import CONFIG_INI

    # `tts run` as the CLI does it, on the deterministic provider.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    session = Session(
        root=workdir,
        state_dir=Path(".tts"),
        provider_factory=lambda plan, options: HashProvider(),
    )
    options = RunOptions(engine="tinytroupe", quiet=True, output_dir=Path("outputs"))
    outcome = session.run(SCENARIOS / "fed_rate_hike.tts", options)
    assert outcome.exit_code == 0, outcome.summary
    logs = workdir / ".tts" / "logs"
    assert (logs / "tinytroupe.config.ini").read_text(encoding="utf-8") == CONFIG_INI
    assert (logs / "tinytroupe.log").is_file()
    # Nothing else in the working directory: no config.ini, log file or pickle cache.
    assert sorted(p.name for p in workdir.iterdir()) == [".tts", "outputs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]


# --------------------------------------------------------------------- semantics


@needs_tinytroupe
def test_focus_group_runs_on_tinytroupe(tmp_path: Path) -> None:
    plan = compiled("focus_group")
    provider = HashProvider()
    result, client = run(plan, tmp_path, provider)
    assert result.manifest.engine == "tinytroupe"
    # 3 participants x 5 rounds, then 3 extractions; the moderator never acts.
    purposes = [r.purpose for r in provider.requests]
    assert sorted(set(purposes)) == [
        "act lisa",
        "act marcos",
        "act tomas",
        "extract lisa",
        "extract marcos",
        "extract tomas",
    ]
    assert len(purposes) == 18 and client.stats.model_calls == 18

    events = transcript(result)
    welcome = [e for e in events if e["step"] == "01-broadcast-panel"]
    assert [(e["agent"], e["kind"], e["type"]) for e in welcome] == [
        ("mia", "action", "TALK"),
        ("lisa", "stimulus", "CONVERSATION"),
        ("tomas", "stimulus", "CONVERSATION"),
        ("marcos", "stimulus", "CONVERSATION"),
    ]
    assert {e["source_name"] for e in welcome[1:]} == {"Mia Okafor"}
    round_one = [e for e in events if e["step"] == "02-run-panel-r1"]
    talks = [e for e in round_one if e["type"] == "TALK"]
    assert [e["agent"] for e in talks] == ["lisa", "tomas", "marcos"]
    heard = [e for e in round_one if e["kind"] == "stimulus"]
    # Every untargeted TALK reaches everyone else present, the moderator included.
    assert len(heard) == 3 * 3
    assert {(e["source"], e["agent"]) for e in heard} == {
        (s, a)
        for s in ("lisa", "tomas", "marcos")
        for a in ("lisa", "tomas", "marcos", "mia")
        if s != a
    }
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

    assert [row["agent"] for row in result.rows] == ["lisa", "tomas", "marcos"]
    for row in result.rows:
        assert row["_missing"] == {} and row["would_subscribe"] is True
        assert row["themes"] and row["world"] == "panel"
    assert result.rows[0]["persona_occupation"] == "Data scientist"


@needs_tinytroupe
def test_turns_get_shorter_answers_when_the_context_is_short(tmp_path: Path) -> None:
    """A context leaving 900 tokens for an answer: turns may say less, are not refused,
    and the run says so; a context with room changes nothing."""
    from tiny_dsl.runtime.engines.tinytroupe.bridge import FULL_ANSWER

    class ShortContext(HashProvider):
        async def answer_room(self, messages: tuple[Any, ...]) -> int:
            return 900

    class RoomyContext(HashProvider):
        async def answer_room(self, messages: tuple[Any, ...]) -> int:
            return 4096

    def turns(provider: HashProvider) -> list[tuple[int, dict[str, Any]]]:
        """`max_tokens` and the schema of each agent turn `provider` was asked for."""
        return [
            (r.max_tokens, r.json_schema)
            for r in provider.requests
            if r.schema_name == "CognitiveActionsModel" and r.json_schema is not None
        ]

    short, roomy, unknown = ShortContext(), RoomyContext(), HashProvider()
    result, _ = run(compiled("focus_group"), tmp_path / "short", short)
    run(compiled("focus_group"), tmp_path / "roomy", roomy)
    run(compiled("focus_group"), tmp_path / "unknown", unknown)

    assert len(turns(short)) == 15  # 3 participants x 5 rounds, none refused or repeated
    for max_tokens, schema in turns(short):
        assert max_tokens <= 900
        actions = schema["properties"]["actions"]
        assert actions["maxItems"] == 2
        assert actions["items"]["properties"]["content"]["maxLength"] == FULL_ANSWER.content_chars
    assert sorted(json.dumps(schema) for _, schema in turns(roomy)) == sorted(
        json.dumps(schema) for _, schema in turns(unknown)
    )
    assert {schema["properties"]["actions"]["maxItems"] for _, schema in turns(roomy)} == {4}
    run_steps = [step.id for step in compiled("focus_group").steps if isinstance(step, RunStep)]
    assert len(run_steps) == 5
    assert result.manifest.notes == [
        f"step {step}: 3 agent turns allowed 2 actions of at most 400 characters instead "
        "of 4 actions of at most 400 characters, to fit the model's context window"
        for step in run_steps
    ]
    assert all(e["type"] != "THINK" for e in transcript(result))
    talks = [e for e in transcript(result) if e["type"] == "TALK"]
    assert len(talks) == 15 + 2  # and the moderator's two broadcasts


@needs_tinytroupe
def test_survey_agents_are_isolated_and_deliveries_timed(tmp_path: Path) -> None:
    plan = compiled("email_ab")
    result, _ = run(plan, tmp_path, HashProvider())
    events = transcript(result)
    intervention = plan.interventions[0]
    delivered = {e["agent"]: e for e in events if e["type"] == "VISUAL"}
    deliveries = {
        d.agent: d for step in plan.steps if isinstance(step, DeliverStep) for d in step.deliveries
    }
    assert set(delivered) == set(deliveries)
    for agent_id, event in delivered.items():
        assert event["time"] == deliveries[agent_id].time
        assert event["source"] == "email_campaign" and event["source_name"] is None
        assert event["content"].startswith("[email] You receive an email:")
    control = [a for a, arm in intervention.assignment.items() if arm == "control"]
    assert control and not set(control) & set(delivered)
    # Nobody in a survey hears anybody else.
    assert all(e["source"] is None for e in events if e["type"] == "CONVERSATION")
    # The question comes a day after each agent's own clock (moved by the delivery).
    asked = {e["agent"]: e["time"] for e in events if e["type"] == "CONVERSATION"}
    assert asked[control[0]] == "2025-03-04T08:00:00"
    treated = next(iter(delivered))
    assert asked[treated] == "2025-03-04" + str(deliveries[treated].time)[10:]
    names = [row["name"] for row in result.rows]
    assert len(names) == 24 and len(set(names)) == 24
    assert all(row["variant"] == intervention.assignment[row["agent"]] for row in result.rows)


@needs_tinytroupe
def test_interview_goes_one_to_one(tmp_path: Path) -> None:
    plan = compiled("onboarding_journey")
    result, _ = run(plan, tmp_path, HashProvider())
    interview = [e for e in transcript(result) if e["step"].endswith("interview-users")]
    questions = [e for e in interview if e["agent"] == "interviewer" and e["kind"] == "action"]
    assert len(questions) == 6 and {e["target"] for e in questions} == {
        f"users/{i:03d}" for i in range(1, 7)
    }
    answers = [e for e in interview if e["agent"] == "interviewer" and e["kind"] == "stimulus"]
    assert {e["target"] for e in answers} == {"interviewer"}
    # Each interviewee hears only the interviewer.
    heard = [e for e in interview if e["agent"] != "interviewer" and e["kind"] == "stimulus"]
    assert {e["source"] for e in heard} == {"interviewer"}
    assert all(e["target"] == e["agent"] for e in heard)


@needs_tinytroupe
def test_generated_members_sharing_a_name_are_told_apart(tmp_path: Path) -> None:
    class OneNameProvider(HashProvider):
        """Every generated persona is called Amara, in varying case."""

        async def complete(self, request: ChatRequest) -> ChatResponse:
            response = await super().complete(request)
            if not request.purpose.startswith("generate"):
                return response
            name = "AMARA" if request.purpose.endswith(("2", "4", "6")) else "Amara"
            data = {**response.data, "name": name}
            return dataclasses.replace(response, data=data, text=json.dumps(data))

    result, _ = run(compiled("onboarding_journey"), tmp_path, OneNameProvider())
    names = [row["name"] for row in result.rows]
    assert names[:3] == ["Amara", "AMARA 2", "Amara 3"]
    assert len({name.casefold() for name in names}) == 6


@needs_tinytroupe
def test_extraction_is_validated_on_top_of_the_schema(tmp_path: Path) -> None:
    plan = compiled("fed_rate_hike")

    def blank_post(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "post": "   "}

    result, _ = run(plan, tmp_path, HashProvider(extraction=blank_post))
    for row in result.rows:
        assert row["post"] is None
        assert row["_missing"] == {"post": "the model answered with empty text"}

    def invalid(request: ChatRequest) -> Exception | None:
        if request.schema_name != "extraction":
            return None
        return InvalidOutput("no", text="{}", errors=["bad"], input_tokens=1, output_tokens=1)

    again, _ = run(plan, tmp_path / "invalid", HashProvider(fail=invalid))
    for row in again.rows:
        assert row["decision"] is None and row["sentiment"] is None
        assert "did not match the schema" in row["_missing"]["decision"]


@needs_tinytroupe
def test_plan_setting_selects_the_engine(tmp_path: Path) -> None:
    plan = compiled("fed_rate_hike")
    settings = plan.settings.model_copy(update={"engine": "tinytroupe"})
    plan = plan.model_copy(update={"settings": settings})
    result, _ = run(plan, tmp_path, HashProvider(), engine=False)
    assert result.manifest.engine == "tinytroupe"


# ------------------------------------------------------------------------- resume


@needs_tinytroupe
def test_resume_after_a_failure_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    plan = compiled("focus_group")
    reference, _ = run(plan, tmp_path / "reference", HashProvider())

    calls = {"act tomas": 0}

    def fail_in_round_two(request: ChatRequest) -> Exception | None:
        if request.purpose == "act tomas":
            calls["act tomas"] += 1
            if calls["act tomas"] == 2:
                return ProviderError("connection reset by peer")
        return None

    cache = LLMCache(tmp_path / "cache.sqlite")
    failed, _ = run(plan, tmp_path / "resumed", HashProvider(fail=fail_in_round_two), cache=cache)
    assert failed.exit_code == 3
    assert failed.diagnostics[0].message.startswith("step 03-run-panel-r2 failed: ")
    assert "connection reset by peer" in failed.diagnostics[0].message

    provider = HashProvider()
    resumed, client = run(plan, tmp_path / "resumed", provider, cache=cache)
    assert resumed.restored == ["01-broadcast-panel", "02-run-panel-r1"]
    assert resumed.executed[0] == "03-run-panel-r2"
    # Lisa's and Marcos's round-2 answers arrived before Tomas's failed: cache hits now.
    assert client.stats.cache_hits == 2
    assert transcript(resumed) == transcript(reference)
    assert resumed.rows == reference.rows


@needs_tinytroupe
def test_state_round_trips_and_rejects_foreign_states(tmp_path: Path) -> None:
    plan = compiled("fed_rate_hike")
    client = LLMClient(HashProvider(), None)

    async def scenario() -> None:
        first = TinyTroupeEngine(client)
        await first.setup(plan)
        await first.execute(plan.steps[0])
        await first.execute(plan.steps[1])
        state = json.loads(json.dumps(first.dump_state()))

        second = TinyTroupeEngine(client)
        await second.setup(plan)
        with pytest.raises(ValueError, match="engine 'builtin'"):
            second.load_state({**state, "engine": "builtin"}, [])
        with pytest.raises(ValueError, match="different agents"):
            second.load_state({**state, "agents": {}}, [])
        second.load_state(state, [])
        assert second.dump_state() == state  # not applied yet: nothing lost
        events_first = await first.execute(plan.steps[2])
        events_second = await second.execute(plan.steps[2])
        assert [e.to_json() for e in events_second] == [e.to_json() for e in events_first]

    asyncio.run(scenario())


# ------------------------------------------------------------------------- bridge


@needs_tinytroupe
def test_action_schema_is_closed_and_bounded() -> None:
    from tiny_dsl.runtime.engines.tinytroupe.bridge import (
        _with_targets,
        schema_for_model,
        worst_case_tokens,
    )
    from tiny_dsl.runtime.engines.tinytroupe.loader import import_tinytroupe

    import_tinytroupe()
    from tinytroupe.agent import CognitiveActionsModel

    schema = schema_for_model(CognitiveActionsModel)
    action = schema["properties"]["actions"]["items"]
    assert schema["additionalProperties"] is False and action["additionalProperties"] is False
    assert action["properties"]["type"]["enum"] == ["TALK", "THINK", "DONE"]
    assert action["properties"]["content"]["maxLength"] > 0
    assert schema["properties"]["actions"]["maxItems"] > 0
    assert worst_case_tokens(schema) < 4096
    targeted = _with_targets(schema, ("Ann", "Bob"))
    target = targeted["properties"]["actions"]["items"]["properties"]["target"]
    assert target == {"type": "string", "enum": ["", "Ann", "Bob"]}
    assert "enum" not in action["properties"]["target"]  # the cached schema is untouched


@needs_tinytroupe
def test_bridge_refuses_to_block_the_event_loop() -> None:
    from tiny_dsl.runtime.engines.tinytroupe.bridge import TinyDslClient

    bridge = TinyDslClient(lambda text: text)
    client = LLMClient(HashProvider(), None)

    async def on_the_loop() -> None:
        with bridge.attached(client, asyncio.get_running_loop(), seed=1, temperature=0.5):
            bridge.send_message([{"role": "user", "content": "hi"}])

    with pytest.raises(RuntimeError, match="event loop's own thread"):
        asyncio.run(on_the_loop())
    with pytest.raises(RuntimeError, match="outside a tiny_dsl engine step"):
        bridge.send_message([{"role": "user", "content": "hi"}])


# ------------------------------------------------------------- the embedded model


def _one_trader_one_round(plan: Plan, trader: str) -> Plan:
    """`fed_rate_hike` cut to one trader, the news, one round and the extraction."""
    worlds = [world.model_copy(update={"agents": [trader]}) for world in plan.worlds]
    steps = []
    for step in plan.steps:
        if isinstance(step, RunStep):
            if step.round > 1:
                continue
            step = step.model_copy(update={"agents": [trader], "of": 1})
        elif isinstance(step, ExtractStep):
            step = step.model_copy(update={"agents": [trader]})
        steps.append(step)
    agents = [agent for agent in plan.agents if agent.id == trader]
    return plan.model_copy(update={"agents": agents, "worlds": worlds, "steps": steps})


@needs_tinytroupe
@pytest.mark.model
def test_smallest_example_on_the_embedded_model(tmp_path: Path) -> None:
    """`fed_rate_hike` with one trader, end to end on TinyTroupe and the embedded model.

    The first TinyTroupe turn makes the model read a prompt of about 6,300 tokens from
    scratch: a minute on a quiet two-core machine, several on a busy one, so the test
    keeps to one turn and one extraction. `TTS_TINYTROUPE_TEST_CACHE` names a
    directory that keeps the model's answers between runs.
    """
    from tiny_dsl.runtime.providers.embedded import EmbeddedProvider

    plan = _one_trader_one_round(compiled("fed_rate_hike"), "hodler")
    provider = EmbeddedProvider(n_ctx=TINYTROUPE_EMBEDDED_N_CTX)
    kept = os.environ.get("TTS_TINYTROUPE_TEST_CACHE")
    cache = LLMCache(Path(kept) / "fed_rate_hike.sqlite" if kept else tmp_path / "cache.sqlite")
    result, client = run(
        plan, tmp_path, provider, cache=cache, timeout_s=TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S
    )
    _assert_one_trader_ran(result, client)
    assert client.answered_by == {("embedded", "SmolLM2-135M-Instruct")}


@needs_tinytroupe
@pytest.mark.server
@pytest.mark.model
def test_smallest_example_on_a_llama_cpp_server(tmp_path: Path) -> None:
    """The same cut-down example through the OpenAI-compatible provider, over HTTP, on
    llama.cpp's own server running the embedded model with the 8k context TinyTroupe needs."""
    plan = _one_trader_one_round(compiled("fed_rate_hike"), "hodler")
    with embedded_model_server(
        n_ctx=TINYTROUPE_EMBEDDED_N_CTX, log_path=tmp_path / "server.log"
    ) as base_url:
        provider = OpenAICompatibleProvider(model="local", base_url=base_url, api_key="sk-local")
        result, client = run(
            plan,
            tmp_path,
            provider,
            cache=LLMCache(tmp_path / "cache.sqlite"),
            timeout_s=TINYTROUPE_EMBEDDED_ATTEMPT_TIMEOUT_S,
        )
    _assert_one_trader_ran(result, client)
    assert {name for name, _ in client.answered_by} == {"openai-compatible"}
    assert client.stats.model_calls >= 2


def _assert_one_trader_ran(result: RunOutcome, client: LLMClient) -> None:
    """What `_one_trader_one_round` must give on a real model, whatever the model says."""
    assert result.manifest is not None and result.manifest.status == "ok"
    assert client.stats.failures == 0
    assert client.stats.model_calls + client.stats.cache_hits >= 2  # a turn and an extraction
    actions = [e for e in result.transcript if e.kind == "action" and e.agent == "hodler"]
    assert actions and actions[-1].type == "DONE"
    assert [row["agent"] for row in result.rows] == ["hodler"]
    row = result.rows[0]
    assert set(row["_missing"]) <= {"decision", "post", "sentiment"}
    assert all(reason for reason in row["_missing"].values())
    assert row["decision"] in (None, "buy", "sell", "hold")
    for name in ("manifest.json", "transcript.jsonl", "results.jsonl", "results.csv"):
        assert (result.run_dir / name).is_file()


_RESULT_FILES = {
    "csv": "results.csv",
    "json": "results.json",
    "jsonl": "results.jsonl",
    "html": "report.html",
    "md": "report.md",
}


@needs_tinytroupe
@pytest.mark.model
@pytest.mark.parametrize(
    "name", sorted(path.stem for path in SCENARIOS.glob("*.tts")), ids=lambda name: name
)
def test_every_example_runs_unchanged_on_tinytroupe_and_the_embedded_model(
    name: str, tmp_path: Path
) -> None:
    """`tts run scenarios/NAME.tts --engine tinytroupe --provider embedded`, as a user would.

    Slow: TinyTroupe's prompts make the model read about 6,000 tokens a turn, so the four
    examples take over an hour on two cores from a cold cache. `TTS_TINYTROUPE_TEST_CACHE`
    names a directory that keeps the model's answers between runs (`NAME.cli.sqlite`).
    """
    workdir, state = tmp_path / "work", tmp_path / "state"
    shutil.copytree(SCENARIOS, workdir / "scenarios")
    state.mkdir()
    kept = os.environ.get("TTS_TINYTROUPE_TEST_CACHE")
    kept_cache = Path(kept) / f"{name}.cli.sqlite" if kept else None
    if kept_cache is not None and kept_cache.is_file():
        shutil.copyfile(kept_cache, state / "cache.sqlite")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AZURE_OPENAI_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiny_dsl",
            "run",
            f"scenarios/{name}.tts",
            "--engine",
            "tinytroupe",
            "--provider",
            "embedded",
            "--state-dir",
            str(state),
            "--quiet",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=7200,
    )
    if kept_cache is not None:
        kept_cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(state / "cache.sqlite", kept_cache)
    assert done.returncode == 0, done.stderr

    plan = compiled(name)
    run_dir = (workdir / "outputs" / plan.settings.scenario / "latest").resolve()
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["engine"] == "tinytroupe" and manifest["status"] == "ok"
    assert "embedded/SmolLM2-135M-Instruct" in done.stdout
    steps = manifest["steps"]
    assert manifest["model_calls"] == sum(step["model_calls"] for step in steps)
    assert all(step["status"] == "executed" for step in steps)
    for output_format in plan.output.formats:
        assert (run_dir / _RESULT_FILES[output_format]).is_file(), output_format
    for agent in plan.agents:
        assert (run_dir / "personas" / f"{agent.id}.agent.json").is_file(), agent.id
    extractions = [step for step in plan.steps if isinstance(step, ExtractStep)]
    events = [
        json.loads(line)
        for line in (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    # Everyone whose results are extracted took part: TinyTroupe made them act.
    acted = {event["agent"] for event in events if event["kind"] == "action"}
    assert {agent for step in extractions for agent in step.agents} <= acted
    rows = _result_rows(run_dir, plan.output.formats)
    assert len(rows) == sum(len(step.agents) for step in extractions)
    # TinyTroupe's configuration and log stay in the state directory.
    assert sorted(path.name for path in workdir.iterdir()) == ["outputs", "scenarios"]
    assert list(state.rglob("tinytroupe.log"))


def _result_rows(run_dir: Path, formats: list[str]) -> list[dict[str, Any]]:
    """The results rows, from whichever results file the scenario asked for."""
    if "jsonl" in formats:
        text = (run_dir / "results.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]
    if "json" in formats:
        return list(json.loads((run_dir / "results.json").read_text(encoding="utf-8")))
    with (run_dir / "results.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
