"""Engines side by side: a 50-agent survey against one slow local OpenAI-compatible server.

    python benchmarks/bench_engines.py [--agents 50] [--delay 1.0] [--concurrency 32]

The scenario: 50 personas in a `survey` world, one question, then an
extraction of two fields: 100 model calls. The server (started here, on
127.0.0.1) answers every request after a fixed delay, with JSON that fits
whatever schema the request carries (a minimal instance built from it), so
only the way each engine schedules its calls matters. It runs:

* `builtin`: tiny_dsl's built-in engine;
* `tinytroupe`: tiny_dsl's TinyTroupe engine (our client, cache off);
* `tinytroupe-direct-defaults`: TinyTroupe 0.6 driven directly, the usual way
  (`world.broadcast`, `world.run(1)`, `ResultsExtractor.extract_results_from_agents`)
  with its packaged configuration: a 1 s sleep before every call, 4 concurrent
  calls, parallel agent actions;
* `tinytroupe-direct-best`: the same with `WAITING_TIME=0` and
  `MAX_CONCURRENT_MODEL_CALLS=32`.

Each run is a fresh subprocess; wall time covers the simulation only (library
imports and agent construction excluded). Calls and tokens are counted by the
server (tokens estimated as characters / 4), the same yardstick for all. The
ideal at `--concurrency` calls in flight is two waves of calls per phase (question,
extraction) times the delay: about 4 s. The TinyTroupe runs are skipped when
TinyTroupe is not installed (see the README's optional extra).

TinyTroupe's own client counts tokens with tiktoken, which downloads its
encoding on first use; offline that fails (harmlessly) once per call. The
direct drivers stub the token count out so no download is attempted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

QUESTION = "Would you try a $29/month personalised vitamin subscription? Answer and say why."
FIELDS = [
    ("would_try", "bool", "Whether the person would try the subscription"),
    ("reason", "text", "The person's main reason, in a few words"),
]
RUNS = ("builtin", "tinytroupe", "tinytroupe-direct-defaults", "tinytroupe-direct-best")


# --------------------------------------------------------------------------- the server


def minimal_instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A small value valid for `schema` (objects get every property, lists one item)."""
    defs = defs if defs is not None else schema.get("$defs", schema.get("definitions", {}))
    if "$ref" in schema:
        return minimal_instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return minimal_instance(schema[key][0], defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        return {key: minimal_instance(sub, defs) for key, sub in properties.items()}
    if kind == "array":
        return [minimal_instance(schema.get("items", {"type": "string"}), defs)]
    if kind == "string":
        return "ok"[: schema.get("maxLength", 2)].ljust(schema.get("minLength", 0), "k")
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 0.5))
    if kind == "boolean":
        return True
    return None


def _schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema: dict[str, Any] = response_format["json_schema"]["schema"]
        return schema
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object"}
    return None


class _Server(ThreadingHTTPServer):
    # Every agent may connect at once; the default backlog of 5 would refuse some.
    request_queue_size = 256
    daemon_threads = True


class SlowServer:
    """A chat-completions endpoint on 127.0.0.1 answering after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.calls = self.prompt_tokens = self.completion_tokens = 0
        self.max_in_flight = self._in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server._enter()
                try:
                    time.sleep(server.delay)
                finally:
                    server._leave()
                schema = _schema_of(body)
                content = json.dumps(minimal_instance(schema) if schema else {"answer": "ok"})
                prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
                server._count(prompt // 4, len(content) // 4)
                payload = json.dumps(
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "bench"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt // 4,
                            "completion_tokens": len(content) // 4,
                            "total_tokens": prompt // 4 + len(content) // 4,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Silence per-request logging."""

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SlowServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.calls = self.prompt_tokens = self.completion_tokens = self.max_in_flight = 0

    def _enter(self) -> None:
        with self.lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self.lock:
            self._in_flight -= 1

    def _count(self, prompt: int, completion: int) -> None:
        with self.lock:
            self.calls += 1
            self.prompt_tokens += prompt
            self.completion_tokens += completion


# ---------------------------------------------------------------------------- scenario


def personas(count: int) -> list[dict[str, Any]]:
    occupations = ["Nurse", "Teacher", "Electrician", "Accountant", "Chef", "Designer"]
    return [
        {
            "name": f"Respondent {i:02d}",
            "age": 20 + (i * 7) % 50,
            "occupation": {"title": occupations[i % len(occupations)]},
        }
        for i in range(1, count + 1)
    ]


