"""Benchmarks for the interpreter and the built-in engine (loopback only, no API keys).

(a) Interpreter overhead per model call with a warm LLM cache: a 1,000-agent survey
    (one question, one extraction: 2,000 calls) is run once to fill the cache, then
    replayed with checkpoints ignored, through the real `LLMClient` and `LLMCache`.
    Target: under 1 ms per call, so the replay takes under 2 s.
(b) Wall time of a 500-agent survey (1,000 calls) against a local OpenAI-compatible
    server that answers after a fixed delay, at concurrency 32, against the ideal
    calls x delay / concurrency. Target: within 1.15 of ideal.

Run:  python benchmarks/bench_runtime.py [--agents 1000] [--survey 500] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fixed_delay_server import FixedDelayServer, schema_name
from tiny_dsl.plan.model import (
    AgentPlan,
    AskStep,
    Estimate,
    ExtractStep,
    FieldPlan,
    Origin,
    OutputPlan,
    Plan,
    PlanSettings,
    Step,
    WorldPlan,
)
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.client import LLMClient
from tiny_dsl.runtime.providers import OpenAICompatibleProvider
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse
from tiny_dsl.session import Session

FIELDS = [
    FieldPlan(name="intent", kind="int", low=1, high=10, description="Purchase intent"),
    FieldPlan(name="opened", kind="bool", description="Would open the email"),
]
TURN = {
    "actions": [
        {"type": "TALK", "content": "I would probably buy it if the price is right.", "target": ""},
        {"type": "DONE", "content": "", "target": ""},
    ],
    "cognitive_state": {"goals": "decide", "attention": "the offer", "emotions": "curious"},
}
EXTRACTION = {"intent": 6, "opened": True}


def _origin(line: int, column: int) -> Origin:
    """Where a step of the benchmark's hand-built plan says it comes from."""
    return Origin(
        file="bench.tts",
        start=0,
        end=1,
        line=line,
        column=column,
        end_line=line,
        end_column=column + 1,
    )


def survey_plan(agents: int, concurrency: int) -> Plan:
    """A compiled-looking survey plan: `agents` personas, one question, one extraction."""
    ids = [f"p{index:04d}" for index in range(agents)]
    personas = [
        AgentPlan(
            id=agent_id,
            kind="persona",
            persona={
                "name": f"Person {agent_id}",
                "age": 20 + index % 60,
                "occupation": {"title": "Clerk", "organization": "Acme"},
                "personality": {"traits": ["Careful with money.", "Likes new things."]},
            },
        )
        for index, agent_id in enumerate(ids)
    ]
    steps: list[Step] = [
        AskStep(
            id="01-ask-inbox",
            origin=_origin(10, 3),
            world="inbox",
            question="Would you buy VitaBoost next month? Say why.",
            agents=ids,
            hash=f"{agents:08d}" + "a" * 56,
        ),
        ExtractStep(
            id="02-extract-inbox",
            origin=_origin(14, 1),
            world="inbox",
            agents=ids,
            fields=FIELDS,
            hash=f"{agents:08d}" + "b" * 56,
        ),
    ]
    return Plan(
        tiny_dsl_version="0.1.0",
        source_file="bench.tts",
        source_hash="0" * 64,
        settings=PlanSettings(
            scenario=f"bench_{agents}",
            title="Benchmark survey",
            seed=1,
            model=None,
            provider=None,
            temperature=0.7,
            budget_usd=None,
            max_concurrency=concurrency,
            max_calls=None,
            engine="builtin",
        ),
        agents=personas,
        populations=[],
        worlds=[
            WorldPlan(
                name="inbox",
                mode="survey",
                agents=ids,
                moderator=None,
                context="A regular weekday morning.",
                start="2025-03-03T08:00:00",
            )
        ],
        interventions=[],
        steps=steps,
        output=OutputPlan(formats=["csv", "json"], dir="unused"),
        estimate=Estimate(
            calls=2 * agents, input_tokens=0, output_tokens=0, cost_usd=0, model="m", priced=False
        ),
        plan_hash="c" * 64,
    )


