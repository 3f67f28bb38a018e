"""Checkpoints and resume: atomic, verified, and a resumed run equals an uninterrupted one.

The kill test runs the real embedded model in a subprocess and SIGKILLs it in the
middle of a step; everything else uses the scripted provider of `test_runtime`.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.origins import ORIGIN
from tests.test_runtime import (
    PANEL,
    extract,
    make_plan,
    run,
    scripted_client,
    sent,
    transcript_lines,
    world,
)
from tiny_dsl.plan.model import AskStep, BroadcastStep, ExtractStep, Plan, RunStep, Step
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.checkpoints import CheckpointCorrupt, CheckpointStore, covered_steps
from tiny_dsl.runtime.providers.base import ChatRequest
from tiny_dsl.session import RunOutcome


def panel_plan(last_question: str = "Would you buy it?") -> Plan:
    ids = ["ann", "bob", "cat"]
    steps: list[Step] = [
        BroadcastStep(id="", origin=ORIGIN, world="panel", text="Welcome!", speaker="mod"),
        RunStep(id="", origin=ORIGIN, world="panel", round=1, of=2, agents=ids),
        RunStep(id="", origin=ORIGIN, world="panel", round=2, of=2, agents=ids),
        AskStep(id="", origin=ORIGIN, world="panel", question=last_question, agents=ids),
        extract("panel", ids),
    ]
    return make_plan(PANEL, [world("panel", "focus_group", ids, moderator="mod")], steps)


def outputs(result: RunOutcome) -> tuple[list[str], str, str]:
    run_dir = result.run_dir
    return (
        transcript_lines(result),
        (run_dir / "results.csv").read_text(),
        (run_dir / "results.jsonl").read_text(),
    )


# ---------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_is_atomic(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "demo")
    payload = {"step_hash": "abc", "step_index": 0, "data": ["é", 1, None]}
    path = store.save("abc", payload)
    assert path == tmp_path / "checkpoints" / "demo" / "abc.json.gz"
    assert store.load("abc") == payload
    assert [p.name for p in path.parent.iterdir()] == ["abc.json.gz"]  # no temp files left


def test_a_killed_writes_leftover_is_removed_by_the_next_run(tmp_path: Path) -> None:
    plan = panel_plan()
    store = CheckpointStore(tmp_path / "state", plan.settings.scenario)
    store.directory.mkdir(parents=True)
    leftover = store.directory / f".{plan.steps[0].hash}.json.gz.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    an_hour_ago = time.time() - 3600
    os.utime(leftover, (an_hour_ago, an_hour_ago))
    in_progress = store.directory / f".{plan.steps[1].hash}.json.gz.wr1t3s.tmp"
    in_progress.write_bytes(b"being written by another run")

    run(plan, scripted_client(), tmp_path)
    assert not leftover.exists()
    assert in_progress.exists()  # too recent to be a leftover


def test_damaged_checkpoints_are_detected(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "demo")
    path = store.save("abc", {"step_hash": "abc", "step_index": 0, "value": 41})
    intact = path.read_bytes()

    path.write_bytes(intact[: len(intact) // 2])  # truncated, as by a crashed copy
    with pytest.raises(CheckpointCorrupt, match="unreadable"):
        store.load("abc")

    # Valid gzip, tampered payload: only the embedded checksum can tell.
    raw = gzip.decompress(intact).replace(b'"value":41', b'"value":42')
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(CheckpointCorrupt, match="checksum mismatch"):
        store.load("abc")

    path.write_bytes(gzip.compress(b"not a header\n{}"))
    with pytest.raises(CheckpointCorrupt, match="no valid header"):
        store.load("abc")

    store.save("other", {"step_hash": "other", "step_index": 0})
    path.write_bytes(store.path("other").read_bytes())  # a file renamed by hand
    with pytest.raises(CheckpointCorrupt, match="another step"):
        store.load("abc")


def test_damaged_last_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, llm_cache: LLMCache
) -> None:
    plan = panel_plan()
    client = scripted_client(cache=llm_cache)
    first = run(plan, client, tmp_path)
    store = CheckpointStore(tmp_path / "state", plan.settings.scenario)
    last = store.path(plan.steps[-1].hash)
    last.write_bytes(last.read_bytes()[:-20])

    warnings: list[str] = []
    second = run(
        plan,
        scripted_client(cache=llm_cache),
        tmp_path,
        on_event=lambda e: warnings.append(e.message) if e.kind == "warning" else None,
    )
    assert second.executed == [plan.steps[-1].id]
    assert len(warnings) == 1 and "ignoring damaged checkpoint of step 05-extract" in warnings[0]
    assert second.manifest.notes == warnings
    assert second.manifest.model_calls == 0 and second.manifest.cache_hits == 3
    assert outputs(second) == outputs(first)


# --------------------------------------------------------------------------- resume


def test_resume_after_a_failure_equals_an_uninterrupted_run(
    tmp_path: Path, llm_cache: LLMCache
) -> None:
    plan = panel_plan()
    reference = run(plan, scripted_client(), tmp_path / "reference")

    # Bob's call in round 2 fails once; Ann's and Cat's answers in that round arrive.
    failures = {"count": 0}

    def fail_once(request: ChatRequest) -> Exception | None:
        # Only round 2 prompts show what Ann said in round 1.
        heard_ann = "ann says" in request.messages[1].content
        if request.purpose == "act bob" and heard_ann and not failures["count"]:
            failures["count"] += 1
            return ConnectionError("connection reset by peer")
        return None

    failed = run(plan, scripted_client(cache=llm_cache, fail=fail_once), tmp_path / "resumed")
    assert failed.exit_code == 3
    assert failed.diagnostics[0].message == "step 03-run failed: connection reset by peer"
    calls_before = len(llm_cache)

    client = scripted_client(cache=llm_cache)
    resumed = run(plan, client, tmp_path / "resumed")
    assert resumed.restored == ["01-broadcast", "02-run"]
    assert resumed.executed == ["03-run", "04-ask", "05-extract"]
    # Ann's and Cat's round-2 answers were recorded before the failure: cache hits now.
    assert client.stats.cache_hits == 2 and calls_before == 3 + 2
    assert outputs(resumed) == outputs(reference)


def test_unchanged_rerun_executes_nothing(tmp_path: Path, llm_cache: LLMCache) -> None:
    plan = panel_plan()
    client = scripted_client(cache=llm_cache)
    first = run(plan, client, tmp_path)
    assert first.manifest.model_calls == 12 and len(first.executed) == 5

    assert covered_steps(plan, tmp_path / "state") == [step.id for step in plan.steps]
    again = scripted_client(cache=llm_cache)
    second = run(plan, again, tmp_path)
    assert second.executed == [] and len(second.restored) == 5
    assert second.manifest.model_calls == 0 and second.manifest.cache_hits == 0
    assert sent(again) == []
    assert outputs(second) == outputs(first)
    assert {s.status for s in second.manifest.steps} == {"restored"}


def test_editing_the_last_step_reruns_only_that_step(tmp_path: Path, llm_cache: LLMCache) -> None:
    plan = panel_plan()
    last = plan.steps[-1]
    assert isinstance(last, ExtractStep)
    fields = [f.model_copy(update={"description": "edited"}) for f in last.fields]
    edited = plan.model_copy(
        update={
            "steps": [
                *plan.steps[:-1],
                last.model_copy(update={"fields": fields, "hash": "f" * 64}),
            ]
        }
    )
    assert [s.hash for s in edited.steps[:-1]] == [s.hash for s in plan.steps[:-1]]
    assert edited.steps[-1].hash != plan.steps[-1].hash

    client = scripted_client(cache=llm_cache)
    run(plan, client, tmp_path)
    assert covered_steps(edited, tmp_path / "state") == [s.id for s in plan.steps[:-1]]
    rerun = scripted_client(cache=llm_cache)
    result = run(edited, rerun, tmp_path)
    assert result.executed == ["05-extract"]
    assert result.restored == ["01-broadcast", "02-run", "03-run", "04-ask"]
    assert {r.purpose for r in sent(rerun)} == {"extract ann", "extract bob", "extract cat"}
    assert result.manifest.model_calls == 3


def test_editing_a_middle_step_reruns_from_there(tmp_path: Path, llm_cache: LLMCache) -> None:
    client = scripted_client(cache=llm_cache)
    run(panel_plan(), client, tmp_path)
    result = run(panel_plan("Would you recommend it?"), scripted_client(cache=llm_cache), tmp_path)
    assert result.executed == ["04-ask", "05-extract"]


def test_fresh_ignores_checkpoints(tmp_path: Path, llm_cache: LLMCache) -> None:
    plan = panel_plan()
    client = scripted_client(cache=llm_cache)
    first = run(plan, client, tmp_path)
    again = scripted_client(cache=llm_cache)
    second = run(plan, again, tmp_path, fresh=True)
    assert len(second.executed) == 5
    assert again.stats.model_calls == 0 and again.stats.cache_hits == 12
    assert outputs(second) == outputs(first)


# ------------------------------------------------------------------ kill -9 mid-run

DRIVER = """
import json, sys
from pathlib import Path
from tiny_dsl.runtime.cache import LLMCache
from tiny_dsl.runtime.client import LLMClient
from tiny_dsl.runtime.interpreter import load_plan
from tiny_dsl.runtime.providers import EmbeddedProvider
from tiny_dsl.session import Session

