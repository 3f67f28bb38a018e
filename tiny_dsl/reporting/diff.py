"""`tts diff RUN_A RUN_B`: what changed between two runs of a scenario.

Three questions, in the order a reviewer asks them: did the setup change (settings,
the model that answered, plan steps), and did the results change (per-arm values,
effect sizes, p-values, expectations, funnels)? Plan steps are matched by their
stable id; because step hashes are chained, a step whose own content is unchanged
but whose hash differs is reported apart ("rehashed"): it changed only because
something before it, or a definition it depends on, did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, computed_field

from tiny_dsl.analysis import AnalysisResult, CompareResult, Effect, GroupStats, text
from tiny_dsl.reporting.rundir import RunData, load_run

_RUN_KEYS = (
    ("provider", "provider"),
    ("model", "model"),
    ("answered_by", "answered by"),
    ("seed", "seed"),
    ("model_calls", "model calls"),
    ("cache_hits", "cache hits"),
    ("input_tokens", "input tokens"),
    ("output_tokens", "output tokens"),
    ("cost_usd", "cost (USD)"),
    ("duration_s", "duration (s)"),
)
# Step fields that do not change what a step does.
_STEP_BOOKKEEPING = frozenset({"hash", "origin"})


class Change(BaseModel):
    key: str
    a: Any
    b: Any


class StepChange(BaseModel):
    id: str
    kind: str
    change: Literal["added", "removed", "changed", "rehashed"]


Unit = Literal["count", "number", "share", "points", "p"]


class ValueChange(BaseModel):
    """One number of one arm (or stage) in both runs."""

    item: str  # arm, "a vs b" comparison, or funnel stage
    measure: str  # "n", "mean", "share true", "Cohen's d", "Welch's t-test p (Holm)", ...
    unit: Unit  # how to read it: shares (and points, their differences) are fractions of 1
    a: float | None
    b: float | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


class ResultDiff(BaseModel):
    """A compare statement or funnel present in either run."""

    statement: str
    presence: Literal["both", "only_a", "only_b"]
    values: list[ValueChange]
    effects: list[ValueChange]
    p_values: list[ValueChange]
    conclusion_a: str = ""
    conclusion_b: str = ""


class ExpectationChange(BaseModel):
    statement: str
    unit: Unit
    passed_a: bool | None
    passed_b: bool | None
    observed_a: float | None
    observed_b: float | None


class RunDiff(BaseModel):
    run_a: str
    run_b: str
    problems: list[str]
    settings: list[Change]
    run: list[Change]
    steps: list[StepChange]
    results: list[ResultDiff]
    expectations: list[ExpectationChange]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def to_text(self) -> str:
        return "\n".join(_text_lines(self)) + "\n"


# ---------------------------------------------------------------- collection


def _changes(
    a: dict[str, Any], b: dict[str, Any], keys: Sequence[str] | None = None
) -> list[Change]:
    names = keys if keys is not None else sorted(a.keys() | b.keys())
    return [Change(key=k, a=a.get(k), b=b.get(k)) for k in names if a.get(k) != b.get(k)]


def _step_changes(a: RunData, b: RunData) -> list[StepChange]:
    def steps(run: RunData) -> dict[str, dict[str, Any]]:
        return {
            str(step.get("id")): step
            for step in run.plan.get("steps") or []
            if isinstance(step, dict)
        }

    old, new = steps(a), steps(b)
    changes = []
    for step_id in [*new, *(i for i in old if i not in new)]:
        before, after = old.get(step_id), new.get(step_id)
        kind = str((after or before or {}).get("kind", ""))
        if before is None:
            changes.append(StepChange(id=step_id, kind=kind, change="added"))
        elif after is None:
            changes.append(StepChange(id=step_id, kind=kind, change="removed"))
        else:
            own_before = {k: v for k, v in before.items() if k not in _STEP_BOOKKEEPING}
            own_after = {k: v for k, v in after.items() if k not in _STEP_BOOKKEEPING}
            if own_before != own_after:
                changes.append(StepChange(id=step_id, kind=kind, change="changed"))
            elif before.get("hash") != after.get("hash"):
                changes.append(StepChange(id=step_id, kind=kind, change="rehashed"))
    return changes


Measures = dict[tuple[str, str], tuple[float | None, Unit]]


def _arm_values(stats: GroupStats) -> Iterator[tuple[str, float | None, Unit]]:
    yield "n", float(stats.n), "count"
    if not stats.levels:  # a numeric field: categorical arms always list their levels
        yield "mean", stats.mean, "number"
    for share in stats.levels:
        yield f"share {share.level}", share.share, "share"


def _effect(effect: Effect) -> tuple[float | None, Unit]:
    return effect.value, "points" if effect.name == "proportion_difference" else "number"


def _compare_items(result: CompareResult) -> dict[str, Measures]:
    values: Measures = {
        (arm.group, measure): (value, unit)
        for arm in result.arms
        for measure, value, unit in _arm_values(arm)
    }
    effects: Measures = {("all arms", e.title): _effect(e) for e in result.effects}
    p_values: Measures = {
        ("all arms", f"{t.label} p (Holm)"): (t.p_adjusted, "p") for t in result.tests
    }
    for pair in result.pairs:
        label = f"{pair.arm} vs {pair.reference}"
        effects.update({(label, e.title): _effect(e) for e in pair.effects})
        p_values.update({(label, f"{t.label} p (Holm)"): (t.p_adjusted, "p") for t in pair.tests})
    return {"values": values, "effects": effects, "p_values": p_values}


def _paired(a: Measures, b: Measures) -> list[ValueChange]:
    keys = [*a, *(k for k in b if k not in a)]
    return [
        ValueChange(
            item=key[0],
            measure=key[1],
            unit=(a.get(key) or b[key])[1],
            a=a[key][0] if key in a else None,
            b=b[key][0] if key in b else None,
        )
        for key in keys
    ]


def _keyed(statements: list[str]) -> list[str]:
    """Statement texts made unique (a scenario may repeat a statement)."""
    seen: dict[str, int] = {}
    keys = []
    for statement in statements:
        seen[statement] = seen.get(statement, 0) + 1
        keys.append(statement if seen[statement] == 1 else f"{statement} #{seen[statement]}")
    return keys


def _result_diffs(a: AnalysisResult | None, b: AnalysisResult | None) -> list[ResultDiff]:
    empty: dict[str, Measures] = {"values": {}, "effects": {}, "p_values": {}}
    old: dict[str, tuple[dict[str, Measures], str]] = {}
    new: dict[str, tuple[dict[str, Measures], str]] = {}
    for analysis, into in ((a, old), (b, new)):
        if analysis is None:
            continue
        compares = analysis.compares
        for key, result in zip(_keyed([c.statement for c in compares]), compares, strict=True):
            into[key] = (_compare_items(result), result.conclusion)
        funnels = analysis.funnels
        for key, funnel in zip(_keyed([f.statement for f in funnels]), funnels, strict=True):
            stages: Measures = {
                (stage.field, "share of all"): (stage.share_of_all, "share")
                for stage in funnel.stages
            }
            into[key] = ({"values": stages, "effects": {}, "p_values": {}}, "")
    diffs = []
    for key in [*old, *(k for k in new if k not in old)]:
        before, conclusion_a = old.get(key, (empty, ""))
        after, conclusion_b = new.get(key, (empty, ""))
        presence: Literal["both", "only_a", "only_b"] = (
            "both" if key in old and key in new else ("only_a" if key in old else "only_b")
        )
        diffs.append(
            ResultDiff(
                statement=key,
                presence=presence,
                values=_paired(before["values"], after["values"]),
                effects=_paired(before["effects"], after["effects"]),
                p_values=_paired(before["p_values"], after["p_values"]),
                conclusion_a=conclusion_a,
                conclusion_b=conclusion_b,
            )
        )
    return diffs


def _expectation_changes(
    a: AnalysisResult | None, b: AnalysisResult | None
) -> list[ExpectationChange]:
    old = {e.statement: e for e in (a.expectations if a else [])}
    new = {e.statement: e for e in (b.expectations if b else [])}
    changes = []
    for statement in [*old, *(s for s in new if s not in old)]:
        before, after = old.get(statement), new.get(statement)
        either = after or before
        changes.append(
            ExpectationChange(
                statement=statement,
                unit="share" if either is not None and either.aggregate == "share" else "number",
                passed_a=before.passed if before else None,
                passed_b=after.passed if after else None,
                observed_a=before.observed if before else None,
                observed_b=after.observed if after else None,
            )
        )
    return changes


def _setup(run: RunData) -> dict[str, Any]:
    """The plan's settings and, as `param NAME`, its params' values (`--set`)."""
    params = run.plan.get("params")
    named = {f"param {k}": v for k, v in params.items()} if isinstance(params, dict) else {}
    return {**run.settings, **named}


def _manifest_fields(run: RunData) -> dict[str, Any]:
    return run.manifest.model_dump(mode="json") if run.manifest else {}


def build_diff(run_a: Path, run_b: Path) -> RunDiff:
    a, b = load_run(run_a), load_run(run_b)
    problems = [f"A: {p}" for p in a.problems] + [f"B: {p}" for p in b.problems]
    run_keys = [key for key, _ in _RUN_KEYS]
    return RunDiff(
        run_a=str(run_a),
        run_b=str(run_b),
        problems=problems,
        settings=_changes(_setup(a), _setup(b)),
        run=_changes(_manifest_fields(a), _manifest_fields(b), run_keys),
        steps=_step_changes(a, b),
        results=_result_diffs(a.analysis, b.analysis),
        expectations=_expectation_changes(a.analysis, b.analysis),
    )


def diff_runs(run_a: Path, run_b: Path) -> str:
    """Human-readable differences between two run directories."""
    return build_diff(run_a, run_b).to_text()


def diff_runs_json(run_a: Path, run_b: Path) -> str:
    """The same differences as JSON, for tools."""
    return build_diff(run_a, run_b).to_json()


# ---------------------------------------------------------------- rendering


def _show(value: Any) -> str:
    """A setting or run figure as written: `0.7`, `gpt-4o-mini`, `embedded/SmolLM2`."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return text.plain(value)
    if isinstance(value, list):
        return ", ".join(_show(item) for item in value) or "-"
    if isinstance(value, dict):
        return "/".join(str(v) for v in value.values())
    return str(value)


