"""Checkpoints: the full run state after every step, keyed by the step's chained hash.

A step's hash covers that step, every step before it and every definition they
depend on (see `tiny_dsl.plan.model`), so a checkpoint stored under it is valid
for any plan that shares that prefix. Resuming means finding the longest prefix
of the plan whose checkpoints exist and restoring the last readable one.

Files are written atomically (temporary file in the same directory, fsync,
`os.replace`), so a kill at any moment leaves either no file or the complete
one (and perhaps a temporary file, which the next run removes). Each file also
carries a SHA-256 of its payload: a file damaged afterwards (truncated copy, disk
error) is detected and skipped with a warning, never restored.

Layout: `<state_dir>/checkpoints/<scenario>/<step-hash>.json.gz`, containing a
one-line JSON header (`format`, `sha256`, `bytes`) followed by the JSON payload.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiny_dsl.files import write_bytes_atomic
from tiny_dsl.plan.model import Plan

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointCorrupt",
    "CheckpointStore",
    "Restored",
    "covered_steps",
]

CHECKPOINT_FORMAT = 1
# Fast compression: checkpoints are written after every step, and transcripts
# compress well even at the lowest level.
_GZIP_LEVEL = 1
# Age past which a temporary file in the checkpoint directory is a killed write's
# leftover: writing even a large checkpoint takes well under a second.
STALE_TEMPORARY_S = 600.0


class CheckpointCorrupt(Exception):
    """A checkpoint file that cannot be trusted; the message says why."""


@dataclass(frozen=True)
class Restored:
    """The checkpoint a run resumes from: the index of the last completed step, and its payload."""

    index: int
    payload: dict[str, Any]


class CheckpointStore:
    """The checkpoints of one scenario under `state_dir`."""

    def __init__(self, state_dir: Path, scenario: str) -> None:
        self.directory = Path(state_dir) / "checkpoints" / scenario

    def path(self, step_hash: str) -> Path:
        return self.directory / f"{step_hash}.json.gz"

    def save(self, step_hash: str, payload: dict[str, Any]) -> Path:
        """Write `payload` atomically under `step_hash`; returns the file."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        header = json.dumps(
            {
                "format": CHECKPOINT_FORMAT,
                "sha256": hashlib.sha256(body).hexdigest(),
                "bytes": len(body),
            }
        ).encode("utf-8")
        path = self.path(step_hash)
        write_bytes_atomic(
            path, gzip.compress(header + b"\n" + body, compresslevel=_GZIP_LEVEL, mtime=0)
        )
        return path

    def load(self, step_hash: str) -> dict[str, Any]:
        """The payload saved under `step_hash`; raises `CheckpointCorrupt` if damaged."""
        path = self.path(step_hash)
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error) as exc:
            raise CheckpointCorrupt(f"{path}: unreadable ({exc})") from exc
        header_line, newline, body = raw.partition(b"\n")
        try:
            header = json.loads(header_line)
        except ValueError as exc:
            raise CheckpointCorrupt(f"{path}: no valid header") from exc
        if not newline or not isinstance(header, dict):
            raise CheckpointCorrupt(f"{path}: no valid header")
        if header.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointCorrupt(
                f"{path}: checkpoint format {header.get('format')!r} is not {CHECKPOINT_FORMAT}"
            )
        if len(body) != header.get("bytes") or hashlib.sha256(body).hexdigest() != header.get(
            "sha256"
        ):
            raise CheckpointCorrupt(f"{path}: checksum mismatch (the file is damaged)")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise CheckpointCorrupt(f"{path}: payload is not JSON ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("step_hash") != step_hash:
            raise CheckpointCorrupt(f"{path}: payload belongs to another step")
        return payload

    def covered(self, plan: Plan) -> int:
        """How many leading steps of `plan` have a checkpoint file (not yet verified)."""
        count = 0
        for step in plan.steps:
            if not step.hash or not self.path(step.hash).is_file():
                break
            count += 1
        return count

    def resume_point(
        self, plan: Plan, warn: Callable[[str], None] | None = None
    ) -> Restored | None:
        """The last readable checkpoint within the longest covered prefix, or None.

        Files are verified from the end of the prefix backwards, so resuming reads
        one file in the normal case; a damaged one is reported through `warn` and
        the one before it is tried.
        """
        self._remove_stale_temporaries()
        for index in range(self.covered(plan) - 1, -1, -1):
            step = plan.steps[index]
            try:
                payload = self.load(step.hash)
            except CheckpointCorrupt as exc:
                if warn is not None:
                    warn(f"ignoring damaged checkpoint of step {step.id}: {exc}")
                continue
            if payload.get("step_index") != index:
                if warn is not None:
                    warn(f"ignoring checkpoint of step {step.id}: it was saved at another position")
                continue
            return Restored(index, payload)
        return None

    def _remove_stale_temporaries(self) -> None:
        """Delete what a run killed while writing a checkpoint left behind.

        `write_bytes_atomic` writes `.<name>.<random>.tmp` and renames it within
        moments; a killed writer leaves it forever. One older than
        `STALE_TEMPORARY_S` cannot belong to a write still under way (another
        run of the same scenario, say), so it is removed.
        """
        cutoff = time.time() - STALE_TEMPORARY_S
        for temporary in self.directory.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if temporary.stat().st_mtime < cutoff:
                    temporary.unlink()


def covered_steps(plan: Plan, state_dir: Path) -> list[str]:
    """Ids of the leading steps a re-run would restore instead of executing (`tts plan`).

    Based on which checkpoint files exist; a damaged one is only found (and
    skipped) when a run reads it.
    """
    store = CheckpointStore(state_dir, plan.settings.scenario)
    return [step.id for step in plan.steps[: store.covered(plan)]]