class _InstantProvider:
    """Answers every call at once with a valid turn or extraction."""

    def __init__(self) -> None:
        self.name = "instant"
        self.model = "instant-1"
        self.supports_json_schema = True

    async def complete(self, request: ChatRequest) -> ChatResponse:
        data = TURN if request.schema_name == "agent_actions" else EXTRACTION
        return ChatResponse(json.dumps(data), data, 200, 40, self.name, self.model)

    async def aclose(self) -> None:
        """Nothing to release."""


def bench_warm_cache(agents: int) -> None:
    plan = survey_plan(agents, concurrency=32)
    calls = 2 * agents
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cache = LLMCache(work / "cache.sqlite")
        started = time.perf_counter()
        Session(state_dir=work / "state").execute(
            plan, LLMClient(_InstantProvider(), cache), output_dir=work / "out", fresh=True
        )
        fill = time.perf_counter() - started
        client = LLMClient(_InstantProvider(), cache, mode="replay")
        started = time.perf_counter()
        outcome = Session(state_dir=work / "state").execute(
            plan, client, output_dir=work / "out", fresh=True
        )
        replay = time.perf_counter() - started
        assert client.stats.cache_hits == calls and client.stats.model_calls == 0
        assert outcome.result is not None
        steps = {step.id: step.seconds for step in outcome.result.steps}
    print(f"(a) {agents}-agent survey, {calls} calls (ask + extract), warm LLM cache:")
    print(
        f"      replay {replay:.3f} s = {replay / calls * 1000:.3f} ms per call   "
        f"(targets: < 1 ms per call, replay < 2 s)"
    )
    print(
        f"      steps: {', '.join(f'{k} {v:.3f} s' for k, v in steps.items())}; the rest is "
        "setup, checkpoints and output files"
    )
    print(f"      first run, cache filled by an instant provider: {fill:.3f} s")


def survey_answer(payload: dict[str, Any]) -> dict[str, Any]:
    """The fixed-delay server's answer: a valid turn or extraction."""
    return TURN if schema_name(payload) == "agent_actions" else EXTRACTION


def bench_fixed_delay(agents: int, concurrency: int, delay: float) -> None:
    """Once with the durable LLM cache (what `tts run` does), once without it.

    Every answer is fsynced to the cache before use, on the event loop; the run
    without a cache shows how much of the gap to ideal that write accounts for.
    """
    plan = survey_plan(agents, concurrency)
    calls = 2 * agents
    ideal = calls * delay / concurrency
    print(
        f"(b) {agents}-agent survey, {calls} calls, concurrency {concurrency}, "
        f"server delay {delay:.3f} s, ideal {ideal:.3f} s   (target ratio <= 1.15):"
    )
    with FixedDelayServer(delay, survey_answer) as base_url:
        for durable in (True, False):
            with tempfile.TemporaryDirectory() as folder:
                work = Path(folder)
                provider = OpenAICompatibleProvider(
                    model="fixed-delay", base_url=base_url, api_key="sk-local"
                )
                cache = LLMCache(work / "cache.sqlite") if durable else None
                client = LLMClient(provider, cache, max_concurrency=concurrency)
                started = time.perf_counter()
                Session(state_dir=work / "state").execute(plan, client, output_dir=work / "out")
                elapsed = time.perf_counter() - started
            label = "with the durable LLM cache" if durable else "without an LLM cache   "
            print(
                f"      {label}: wall {elapsed:.3f} s, ratio {elapsed / ideal:.3f}, "
                f"model calls {client.stats.model_calls}, retries {client.stats.retries}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000, help="(a) survey size")
    parser.add_argument("--survey", type=int, default=500, help="(b) survey size")
    parser.add_argument("--concurrency", type=int, default=32, help="(b) max concurrency")
    parser.add_argument("--delay", type=float, default=0.2, help="(b) server delay, seconds")
    args = parser.parse_args()
    bench_warm_cache(args.agents)
    bench_fixed_delay(args.survey, args.concurrency, args.delay)


if __name__ == "__main__":
    main()
