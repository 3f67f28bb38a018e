"""Crash consistency of `tts run`: SIGKILL at random moments, then resume.

A multi-step scenario (generate a population, deliver an intervention, ask twice,
extract) runs against the fault server (`tests/fault_server.py`, no faults, a small
fixed delay per answer) and is killed with SIGKILL at 20 seeded random moments spread
over the duration of an uninterrupted reference run. After each kill a re-run in the
same state directory must complete, send none of the requests whose answers the killed
run had recorded, and write results and transcript identical to the reference run's.
Damaged checkpoints and caches must be reported, never used.

Each run is a separate process running the CLI's `main` (what the `tts` script runs),
forked from a launcher process that has imported tiny_dsl and built the grammar once:
starting Python and tiny_dsl takes about two seconds on a busy two-core machine, which
would otherwise dominate the test's time and put most kill moments before any work.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fault_server import FaultConfig, FaultServer, request_digest

SCENARIO = """
scenario kill_chain {
  title "A multi-step study killed at random moments"
  seed 23
  max_concurrency 8
}

demographics town {
  title "A mid-sized town"
  age {
    18..39 40%
    40..64 40%
    65..90 20%
  }
  gender {
    female 50%
    male 50%
  }
}

population shoppers {
  from town
  size 24
}

world panel {
  mode survey
  agents shoppers
  context "An online panel about a grocery delivery service."
}

intervention offer {
  channel email
  targets shoppers
  control 25%
  variant discount {
    content "Get 20% off your first three grocery deliveries."
  }
  variant speed {
    content "Groceries at your door within the hour."
  }
}

timeline {
  deliver offer in panel
  ask panel "Would you try the delivery service? Say why in one sentence."
  ask panel "What would make you stop using it?"
}

extract from panel {
  intent int 1..10 "How likely the person is to try the service, from 1 to 10"
  opened bool      "Whether the person would open the email"
}

output {
  formats [csv, jsonl]
}
"""
STEPS = 5
CALLS = 4 * 24  # generate, ask, ask, extract: one call per shopper each
KILLS = 20
ANSWER_DELAY_S = 0.1
RUN_LIMIT_S = 120.0
COMPARED_FILES = ("results.csv", "results.jsonl", "transcript.jsonl")

# Forks one `tts` process per job read from stdin and reports how it ended; a job
# with `kill_after` is sent SIGKILL that many seconds after the fork unless it has
# exited by then. Jobs run one at a time.
LAUNCHER = """
import json, os, select, signal, sys, time
from pathlib import Path

from tiny_dsl.checks import check_file
from tiny_dsl.cli import main
import tiny_dsl.session  # `tts run` imports it on first use

