"""Benchmarks for the model-provider layer (loopback only, no API keys).

(a) Embedded model throughput through EmbeddedProvider vs llama_cpp.Llama called directly
    with the same prompt and parameters (target ratio >= 0.9).
(b) LLMClient overhead per call when every answer comes from a warm cache (target < 1 ms).
(c) Wall time of many calls through LLMClient + OpenAICompatibleProvider against a local
    fixed-delay server, vs the ideal calls * delay / concurrency (target ratio <= 1.15).

Run:  python benchmarks/bench_provider.py [--skip-model] [--calls 500] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fixed_delay_server import FixedDelayServer
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.client import LLMClient
from tiny_dsl.runtime.providers import (
    EmbeddedProvider,
    OpenAICompatibleProvider,
)
from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    InvalidOutput,
    Message,
)
from tiny_dsl.runtime.providers.embedded import (
    bounded_schema,
    find_embedded_gguf,
)

PERSONA = (
    "You are Maria Lopez, a 41-year-old pediatric nurse from Porto who loves gardening, "
    "distrusts advertising, and speaks plainly. You are taking part in a focus group about "
    "a new plant-based coffee creamer. Stay in character, answer briefly and honestly, and "
    "mention concrete details from your daily routine when they are relevant."
)
QUESTION = "What was your first impression of the creamer, and would you buy it?"
OPINION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "impression": {"type": "string", "maxLength": 200},
        "would_buy": {"type": "boolean"},
        "price_limit_eur": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["impression", "would_buy", "price_limit_eur"],
    "additionalProperties": False,
}


# ---------------------------------------------------------------------------- (a)


def bench_embedded(runs: int, max_tokens: int, threads: int) -> None:
    """Completion tokens per second of wall time, prompt processing included.

    Two direct baselines: llama-cpp-python's default, which reuses the KV cache of the
    previous call when the same prompt repeats (the best case, and what this benchmark's
    repeated prompt hands it), and the same call after ``Llama.reset()``, i.e. with the
    prompt evaluated in full as a call from a different agent would need.
    EmbeddedProvider always evaluates the full prompt, because reusing another call's
    KV cache can change the sampled tokens and so make answers depend on call order.
    """
    from llama_cpp import Llama

    messages = (Message("system", PERSONA), Message("user", QUESTION))
    raw_messages: Any = [{"role": m.role, "content": m.content} for m in messages]
    direct = Llama(
        model_path=str(find_embedded_gguf()),
        n_ctx=4096,
        n_threads=threads,
        seed=0,
        verbose=False,
    )
    provider = EmbeddedProvider(n_threads=threads)

    def run_direct(schema: dict[str, Any] | None, reset: bool) -> tuple[int, float]:
        response_format: Any = None
        if schema is not None:
            response_format = {"type": "json_object", "schema": bounded_schema(schema)}
        started = time.perf_counter()
        if reset:
            direct.reset()
        result: Any = direct.create_chat_completion(
            messages=raw_messages,
            temperature=0.7,
            max_tokens=max_tokens,
            seed=7,
            response_format=response_format,
        )
        return int(result["usage"]["completion_tokens"]), time.perf_counter() - started

    def run_provider(schema: dict[str, Any] | None) -> tuple[int, float]:
        request = ChatRequest(
            messages=messages, temperature=0.7, max_tokens=max_tokens, json_schema=schema, seed=7
        )
        started = time.perf_counter()
        try:
            tokens = asyncio.run(provider.complete(request)).output_tokens
        except InvalidOutput as exc:  # a rejected answer was generated all the same
            tokens = exc.output_tokens
        return tokens, time.perf_counter() - started

    print(
        f"(a) embedded model throughput ({runs} runs each, max_tokens={max_tokens}, "
        f"{threads} threads on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )
    for label, schema in (("plain text", None), ("JSON schema", OPINION_SCHEMA)):
        runners: dict[str, Callable[[], tuple[int, float]]] = {
            "llama_cpp.Llama direct, KV prefix reused ": partial(run_direct, schema, False),
            "llama_cpp.Llama direct, full prompt eval ": partial(run_direct, schema, True),
            "EmbeddedProvider (full prompt eval)      ": partial(run_provider, schema),
        }
        for runner in runners.values():  # warm-up: model load, grammar compilation
            runner()
        totals = dict.fromkeys(runners, (0, 0.0))
        for _ in range(runs):  # interleaved, so load changes affect every variant alike
            for name, runner in runners.items():
                tokens, elapsed = runner()
                totals[name] = (totals[name][0] + tokens, totals[name][1] + elapsed)
        rates = [tokens / elapsed for tokens, elapsed in totals.values()]
        print(f"    {label}:")
        for name, rate in zip(runners, rates, strict=True):
            print(f"      {name}: {rate:7.1f} tokens/s")
        print(f"      ratio provider / direct with KV reuse    : {rates[2] / rates[0]:7.2f}")
        print(
            f"      ratio provider / direct full prompt eval : {rates[2] / rates[1]:7.2f}"
            "   (target >= 0.90)"
        )
    direct.close()


# ---------------------------------------------------------------------------- (b)


class _InstantProvider:
    """Answers immediately; isolates the client's own cost."""

    name = "instant"
    model = "instant-1"
    supports_json_schema = True

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(
            text='{"say": "ok"}',
            data={"say": "ok"},
            input_tokens=50,
            output_tokens=5,
            provider=self.name,
            model=self.model,
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def bench_client_overhead(calls: int) -> None:
    requests = [
        ChatRequest(
            messages=(Message("system", PERSONA), Message("user", f"{QUESTION} #{index}")),
            temperature=0.7,
            max_tokens=64,
            json_schema=OPINION_SCHEMA,
            seed=index,
        )
        for index in range(calls)
    ]
    with tempfile.TemporaryDirectory() as folder:
        cache = LLMCache(Path(folder) / "cache.db")
        client = LLMClient(_InstantProvider(), cache)

        async def fill() -> float:
            started = time.perf_counter()
            for request in requests:
                await client.complete(request)
            return (time.perf_counter() - started) / calls

        async def replay() -> list[float]:
            timings = []
            for request in requests:
                started = time.perf_counter()
                response = await client.complete(request)
                timings.append(time.perf_counter() - started)
                assert response.cached
            return timings

        miss_cost = asyncio.run(fill())
        asyncio.run(replay())  # warm-up pass
        timings = asyncio.run(replay())
        cache.close()
    mean = statistics.fmean(timings)
    p99 = sorted(timings)[int(0.99 * len(timings)) - 1]
    print(f"(b) client overhead per call, warm cache, {calls} calls:")
    print(f"      mean {mean * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms   (target < 1 ms)")
    print(
        f"      for comparison, a miss with an instant provider incl. the durable cache "
        f"write: {miss_cost * 1000:.3f} ms"
    )


# ---------------------------------------------------------------------------- (c)


def _short_answer(payload: dict[str, Any]) -> dict[str, Any]:
    return {"answer": "ok"}


def bench_concurrency(calls: int, concurrency: int, delay: float) -> None:
    # The server runs in its own process, so it shares neither the client's event loop
    # nor its GIL.
    with FixedDelayServer(delay, _short_answer) as base_url:

        async def run() -> tuple[float, LLMClient]:
            provider = OpenAICompatibleProvider(
                model="fixed-delay", base_url=base_url, api_key="sk-local"
            )
            with tempfile.TemporaryDirectory() as folder, LLMCache(Path(folder) / "c.db") as cache:
                client = LLMClient(provider, cache, max_concurrency=concurrency)
                requests = [
                    ChatRequest((Message("user", f"call {index}"),), 0.7, 16)
                    for index in range(calls)
                ]
                started = time.perf_counter()
                await asyncio.gather(*(client.complete(request) for request in requests))
                elapsed = time.perf_counter() - started
            await provider.aclose()
            return elapsed, client

        elapsed, client = asyncio.run(run())
    ideal = calls * delay / concurrency
    print(
        f"(c) {calls} calls, concurrency {concurrency}, server delay {delay:.3f} s, "
        "durable cache on:"
    )
    print(
        f"      wall {elapsed:.3f} s, ideal {ideal:.3f} s, "
        f"ratio {elapsed / ideal:.3f}   (target <= 1.15)"
    )
    print(f"      model calls {client.stats.model_calls}, retries {client.stats.retries}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-model", action="store_true", help="skip (a), the embedded model")
    parser.add_argument("--runs", type=int, default=5, help="(a) timed runs per variant")
    parser.add_argument("--max-tokens", type=int, default=128, help="(a) tokens per run")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="(a) llama.cpp threads"
    )
    parser.add_argument("--cached-calls", type=int, default=1000, help="(b) calls")
    parser.add_argument("--calls", type=int, default=500, help="(c) calls")
    parser.add_argument("--concurrency", type=int, default=32, help="(c) concurrency")
    parser.add_argument("--delay", type=float, default=0.2, help="(c) server delay, seconds")
    args = parser.parse_args()
    if not args.skip_model:
        bench_embedded(args.runs, args.max_tokens, args.threads)
    bench_client_overhead(args.cached_calls)
    bench_concurrency(args.calls, args.concurrency, args.delay)


if __name__ == "__main__":
    main()
