"""Benchmark: `population NAME from "folder"` of 10,000 `.agent.json` files.

Writes 10,000 TinyTroupe agent files (the shape a run's `personas/<population>/`
folder has) and a scenario that loads them, then times `tts check` and `tts plan`
as whole processes (interpreter start, imports, reading and validating every file,
the plan with every persona in it), each the best of `--repeat` runs. Target: check
+ plan under 3 s. Also times the same in process, and a persona-database list file of
the same size, and `tts plan` of a one-persona scenario: what every process pays for
the interpreter and imports before it reads a file.

Run:  python benchmarks/bench_people.py [--members 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_dsl.checks import check_file
from tiny_dsl.plan import compile_plan

ROOT = Path(__file__).resolve().parents[1]

TARGET_S = 3.0
TRAITS = ["curious", "skeptical", "frugal", "impulsive", "loyal", "cautious", "talkative"]


def persona(index: int) -> dict[str, object]:
    return {
        "name": f"Person {index:05d}",
        "age": 18 + index % 70,
        "occupation": {"title": "Clerk", "description": f"Works desk {index}."},
        "personality": {"traits": [TRAITS[index % len(TRAITS)], TRAITS[(index + 3) % 7]]},
        "long_term_goals": ["save money", "travel"],
        "style": "plain",
    }


def write_fixture(directory: Path, members: int) -> tuple[Path, Path]:
    folder = directory / "people"
    folder.mkdir()
    for index in range(1, members + 1):
        agent = {"type": "TinyPerson", "persona": persona(index)}
        (folder / f"{index:05d}.agent.json").write_text(json.dumps(agent), encoding="utf-8")
    database = [
        {
            "id": f"m{index:05d}",
            "name": f"Member {index:05d}",
            "role": "Clerk",
            "personality": {"traits": ["calm"], "goals": ["rest"], "style": "plain"},
            "temperature": 0.5,
        }
        for index in range(1, members + 1)
    ]
    (directory / "database.json").write_text(json.dumps(database), encoding="utf-8")
    for name, source in (("folder.tts", '"people"'), ("database.tts", '"database.json"')):
        (directory / name).write_text(
            'scenario people { title "People" }\n'
            f"population crowd from {source}\n"
            "world room { mode survey; agents crowd }\n"
            'timeline { ask room "Hello?" }\n',
            encoding="utf-8",
        )
    return directory / "folder.tts", directory / "database.tts"


def best_process(args: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "tiny_dsl", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"tts {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        best = min(best, elapsed)
    return best


def best_in_process(scenario: Path, repeat: int) -> tuple[float, int]:
    best, agents = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        plan = compile_plan(check_file(scenario).require_program())
        best = min(best, time.perf_counter() - start)
        agents = len(plan.agents)
    return best, agents


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder, database = write_fixture(Path(temporary), options.members)
        tiny = Path(temporary) / "tiny.tts"
        tiny.write_text(
            'scenario tiny { title "Tiny" }\npersona ana { name "Ana" }\n'
            'world room { mode survey; agents ana }\ntimeline { ask room "Hello?" }\n',
            encoding="utf-8",
        )
        baseline_s = best_process(["plan", str(tiny)], options.repeat)
        check_s = best_process(["check", str(folder)], options.repeat)
        plan_s = best_process(["plan", str(folder), "--json"], options.repeat)
        in_process_s, agents = best_in_process(folder, options.repeat)
        database_s, database_agents = best_in_process(database, options.repeat)
    assert agents == database_agents == options.members
    total = check_s + plan_s
    print(f"population from a folder of {options.members:,} .agent.json files")
    print(f"  tts check (whole process)      {check_s:6.2f} s")
    print(f"  tts plan  (whole process)      {plan_s:6.2f} s")
    print(f"  check + plan                   {total:6.2f} s  (target < {TARGET_S:g} s)")
    print(f"  tts plan of a one-persona file {baseline_s:6.2f} s  (interpreter and imports)")
    print(f"  check + plan in process        {in_process_s:6.2f} s  ({agents:,} agents)")
    print(f"  the same from one database list {database_s:5.2f} s")
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
