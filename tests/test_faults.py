"""A 200-person survey under injected server faults ends exactly like a fault-free run.

The survey (generate 200 members, ask them one question, extract two fields: 600 model
calls) runs through `tts run`'s code path (`Session.run`) against the fault server
(`tests/fault_server.py`), once without faults and once with 30% of the attempts failing
in every way the server knows (rate limits with and without Retry-After, 500, 503, hangs,
truncated and invalid bodies, schema-invalid answers, trickled bodies). Retries and
repairs must hide every fault: same result rows, none lost or doubled, same transcript,
and the manifest must account for each retry the server caused.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fault_server import FAULT_KINDS, FaultConfig, FaultServer
from tiny_dsl.session import RunOptions, RunOutcome, Session

SCENARIO = """
scenario fault_survey {
  title "A 200-person survey under injected faults"
  seed 17
  max_concurrency 32
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

population residents {
  from town
  size 200
}

world poll {
  mode survey
  agents residents
  context "A short survey by the town council."
}

timeline {
  ask poll "Would you use a new weekend bus line? Say why in one sentence."
}

extract from poll {
  likelihood int 1..10 "How likely the person is to use the bus line, from 1 to 10"
  would_pay  bool      "Whether the person would pay 2 dollars a ride"
}

output {
  formats [csv, jsonl]
}
"""
AGENTS = 200
CALLS = 3 * AGENTS  # generate, ask, extract
FAULT_RATE = 0.3
# Every normal answer arrives well within the attempt timeout even on a busy machine;
# a hang outlasts it, a trickled body does not.
ATTEMPT_TIMEOUT_S = 3.0
HANG_S = 4.0
TRICKLE_S = 0.2
BACKOFF_BASE_S = 0.05
COMPARED_FILES = ("results.csv", "results.jsonl", "transcript.jsonl")
# Faults the client retries as they are; a schema-invalid answer is repaired instead, and
# a trickled body is only slow.
RETRIED_KINDS = frozenset(FAULT_KINDS) - {"schema_invalid", "slow_body"}


def run_survey(scenario: Path, server: FaultServer, work: Path) -> RunOutcome:
    options = RunOptions(
        provider="openai-compatible",
        base_url=server.base_url,
        quiet=True,
        output_dir=work / "out",
        attempt_timeout_s=ATTEMPT_TIMEOUT_S,
        backoff_base_s=BACKOFF_BASE_S,
    )
    return Session(state_dir=work / "state").run(scenario, options)


def outputs(outcome: RunOutcome) -> dict[str, bytes]:
    assert outcome.run_dir is not None
    return {name: (outcome.run_dir / name).read_bytes() for name in COMPARED_FILES}


def test_survey_under_30_percent_faults_equals_a_fault_free_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runs talk to the fault server only, with no key from the developer's shell.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    scenario = tmp_path / "survey.tts"
    scenario.write_text(SCENARIO)

    started = time.monotonic()
    with FaultServer(FaultConfig()) as clean:
        reference = run_survey(scenario, clean, tmp_path / "clean")
        clean_stats = clean.stats()
    clean_seconds = time.monotonic() - started
    assert reference.exit_code == 0, reference.summary
    assert clean_stats["requests"] == CALLS and clean_stats["served"] == {"ok": CALLS}

    config = FaultConfig(fault_rate=FAULT_RATE, seed=3, hang_s=HANG_S, trickle_s=TRICKLE_S)
    started = time.monotonic()
    with FaultServer(config) as faulty:
        outcome = run_survey(scenario, faulty, tmp_path / "faulty")
        stats = faulty.stats()
    faulty_seconds = time.monotonic() - started
    assert outcome.exit_code == 0, outcome.summary

    served: dict[str, int] = stats["served"]
    assert {kind for kind in FAULT_KINDS if served.get(kind, 0) == 0} == set()
    faults = stats["requests"] - served["ok"]
    assert faults / stats["requests"] > 0.2

    assert outputs(outcome) == outputs(reference)
    assert outcome.run_dir is not None
    rows = list(csv.DictReader((outcome.run_dir / "results.csv").open()))
    assert sorted(row["agent"] for row in rows) == [f"residents/{n:03d}" for n in range(1, 201)]
    assert all(row["_missing"] == "" for row in rows)  # every field answered

    manifest: dict[str, Any] = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["retries"] == sum(served.get(kind, 0) for kind in RETRIED_KINDS) > 0
    assert manifest["repairs"] == served["schema_invalid"]
    # Every attempt the client counted reached the server, and nothing else did.
    assert (
        manifest["model_calls"]
        == stats["requests"]
        == CALLS + manifest["retries"] + (manifest["repairs"])
    )
    print(
        f"\nfault rate {faults / stats['requests']:.1%} of {stats['requests']} attempts "
        f"(configured {FAULT_RATE:.0%} per attempt, at most "
        f"{config.max_faults_per_request} per request); served {served}; "
        f"retries {manifest['retries']}, repairs {manifest['repairs']}; identical outputs; "
        f"wall time fault-free {clean_seconds:.1f} s, with faults {faulty_seconds:.1f} s"
    )