work = Path(sys.argv[1])
provider = EmbeddedProvider(n_threads=1)  # robust to a busy machine, see test_runtime
client = LLMClient(provider, LLMCache(work / "cache.sqlite"), max_concurrency=2)
result = Session(state_dir=work / "state").execute(
    load_plan(work / "plan.json"), client, output_dir=work / "out"
)
print(json.dumps({
    "executed": result.executed,
    "restored": result.restored,
    "model_calls": result.manifest.model_calls,
    "cache_hits": result.manifest.cache_hits,
    "events": len(result.transcript),
}))
"""

SURVEY = """
scenario kill_test {
  title "Killed mid-run"
  seed 9
}

persona ana {
  name "Ana Silva"
  age 34
}

persona ben {
  name "Ben Okoro"
  age 45
}

world poll {
  mode survey
  agents ana, ben
}

timeline {
  ask poll "Do you like tea? Answer in one sentence."
  ask poll "Do you like coffee? Answer in one sentence."
}
"""


def cached_calls(cache: Path) -> int:
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0])
    except sqlite3.OperationalError:  # table not created yet, or busy
        return 0


@pytest.mark.model
def test_kill_9_mid_step_resumes_without_redoing_work(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from tests.test_runtime import compile_text

    plan = compile_text(SURVEY, tmp_path / "kill.tts")
    (tmp_path / "plan.json").write_text(plan.model_dump_json())
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path)]
    checkpoints = tmp_path / "state" / "checkpoints" / plan.settings.scenario
    first_step = checkpoints / f"{plan.steps[0].hash}.json.gz"

    # Kill once the first ask is checkpointed and one call of the second is recorded.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not (first_step.exists() and cached_calls(tmp_path / "cache.sqlite") >= 3):
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    recorded = cached_calls(tmp_path / "cache.sqlite")
    saved = {path.name for path in checkpoints.iterdir() if path.name.endswith(".json.gz")}

    finished = subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]
    report = json.loads(finished.stdout.decode().strip().splitlines()[-1])
    restored = [s.id for s in plan.steps if f"{s.hash}.json.gz" in saved]
    assert report["restored"] == restored and restored[0] == plan.steps[0].id
    assert not set(report["executed"]) & set(restored)
    # Calls of the interrupted step recorded before the kill are answered from the cache
    # (the kill lands while the second ask's last call is generating).
    assert len(restored) == 1
    assert report["cache_hits"] == recorded - 2 >= 1
    total_calls = 2 * 2  # two asks, two agents each
    assert report["model_calls"] < total_calls
    assert report["events"] >= 4  # both questions reached both agents
