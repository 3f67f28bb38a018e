"""Fuzz benchmark: parser, checker and planner on 100,000 hostile inputs.

Inputs, from one seed:
  - the corpus itself (scenarios/*.tts, stdlib/**/*.tts, tests/cases/fuzz/*.tts),
  - token-level mutations of the corpus,
  - character-level mutations of the corpus,
  - both at once,
  - hypothesis-generated text (runs of keyword and punctuation tokens, and
    arbitrary Unicode).
Each goes through `tests.fuzzing.run_pipeline`: parse and check, and compile
and render the plan when the check passes. A crash is any exception other
than diagnostics; a hang is an input that takes more than `--slow` seconds of
CPU time (one that runs past `--timeout` is interrupted). CPU time, not wall
time, so that a busy machine does not pass for a slow input. Offending inputs are saved to
`--save-dir` with their traceback, at most `--keep` per distinct crash site.

Run:  nice python benchmarks/bench_fuzz.py [--count 100000] [--seed 0] [--jobs 2]
Exit status 1 when anything crashed or hung.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import Phase, given, seed, settings

from tests.fuzzing import (
    CorpusFile,
    Outcome,
    generated_texts,
    load_corpus,
    mutate_chars,
    mutate_tokens,
    run_pipeline,
)

# Shares of the input kinds; the rest is hypothesis-generated text.
TOKEN_SHARE = 0.4
CHAR_SHARE = 0.3
BOTH_SHARE = 0.1
MAX_EDITS = 8


class InputTimeout(BaseException):
    """Raised by the alarm inside a runaway input; a BaseException so no
    `except Exception` in the code under test swallows it."""


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    raise InputTimeout


class Findings:
    def __init__(self, save_dir: Path, slow: float, keep: int) -> None:
        self.save_dir = save_dir
        self.slow = slow
        self.keep = keep
        self.inputs = 0
        self.checked = 0
        self.crashes = 0
        self.hangs = 0
        self.sites: Counter[str] = Counter()
        self.slowest = 0.0
        self.slowest_kind = ""

    def record(self, kind: str, text: str | None, outcome: Outcome | None, seconds: float) -> None:
        """`outcome` is None when the input ran past the timeout and was interrupted;
        `text` is given for offending inputs only."""
        self.inputs += 1
        if seconds > self.slowest:
            self.slowest, self.slowest_kind = seconds, kind
        if outcome is not None and outcome.checked:
            self.checked += 1
        if outcome is not None and outcome.crash is not None:
            self.crashes += 1
            site = _crash_site(outcome.crash)
            self.sites[site] += 1
            if self.sites[site] <= self.keep:
                self._save("crash", kind, text, outcome.crash)
        if outcome is None or seconds > self.slow:
            self.hangs += 1
            self._save("hang", kind, text, f"{kind} input took {seconds:.2f} s of CPU\n")

    def _save(self, what: str, kind: str, text: str | None, report: str) -> None:
        assert text is not None, "offending inputs come back with their text"
        self.save_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        stem = self.save_dir / f"{what}-{kind}-{digest}"
        stem.with_suffix(".tts").write_text(text, encoding="utf-8", errors="surrogatepass")
        stem.with_suffix(".txt").write_text(report, encoding="utf-8")


def _crash_site(trace: str) -> str:
    """The exception type and the innermost frame: one line per distinct bug."""
    frames = [line.strip() for line in trace.splitlines() if line.strip().startswith("File ")]
    return f"{trace.strip().splitlines()[-1].split(':')[0]} at {frames[-1] if frames else '?'}"


def _timed(text: str, path: Path, timeout: float) -> tuple[Outcome | None, float]:
    """The outcome (None if interrupted) and the CPU seconds the input took."""
    started = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, timeout)
    try:
        outcome: Outcome | None = run_pipeline(text, path)
    except InputTimeout:
        outcome = None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    return outcome, time.process_time() - started


def mutant(corpus: list[CorpusFile], seed_value: int, index: int) -> tuple[str, CorpusFile, str]:
    """Input `index` of the run: (kind, original, mutated text), the same in any process."""
    rng = random.Random(f"{seed_value}:{index}")
    original = rng.choice(corpus)
    roll = rng.random() * (TOKEN_SHARE + CHAR_SHARE + BOTH_SHARE)
    if roll < TOKEN_SHARE:
        return "token", original, mutate_tokens(original.text, rng, rng.randint(1, MAX_EDITS))
    if roll < TOKEN_SHARE + CHAR_SHARE:
        return "char", original, mutate_chars(original.text, rng, rng.randint(1, MAX_EDITS))
    text = mutate_tokens(original.text, rng, rng.randint(1, MAX_EDITS // 2))
    return "both", original, mutate_chars(text, rng, rng.randint(1, MAX_EDITS // 2))


def generated(count: int, seed_value: int) -> list[str]:
    """`count` hypothesis-generated texts, reproducible from the seed."""
    texts: list[str] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate])
    @given(generated_texts)
    def collect(text: str) -> None:
        texts.append(text)

    if count:
        collect()
    return texts[:count]


# Per worker process: the corpus, the seed and the limits, set once.
_worker: dict[str, Any] = {}


def _start_worker(seed_value: int, slow: float, timeout: float) -> None:
    signal.signal(signal.SIGPROF, _on_alarm)
    corpus = load_corpus()
    _worker.update(
        corpus=corpus,
        seed=seed_value,
        slow=slow,
        timeout=timeout,
        # Generated text is checked as if it were a new file next to the examples.
        location=corpus[0].path.parent / "generated.tts",
    )
    # Build the parser and read the stdlib now, so that no input is charged for it.
    for original in corpus:
        run_pipeline(original.text, original.path)


# What a worker runs: a mutant (by index), a corpus file unchanged (by its
# position in the corpus), or a generated text.
Task = int | tuple[str, int] | str


def _run_one(task: Task) -> tuple[str, Outcome | None, float, str | None]:
    """Run one input; the text comes back only if it offends."""
    if isinstance(task, int):
        kind, original, text = mutant(_worker["corpus"], _worker["seed"], task)
        path = original.path
    elif isinstance(task, tuple):
        original = _worker["corpus"][task[1]]
        kind, text, path = "corpus", original.text, original.path
    else:
        kind, text, path = "generated", task, _worker["location"]
    outcome, seconds = _timed(text, path, _worker["timeout"])
    offends = outcome is None or outcome.crash is not None or seconds > _worker["slow"]
    return kind, outcome, seconds, text if offends else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="inputs in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--slow", type=float, default=1.0, help="CPU seconds that make a hang")
    parser.add_argument("--timeout", type=float, default=10.0, help="CPU seconds before stopping")
    parser.add_argument("--save-dir", type=Path, default=Path("outputs/fuzz"))
    parser.add_argument("--keep", type=int, default=3, help="inputs saved per crash site")
    args = parser.parse_args()

    findings = Findings(args.save_dir, args.slow, args.keep)
    generated_count = round(args.count * (1 - TOKEN_SHARE - CHAR_SHARE - BOTH_SHARE))
    # The corpus unchanged first: a crash there is a bug no mutation is needed for.
    tasks: list[Task] = [("corpus", index) for index in range(len(load_corpus()))]
    tasks += range(args.count - generated_count - len(tasks))
    tasks += generated(generated_count, args.seed)
    started = time.perf_counter()
    with multiprocessing.Pool(
        args.jobs, _start_worker, (args.seed, args.slow, args.timeout)
    ) as pool:
        for kind, outcome, seconds, text in pool.imap_unordered(_run_one, tasks, chunksize=20):
            findings.record(kind, text, outcome, seconds)
            if findings.inputs % 5000 == 0:
                rate = findings.inputs / (time.perf_counter() - started)
                print(
                    f"  {findings.inputs:,} inputs, {findings.crashes} crashes, "
                    f"{findings.hangs} hangs, {rate:,.0f}/s",
                    file=sys.stderr,
                    flush=True,
                )
    elapsed = time.perf_counter() - started

    print(f"inputs        {findings.inputs:,} (seed {args.seed}, {args.jobs} processes)")
    print(f"checked clean {findings.checked:,} (planned)")
    print(f"crashes       {findings.crashes:,} ({len(findings.sites)} distinct sites)")
    for site, times in findings.sites.most_common():
        print(f"  {times:6,}  {site}")
    print(f"hangs         {findings.hangs:,} (over {args.slow:g} s of CPU)")
    print(f"slowest input {findings.slowest:.3f} s of CPU ({findings.slowest_kind})")
    print(f"throughput    {findings.inputs / elapsed:,.0f} inputs/s ({elapsed:,.0f} s in all)")
    if findings.crashes or findings.hangs:
        print(f"offending inputs saved to {args.save_dir}/")
        sys.exit(1)


if __name__ == "__main__":
    main()
