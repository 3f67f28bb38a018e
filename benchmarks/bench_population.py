"""Benchmark: populations, from the plan to generated personas (loopback only, no API keys).

(a) Plan time and memory for populations of 1,000 and 10,000 members (the
    population scenario of bench_check_plan.py: segments with fragments, a
    stratified A/B/n test, deliveries, questions, extract and analyze):
    `compile_plan` time (best of `--repeat`), peak traced memory (tracemalloc),
    the memory the finished plan keeps per member, and the process's max RSS.
    Memory must stay flat: members hold their sampled attributes, never a copy
    of the demographics, so the bytes kept per member do not grow with the
    population and stay far below the size of the demographics.
(b) Generation throughput: the real `generate` step of the built-in engine,
    through `Session.execute`, `LLMClient` (with its durable SQLite cache, as `tts run`
    uses it) and the `openai-compatible` provider's real HTTP client, against a
    local server that answers every call with a schema-valid persona after a
    fixed delay. Members per second against the ideal concurrency / delay, the
    time spent outside the step (setup, checkpoint, writing `personas/`), and
    peak traced memory per member during generation, for two population sizes.

Run:  python benchmarks/bench_population.py [--members 1000] [--delay 0.2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_check_plan import (
    best_time,
    checked_program,
    max_rss_mb,
    population_text,
    traced_peak,
)
from benchmarks.fixed_delay_server import FixedDelayServer
from tiny_dsl.plan import Plan, compile_plan
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.client import LLMClient
from tiny_dsl.runtime.interpreter import RunResult
from tiny_dsl.runtime.providers import OpenAICompatibleProvider
from tiny_dsl.session import Session

T = TypeVar("T")
BIG_FIVE = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")


def persona_answer(payload: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid persona; the name comes from the request's seed, which is per
    member, so names are distinct as a model's would be."""
    return {
        "name": f"Member {payload['seed']}",
        "age": 40,
        "gender": "female",
        "nationality": "American",
        "residence": "Columbus, Ohio",
        "education": "Bachelor's degree in accounting.",
        "occupation": {
            "title": "Accountant",
            "organization": "A regional bank",
            "description": "Prepares quarterly reports and audits branch accounts.",
        },
        "personality": {
            "traits": ["Careful with money.", "Curious about new products."],
            "big_five": dict.fromkeys(BIG_FIVE, "Medium."),
        },
        "preferences": {
            "interests": ["gardening", "podcasts"],
            "likes": ["clear prices"],
            "dislikes": ["hidden fees"],
        },
        "beliefs": ["Saving a little every month adds up."],
        "behaviors": {"general": ["Compares prices before buying."]},
    }


# ---------------------------------------------------------------------------- (a)


def bench_plan(size: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "population.tts"
        path.write_text(population_text(size), encoding="utf-8")
        program = checked_program(path)
    seconds = best_time(lambda: compile_plan(program), repeat)
    peak = traced_peak(lambda: compile_plan(program))
    plan, kept = traced_kept(lambda: compile_plan(program))
    members = sum(agent.kind == "member" for agent in plan.agents)
    _, demographics = traced_kept(lambda: copy.deepcopy(program.demographics["usa"]))
    print(
        f"(a) {members:,} members: plan {seconds:.3f} s, peak traced {peak:.1f} MB, "
        f"plan kept {kept / 1e6:.1f} MB = {kept / members / 1e3:.2f} kB per member "
        f"(a copy of the demographics would add {demographics / 1e3:.1f} kB per member), "
        f"process max RSS {max_rss_mb():.1f} MB"
    )


def traced_kept(action: Callable[[], T]) -> tuple[T, int]:
    """What `action` returns, and the bytes still allocated for it afterwards."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = action()
        return result, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------- (b)


def generation_text(members: int, concurrency: int) -> str:
    """One population, two segments with fragments, and a step that calls no model."""
    return f"""scenario generation_bench {{
  seed 3
  max_concurrency {concurrency}
}}

import "stdlib/fragments.tts"
import "stdlib/demographics/usa.tts"

population people {{
  from usa
  size {members}
  context "Customers of an online pharmacy."
  segment young {{
    size {members // 4}
    age 25..35
    particularities "Early in their career."
    fragments [time_constrained, tech_savvy]
  }}
  segment seniors {{
    size {members // 5}
    age 65..85
    fragments [budget_conscious]
  }}
}}

world market {{
  mode survey
  agents people
}}

timeline {{
  broadcast market "Hello."
}}
"""


def generation_plan(members: int, concurrency: int) -> Plan:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generation.tts"
        path.write_text(generation_text(members, concurrency), encoding="utf-8")
        return compile_plan(checked_program(path))


def generate(plan: Plan, base_url: str, concurrency: int, work: Path) -> RunResult:
    provider = OpenAICompatibleProvider(model="fixed-delay", base_url=base_url, api_key="sk-local")
    client = LLMClient(provider, LLMCache(work / "cache.sqlite"), max_concurrency=concurrency)
    outcome = Session(state_dir=work / "state").execute(plan, client, output_dir=work / "out")
    assert outcome.run_dir is not None and outcome.result is not None
    written = sum(1 for _ in (outcome.run_dir / "personas" / "people").iterdir())
    assert written == len(plan.agents) and client.stats.model_calls == len(plan.agents)
    return outcome.result


def bench_generation(members: int, delay: float, concurrency: int) -> None:
    ideal = concurrency / delay
    print(
        f"(b) generation at concurrency {concurrency}, server delay {delay:.3f} s: "
        f"ideal {ideal:.1f} members/s"
    )
    with FixedDelayServer(delay, persona_answer) as base_url:
        for size in (members, 2 * members):
            plan = generation_plan(size, concurrency)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                result = generate(plan, base_url, concurrency, Path(tmp))
                wall = time.perf_counter() - started
            step = result.steps[0].seconds
            with tempfile.TemporaryDirectory() as tmp:
                peak = traced_peak(
                    functools.partial(generate, plan, base_url, concurrency, Path(tmp))
                )
            print(
                f"    {size:,} members: generate step {step:.2f} s = {size / step:.1f} members/s "
                f"({size / step / ideal:.0%} of ideal); whole run {wall:.2f} s "
                f"({wall - step:.2f} s setup, checkpoint and outputs incl. personas/); "
                f"peak traced {peak:.1f} MB = {peak * 1e3 / size:.1f} kB per member"
            )
    print(f"    process max RSS {max_rss_mb():.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="(a) plan timings, best of")
    parser.add_argument("--members", type=int, default=1000, help="(b) the smaller population")
    parser.add_argument("--delay", type=float, default=0.2, help="(b) server delay, seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="(b) max concurrency")
    args = parser.parse_args()
    for size in (1_000, 10_000):
        bench_plan(size, args.repeat)
    bench_generation(args.members, args.delay, args.concurrency)


if __name__ == "__main__":
    main()