check_file(Path(sys.argv[1]))  # builds the grammar
print("ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        try:
            main(job["argv"], prog_name="tts")
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    pidfd = os.pidfd_open(pid)
    exited, _, _ = select.select([pidfd], [], [], job["kill_after"])
    if not exited:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    print(json.dumps({
        "exit_code": os.waitstatus_to_exitcode(status),
        "seconds": time.monotonic() - started,
    }), flush=True)
"""


@dataclass(frozen=True)
class Ended:
    exit_code: int  # negative: killed by that signal
    seconds: float
    log: str

    @property
    def killed(self) -> bool:
        return self.exit_code == -9


class Launcher:
    def __init__(self, scenario: Path) -> None:
        self.scenario = scenario
        # Runs must not pick up an API key or server from the developer's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        self._process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(scenario)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        assert self._readline() == "ready"

    def run(
        self, server: FaultServer, work: Path, log_name: str, kill_after: float = RUN_LIMIT_S
    ) -> Ended:
        """`tts run` with state and outputs under `work`, killed after `kill_after` s."""
        argv = [
            "run",
            str(self.scenario),
            *("--provider", "openai-compatible", "--base-url", server.base_url),
            *("--state-dir", str(work / "state"), "--output-dir", str(work / "out")),
            "--allow-outside",  # the outputs go to a temporary directory
        ]
        work.mkdir(parents=True, exist_ok=True)
        log = work / log_name
        job = {"argv": argv, "log": str(log), "kill_after": kill_after}
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(job) + "\n")
        self._process.stdin.flush()
        report = json.loads(self._readline())
        return Ended(report["exit_code"], report["seconds"], log.read_text())

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _readline(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        assert line, "the launcher process died"
        return line.strip()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenario") / "kill_chain.tts"
    path.write_text(SCENARIO)
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer(FaultConfig(delay_s=ANSWER_DELAY_S)) as running:
        yield running


@pytest.fixture(scope="module")
def launcher(scenario: Path) -> Iterator[Launcher]:
    running = Launcher(scenario)
    try:
        yield running
    finally:
        running.close()


@dataclass(frozen=True)
class Reference:
    seconds: float
    outputs: dict[str, bytes]
    requests: set[str]


@pytest.fixture(scope="module")
def reference(
    launcher: Launcher, server: FaultServer, tmp_path_factory: pytest.TempPathFactory
) -> Reference:
    """An uninterrupted run: its duration, its outputs and the requests it sent."""
    work = tmp_path_factory.mktemp("reference")
    before = requests_by_digest(server)
    ended = launcher.run(server, work, "run.log")
    assert ended.exit_code == 0, ended.log
    sent = requests_by_digest(server) - before
    assert sum(sent.values()) == len(sent) == CALLS  # each request once, no retries
    return Reference(ended.seconds, final_outputs(work), set(sent))


def requests_by_digest(server: FaultServer) -> Counter[str]:
    return Counter(server.stats()["by_request"])


def recorded_digests(state: Path, scratch: Path) -> set[str]:
    """The requests whose answers the LLM cache holds.

    Read from a copy (database and write-ahead log), so that the re-run finds the files
    exactly as the killed run left them: opening the database recovers its log.
    """
    copies = scratch / "cache-copy"
    shutil.rmtree(copies, ignore_errors=True)
    copies.mkdir(parents=True)
    for path in state.glob("cache.sqlite*"):
        shutil.copy2(path, copies / path.name)
    with closing(sqlite3.connect(copies / "cache.sqlite")) as db:
        try:
            rows = db.execute("SELECT request FROM llm_calls").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return set()  # killed before the table was created
    return {request_digest(r["messages"], r["seed"]) for r in (json.loads(row[0]) for row in rows)}


def checkpoint_files(state: Path) -> list[Path]:
    return sorted((state / "checkpoints" / "kill_chain").glob("*.json.gz"))


def final_outputs(work: Path) -> dict[str, bytes]:
    latest = work / "out" / "latest"
    return {name: (latest / name).read_bytes() for name in COMPARED_FILES}


def manifest(work: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((work / "out" / "latest" / "manifest.json").read_text())
    return data


def kill_moments(duration: float) -> list[float]:
    """One seeded random moment in each twentieth of the run, so they cover all of it."""
    rng = random.Random(20)
    return [duration * (index + rng.random()) / KILLS for index in range(KILLS)]


def test_sigkill_at_20_moments_then_resume_reuses_every_recorded_call(
    launcher: Launcher, server: FaultServer, reference: Reference, tmp_path: Path
) -> None:
    started = time.monotonic()
    survived = 0
    state_at_kills: list[str] = []  # steps checkpointed / calls recorded when killed
    for index, moment in enumerate(kill_moments(reference.seconds)):
        work = tmp_path / f"kill{index:02d}"
        before = requests_by_digest(server)
        killed = launcher.run(server, work, "killed.log", kill_after=moment)
        for attempt in range(1, 4):
            if killed.killed:
                break
            # This run was faster than the reference one (a loaded machine slows the
            # reference as much as any run); kill a fresh one earlier in its own duration.
            work = tmp_path / f"kill{index:02d}-again{attempt}"
            earlier = min(moment, killed.seconds) * (1 - 0.2 * attempt)
            before = requests_by_digest(server)
            killed = launcher.run(server, work, "killed.log", kill_after=earlier)
        assert killed.killed, f"kill {index} at {moment:.2f} s came too late: {killed.log}"
        after_kill = requests_by_digest(server)
        recorded = recorded_digests(work / "state", tmp_path)
        checkpoints = checkpoint_files(work / "state")
        assert recorded <= set(after_kill - before)
        state_at_kills.append(f"{len(checkpoints)}/{len(recorded)}")

        resumed = launcher.run(server, work, "resumed.log")
        assert resumed.exit_code == 0, f"kill {index} at {moment:.2f} s: {resumed.log}"
        sent_again = requests_by_digest(server) - after_kill
        assert not recorded & set(sent_again), f"kill {index}: recorded calls were sent again"
        assert set(after_kill - before) | set(sent_again) == reference.requests
        assert all(count == 1 for count in sent_again.values())
        summary = manifest(work)
        assert summary["model_calls"] == sum(sent_again.values())
        assert summary["steps_restored"] == len(checkpoints)
        assert summary["steps_executed"] == STEPS - len(checkpoints)
        assert final_outputs(work) == reference.outputs, f"kill {index} at {moment:.2f} s"
        survived += 1
    elapsed = time.monotonic() - started
    print(
        f"\nkills survived {survived}/{KILLS}; reference run {reference.seconds:.2f} s; "
        f"{KILLS} kills and resumes {elapsed:.1f} s; at each kill, steps checkpointed/calls "
        f"recorded: {' '.join(state_at_kills)}"
    )


# ------------------------------------------------------------------ damaged state files


def completed_run(launcher: Launcher, server: FaultServer, work: Path) -> None:
    ended = launcher.run(server, work, "first.log")
    assert ended.exit_code == 0, ended.log


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_damaged_checkpoint_is_reported_and_not_restored(
    launcher: Launcher, server: FaultServer, reference: Reference, tmp_path: Path, damage: str
) -> None:
    completed_run(launcher, server, tmp_path)
    last = checkpoint_files(tmp_path / "state")
    assert len(last) == STEPS
    # The newest checkpoint is the one a re-run would restore.
    newest = max(last, key=lambda path: path.stat().st_mtime_ns)
    intact = newest.read_bytes()
    if damage == "truncated":
        newest.write_bytes(intact[: len(intact) // 2])
    else:  # valid gzip, altered payload: only the checksum can tell
        raw = gzip.decompress(intact)
        newest.write_bytes(gzip.compress(raw.replace(b'"intent":', b'"INTENT":', 1)))
        assert gzip.decompress(newest.read_bytes()) != raw
    before = requests_by_digest(server)

    ended = launcher.run(server, tmp_path, "rerun.log")
    assert ended.exit_code == 0, ended.log
    assert f"warning: ignoring damaged checkpoint of step 05-extract-panel: {newest}" in ended.log
    summary = manifest(tmp_path)
    assert summary["steps_restored"] == STEPS - 1 and summary["steps_executed"] == 1
    assert any(str(newest) in note for note in summary["notes"])
    assert summary["model_calls"] == 0 and summary["cache_hits"] == 24
    assert requests_by_digest(server) == before
    assert final_outputs(tmp_path) == reference.outputs


@pytest.mark.parametrize("damage", ["overwritten_pages", "truncated", "unreadable_entry"])
def test_damaged_cache_stops_the_run_with_a_clear_message(
    launcher: Launcher, server: FaultServer, tmp_path: Path, damage: str
) -> None:
    completed_run(launcher, server, tmp_path)
    latest = (tmp_path / "out" / "latest").resolve()
    cache = tmp_path / "state" / "cache.sqlite"
    data = cache.read_bytes()
    if damage == "overwritten_pages":
        middle = len(data) // 2
        cache.write_bytes(data[:middle] + random.Random(1).randbytes(8192) + data[middle + 8192 :])
    elif damage == "truncated":
        cache.write_bytes(data[: len(data) // 2])
    else:
        with closing(sqlite3.connect(cache)) as db, db:
            db.execute("UPDATE llm_calls SET response = '{not json' WHERE rowid = 1")
        # Without checkpoints the run must read the cache to rebuild its state.
        for path in checkpoint_files(tmp_path / "state"):
            path.unlink()
    before = requests_by_digest(server)

    ended = launcher.run(server, tmp_path, "rerun.log")
    assert f"LLM cache {cache} is corrupted" in ended.log
    assert "move it aside to start a new cache" in ended.log
    assert "run the same command again" not in ended.log  # it would fail the same way
    # Refused before any step (2), or the step that met the bad entry failed (3).
    assert ended.exit_code == (3 if damage == "unreadable_entry" else 2), ended.log
    assert requests_by_digest(server) == before  # nothing was asked again instead
    assert (tmp_path / "out" / "latest").resolve() == latest  # no new results
