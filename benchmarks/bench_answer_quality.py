"""Benchmark: the share of agent turns and extracted answers the quality checks flag.

For each run folder given (or, with `--run`, after running each scenario given on the
embedded model), re-checks the recorded transcript and results with
`tiny_dsl.runtime.quality` and prints, per run and per step kind, how many turns and
answers were checked, how many were flagged, and by which flags. It reads only what
the run wrote, so a run recorded before the checks existed is measured the same way:
this is the before/after figure for changes to the built-in prompts and decoding.

Run:  python benchmarks/bench_answer_quality.py outputs/advisor_under_test/latest ...
      python benchmarks/bench_answer_quality.py --run scenarios/v2/brainstorm.tts ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tiny_dsl.plan.model import Plan
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.quality import StepQuality, assess_run


def _read_run(run_dir: Path) -> tuple[Plan, list[TranscriptEvent], list[dict[str, Any]]]:
    plan = Plan.model_validate_json((run_dir / "plan.json").read_text(encoding="utf-8"))
    transcript = [
        TranscriptEvent.from_json(json.loads(line))
        for line in (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    results = run_dir / "results.json"
    rows = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else []
    return plan, transcript, rows


def _share(flagged: int, checked: int) -> str:
    return f"{flagged}/{checked} ({flagged / checked:.0%})" if checked else "-"


def measure(run_dir: Path) -> StepQuality:
    plan, transcript, rows = _read_run(run_dir)
    assessment = assess_run(plan, transcript, rows)
    kinds = {step.id: step.kind for step in plan.steps}
    by_kind: dict[str, StepQuality] = {}
    for step_id, counts in assessment.steps.items():
        by_kind.setdefault(kinds.get(step_id, "?"), StepQuality()).add(counts)
    total = assessment.total()
    print(f"{plan.settings.scenario} ({run_dir})")
    for kind, counts in sorted(by_kind.items()):
        flags = ", ".join(f"{f} {n}" for f, n in sorted(Counter(counts.flags).items()))
        print(
            f"  {kind:<16} turns {_share(counts.turns_flagged, counts.turns):<14} "
            f"answers {_share(counts.answers_flagged, counts.answers):<12} {flags}"
        )
    checked = total.turns + total.answers
    flagged = total.turns_flagged + total.answers_flagged
    print(f"  {'all':<16} flagged {_share(flagged, checked)}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or scenarios with --run")
    parser.add_argument("--run", action="store_true", help="run each scenario first (embedded)")
    args = parser.parse_args()
    totals = StepQuality()
    for path in args.paths:
        run_dir = path
        if args.run:
            subprocess.run(["tts", "run", str(path), "-q"], check=False)
            scenario = path.stem
            run_dir = Path("outputs") / scenario / "latest"
        try:
            total = measure(run_dir.resolve())
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            print(f"{run_dir}: not measured ({type(exc).__name__}: a run of an older format?)")
            continue
        totals.turns += total.turns
        totals.turns_flagged += total.turns_flagged
        totals.answers += total.answers
        totals.answers_flagged += total.answers_flagged
    checked = totals.turns + totals.answers
    flagged = totals.turns_flagged + totals.answers_flagged
    print(f"over every run: flagged {_share(flagged, checked)}")
    sys.exit(0)


if __name__ == "__main__":
    main()