def _figure(value: float | None, unit: Unit) -> str:
    if value is None:
        return "-"
    if unit == "count":
        return str(round(value))
    if unit == "share":
        return text.percent(value)
    if unit == "points":
        return text.points(value)
    if unit == "p":
        return text.p_value(value)
    return text.number(value)


def _delta(change: ValueChange) -> str:
    delta = change.delta
    if delta is None:
        return ""
    if abs(delta) < 1e-12:
        return "(no change)"
    if change.unit in ("share", "points"):
        return f"({text.points(delta)})"
    if change.unit == "count":
        return f"({round(delta):+d})"
    return f"({delta:+.3f})" if change.unit == "p" else f"({delta:+.2f})"


def _value_lines(title: str, changes: list[ValueChange]) -> list[str]:
    if not changes:
        return []
    width = max(len(c.item) for c in changes)
    measure = max(len(c.measure) for c in changes)
    lines = [f"    {title}:"]
    for c in changes:
        lines.append(
            f"      {c.item:<{width}}  {c.measure:<{measure}}  "
            f"{_figure(c.a, c.unit):>7} -> {_figure(c.b, c.unit):<7} {_delta(c)}".rstrip()
        )
    return lines


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def _text_lines(diff: RunDiff) -> list[str]:
    lines = [f"A: {diff.run_a}", f"B: {diff.run_b}", ""]
    if diff.problems:
        lines += ["Problems", *(f"  {p}" for p in diff.problems), ""]
    lines.append("Settings")
    lines += [f"  {c.key}: {_show(c.a)} -> {_show(c.b)}" for c in diff.settings] or [
        "  (no changes)"
    ]
    lines += ["", "Run"]
    labels = dict(_RUN_KEYS)
    lines += [f"  {labels.get(c.key, c.key)}: {_show(c.a)} -> {_show(c.b)}" for c in diff.run] or [
        "  (no changes)"
    ]
    lines += ["", "Plan steps"]
    marks = {"added": "+", "removed": "-", "changed": "~"}
    own = [s for s in diff.steps if s.change != "rehashed"]
    lines += [f"  {marks[s.change]} {s.change:<8} {s.id} ({s.kind})" for s in own]
    rehashed = [s for s in diff.steps if s.change == "rehashed"]
    if rehashed:
        lines.append(
            f"  = {len(rehashed)} step(s) unchanged themselves but rehashed by an earlier change: "
            + ", ".join(s.id for s in rehashed)
        )
    if not diff.steps:
        lines.append("  (no changes)")
    lines += ["", "Results"]
    for result in diff.results:
        where = {"only_a": " (only in A)", "only_b": " (only in B)"}.get(result.presence, "")
        lines.append(f"  {result.statement}{where}")
        lines += _value_lines("values", result.values)
        lines += _value_lines("effect sizes", result.effects)
        lines += _value_lines("p-values (Holm-adjusted)", result.p_values)
        if result.conclusion_a != result.conclusion_b:
            lines += [
                f"    A: {result.conclusion_a or '-'}",
                f"    B: {result.conclusion_b or '-'}",
            ]
    if not diff.results:
        lines.append("  (no compare or funnel statements)")
    lines += ["", "Expectations"]
    for e in diff.expectations:
        lines.append(
            f"  {_verdict(e.passed_a)} -> {_verdict(e.passed_b)}  {e.statement}  "
            f"(observed {_figure(e.observed_a, e.unit)} -> {_figure(e.observed_b, e.unit)})"
        )
    if not diff.expectations:
        lines.append("  (none)")
    return lines