def scenario_source(count: int, concurrency: int) -> str:
    lines = [
        "scenario bench_survey {",
        '  title "Engine benchmark"',
        "  seed 1",
        f"  max_concurrency {concurrency}",
        "}",
    ]
    ids = []
    for index, persona in enumerate(personas(count), start=1):
        ids.append(f"p{index:02d}")
        lines += [
            f"persona p{index:02d} {{",
            f'  name "{persona["name"]}"',
            f"  age {persona['age']}",
            f'  occupation "{persona["occupation"]["title"]}"',
            "}",
        ]
    lines += [
        "world poll {",
        "  mode survey",
        f"  agents {', '.join(ids)}",
        "}",
        f'timeline {{\n  ask poll "{QUESTION}"\n}}',
        "extract from poll {",
        *(f'  {name} {kind} "{description}"' for name, kind, description in FIELDS),
        "}",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- drivers


def drive_engine(engine_name: str, url: str, work: Path, count: int, concurrency: int) -> float:
    """One run of a tiny_dsl engine; returns the simulation's wall time."""
    from tiny_dsl.checks import check_file
    from tiny_dsl.plan import compile_plan
    from tiny_dsl.runtime.client import LLMClient
    from tiny_dsl.runtime.engines import make_engine
    from tiny_dsl.runtime.providers import OpenAICompatibleProvider
    from tiny_dsl.session import Session

    source = work / "bench_survey.tts"
    source.write_text(scenario_source(count, concurrency), encoding="utf-8")
    plan = compile_plan(check_file(source).require_program())
    provider = OpenAICompatibleProvider(model="bench", base_url=url, api_key="sk-local")
    client = LLMClient(provider, None, max_concurrency=concurrency)
    engine = make_engine(engine_name, plan, client)
    if engine_name == "tinytroupe":
        from tiny_dsl.runtime.engines.tinytroupe import import_tinytroupe

        import_tinytroupe()  # the import is not part of the simulation
    started = time.perf_counter()
    Session(state_dir=work / "state").execute(plan, client, engine=engine, output_dir=work / "out")
    return time.perf_counter() - started


def drive_direct(url: str, work: Path, count: int) -> float:
    """TinyTroupe on its own, with whatever `config.ini` is in the working directory."""
    os.environ["OPENAI_BASE_URL"] = url
    os.environ["OPENAI_API_KEY"] = "sk-local"
    from datetime import datetime

    from tinytroupe.agent import TinyPerson
    from tinytroupe.clients.openai_client import OpenAIClient
    from tinytroupe.environment import TinyWorld
    from tinytroupe.extraction import ResultsExtractor

    OpenAIClient._count_tokens = lambda self, messages, model: None
    people = []
    for persona in personas(count):
        person = TinyPerson(persona["name"])
        person.include_persona_definitions(persona)
        people.append(person)
    world = TinyWorld("poll", people, initial_datetime=datetime(2025, 1, 1, 9), interventions=[])
    started = time.perf_counter()
    world.broadcast(QUESTION)
    world.run(1)
    ResultsExtractor().extract_results_from_agents(
        people,
        extraction_objective="The person's answer to the question.",
        situation="",
        fields=[name for name, _, _ in FIELDS],
        fields_hints={name: description for name, _, description in FIELDS},
        verbose=False,
    )
    return time.perf_counter() - started


DIRECT_BEST_CONFIG = "[OpenAI]\nWAITING_TIME=0\nMAX_CONCURRENT_MODEL_CALLS=32\n"


def run_one(name: str, server: SlowServer, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp)
        if name == "tinytroupe-direct-best":
            (work / "config.ini").write_text(DIRECT_BEST_CONFIG, encoding="utf-8")
        server.reset()
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--driver",
            name,
            "--url",
            server.url,
            "--work",
            str(work),
            "--agents",
            str(args.agents),
            "--concurrency",
            str(args.concurrency),
        ]
        done = subprocess.run(
            command, cwd=work, capture_output=True, text=True, timeout=args.timeout
        )
        result_file = work / "result.json"
        if done.returncode != 0 or not result_file.exists():
            tail = (done.stderr or done.stdout)[-2000:]
            return {"name": name, "error": f"exit {done.returncode}: {tail}"}
        seconds = json.loads(result_file.read_text())["seconds"]
    return {
        "name": name,
        "seconds": seconds,
        "calls": server.calls,
        "prompt_tokens": server.prompt_tokens,
        "completion_tokens": server.completion_tokens,
        "max_in_flight": server.max_in_flight,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset")
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        if args.driver.startswith("tinytroupe-direct"):
            seconds = drive_direct(args.url, args.work, args.agents)
        else:
            seconds = drive_engine(args.driver, args.url, args.work, args.agents, args.concurrency)
        (args.work / "result.json").write_text(json.dumps({"seconds": seconds}))
        return

    from tiny_dsl.runtime.engines.tinytroupe import tinytroupe_installed

    calls_per_phase = args.agents
    waves = -(-calls_per_phase // args.concurrency)
    ideal = 2 * waves * args.delay
    print(
        f"{args.agents}-agent survey, 1 question + 2-field extraction, server delay "
        f"{args.delay:g} s, {args.concurrency} concurrent calls; ideal {ideal:.1f} s"
    )
    results = []
    with SlowServer(args.delay) as server:
        for name in args.runs.split(","):
            if name != "builtin" and not tinytroupe_installed():
                results.append({"name": name, "error": "TinyTroupe is not installed"})
                continue
            results.append(run_one(name, server, args))
    print(
        f"{'run':<28}{'calls':>6}{'in tok':>9}{'out tok':>8}{'peak':>6}{'wall s':>9}{'x ideal':>9}"
    )
    for result in results:
        if "error" in result:
            print(f"{result['name']:<28}  skipped: {result['error'].strip().splitlines()[-1]}")
            continue
        print(
            f"{result['name']:<28}{result['calls']:>6}{result['prompt_tokens']:>9}"
            f"{result['completion_tokens']:>8}{result['max_in_flight']:>6}"
            f"{result['seconds']:>9.2f}{result['seconds'] / ideal:>9.2f}"
        )
    print(json.dumps({"ideal_s": ideal, "results": results}))


if __name__ == "__main__":
    main()
