"""Reports and run diffs, from run directories built by hand (no model calls)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, PNG_SIGNATURE, console_errors, render
from tests.origins import origin_at
from tiny_dsl.analysis import AnalysisResult, analyze_plan
from tiny_dsl.plan.model import (
    AgentPlan,
    AnalysisPlan,
    AnalyzeStep,
    AskStep,
    CheckpointStep,
    DeliverStep,
    Delivery,
    Estimate,
    ExtractStep,
    FieldPlan,
    InterventionPlan,
    OutputPlan,
    Plan,
    PlanSettings,
    PopulationPlan,
    Step,
    VariantPlan,
    WaitStep,
    WorldPlan,
)
from tiny_dsl.reporting import build_diff, diff_runs, diff_runs_json, load_run
from tiny_dsl.session import Session

SEGMENTS = ["young_professionals", "families", "general"]
ARM_CYCLE = [
    "emotional",
    "rational",
    "control",
    "emotional",
    "rational",
    "emotional",
    "rational",
    "control",
]
INTENT_BASE = {"emotional": 6.5, "rational": 6.0, "control": 4.5}
FIELDS = [
    FieldPlan(name="purchase_intent", kind="int", low=1, high=10, description="1 to 10"),
    FieldPlan(name="opened", kind="bool"),
    FieldPlan(name="clicked", kind="bool"),
    FieldPlan(name="main_concern", kind="text"),
    FieldPlan(name="sentiment", kind="enum", members=["positive", "neutral", "negative"]),
]
CONCERNS = ["price", "Price", "side effects", "does it work", "taste"]


def _analysis(kind: str, text: str, **kwargs: Any) -> AnalysisPlan:
    return AnalysisPlan(kind=kind, origin=origin_at("email_ab.tts:60:3"), text=text, **kwargs)  # type: ignore[arg-type]


ANALYSES = [
    _analysis(
        "compare",
        "compare purchase_intent by email_campaign",
        field="purchase_intent",
        by="email_campaign",
    ),
    _analysis("compare", "compare opened by email_campaign", field="opened", by="email_campaign"),
    _analysis(
        "summarize", "summarize purchase_intent by segment", field="purchase_intent", by="segment"
    ),
    _analysis("summarize", "summarize main_concern by variant", field="main_concern", by="variant"),
    _analysis("funnel", "funnel opened, clicked", fields=["opened", "clicked"]),
    _analysis(
        "expect",
        "expect mean(purchase_intent) between 1 and 10",
        aggregate="mean",
        field="purchase_intent",
        comparator="between",
        low=1,
        high=10,
    ),
    _analysis(
        "expect",
        "expect share(opened) > 90%",
        aggregate="share",
        field="opened",
        comparator=">",
        bound=0.9,
    ),
]


def _chain(steps: list[Step]) -> list[Step]:
    """Chained hashes, as the compiler makes them: step k covers steps 1..k."""
    chained: list[Step] = []
    digest = ""
    for step in steps:
        body = step.model_dump_json(exclude={"hash"})
        digest = hashlib.sha256((digest + body).encode()).hexdigest()
        chained.append(step.model_copy(update={"hash": digest}))
    return chained


def make_run(
    run_dir: Path,
    *,
    shift: float = 0.0,
    temperature: float = 0.7,
    question: str = "Would you buy VitaBoost in the next month? Rate it from 1 to 10.",
    extra_step: bool = False,
    provider: str = "embedded",
    model: str = "SmolLM2-135M-Instruct",
) -> Path:
    """A complete run directory for the email A/B scenario: 24 agents, 2 variants + control."""
    rng = random.Random(42)
    agents: list[AgentPlan] = []
    rows: list[dict[str, Any]] = []
    assignment: dict[str, str] = {}
    for index in range(24):
        segment = SEGMENTS[index // 8]
        agent_id = f"consumers/{index:03d}"
        arm = ARM_CYCLE[index % 8]
        assignment[agent_id] = arm
        age = 25 + (index * 7) % 40
        persona = {
            "age": age,
            "gender": ["female", "male"][index % 2],
            "occupation": ["nurse", "engineer", "teacher", "designer"][index % 4],
            "residence": ["Austin, TX", "Chicago, IL", "Denver, CO"][index % 3],
        }
        agents.append(
            AgentPlan(
                id=agent_id,
                kind="member",
                population="consumers",
                segment=segment,
                index=index,
                attributes=persona,
            )
        )
        intent: int | None = max(1, min(10, round(INTENT_BASE[arm] + shift + rng.gauss(0, 2.0))))
        missing = {}
        if index == 5:
            intent, missing = None, {"purchase_intent": "no number in the answer"}
        opened = rng.random() < {"emotional": 0.8, "rational": 0.7, "control": 0.4}[arm]
        rows.append(
            {
                "agent": agent_id,
                "name": f"Person {index}",
                "world": "inbox",
                "population": "consumers",
                "segment": segment,
                "variant_email_campaign": arm,
                "variant": arm,
                **{f"persona_{key}": value for key, value in persona.items()},
                "purchase_intent": intent,
                "opened": opened,
                "clicked": opened and rng.random() < 0.5,
                "main_concern": CONCERNS[rng.randrange(len(CONCERNS))],
                "sentiment": rng.choice(["positive", "neutral", "negative"]),
                "_missing": missing,
            }
        )
    variants = [
        VariantPlan(
            name="emotional", content="Feel the energy again with VitaBoost.", timing="morning"
        ),
        VariantPlan(
            name="rational", content="Clinical studies show 89% improvement.", timing="afternoon"
        ),
    ]
    intervention = InterventionPlan(
        name="email_campaign",
        channel="email",
        control=0.2,
        assign="stratified",
        variants=variants,
        targets=["consumers"],
        assignment=assignment,
    )
    ids = [agent.id for agent in agents]
    treated = [a for a in ids if assignment[a] != "control"]
    steps: list[Step] = [
        DeliverStep(
            id="001-deliver-email_campaign",
            origin=origin_at("email_ab.tts:52:3"),
            intervention="email_campaign",
            world="inbox",
            control=[a for a in ids if assignment[a] == "control"],
            deliveries=[
                Delivery(agent=a, variant=assignment[a], content="...", channel="email", time=None)
                for a in treated
            ],
        ),
        WaitStep(id="002-wait", origin=origin_at("email_ab.tts:53:3"), seconds=86400, text="1 day"),
        CheckpointStep(
            id="003-checkpoint-after_campaign",
            origin=origin_at("email_ab.tts:54:3"),
            name="after_campaign",
        ),
        AskStep(
            id="004-ask-inbox",
            origin=origin_at("email_ab.tts:55:3"),
            world="inbox",
            question=question,
            agents=ids,
            calls=24,
        ),
        ExtractStep(
            id="005-extract-inbox",
            origin=origin_at("email_ab.tts:58:1"),
            world="inbox",
            agents=ids,
            fields=FIELDS,
        ),
        AnalyzeStep(id="006-analyze", origin=origin_at("email_ab.tts:65:1"), analyses=ANALYSES),
    ]
    if extra_step:
        steps.insert(
            3,
            WaitStep(
                id="003b-wait", origin=origin_at("email_ab.tts:55:3"), seconds=3600, text="1 hour"
            ),
        )
    steps = _chain(steps)
    plan = Plan(
        tiny_dsl_version="0.1.0",
        source_file="scenarios/email_ab.tts",
        source_hash="0" * 64,
        settings=PlanSettings(
            scenario="email_campaign_ab",
            title="Email campaign A/B test",
            seed=42,
            model="gpt-4o-mini",
            provider=None,
            temperature=temperature,
            budget_usd=5.0,
            max_concurrency=4,
            max_calls=None,
            engine="builtin",
        ),
        agents=agents,
        populations=[
            PopulationPlan(
                name="consumers",
                demographics="usa",
                demographics_description="US adults",
                size=24,
                segments={s: 8 for s in SEGMENTS},
                members=ids,
            )
        ],
        worlds=[
            WorldPlan(
                name="inbox",
                mode="survey",
                agents=ids,
                moderator=None,
                context="",
                start="2025-03-03T08:00",
            )
        ],
        interventions=[intervention],
        steps=steps,
        output=OutputPlan(formats=["csv", "json", "html"], dir="outputs/email_campaign_ab"),
        estimate=Estimate(
            calls=48,
            input_tokens=20000,
            output_tokens=4000,
            cost_usd=0.01,
            model="gpt-4o-mini",
            priced=True,
        ),
        plan_hash=steps[-1].hash,
    )
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(plan.model_dump_json(indent=2))
    (run_dir / "results.json").write_text(json.dumps(rows, indent=2))
    (run_dir / "analysis.json").write_text(analyze_plan(plan, rows).to_json())
    transcript: list[dict[str, Any]] = []
    for row in rows:
        agent, arm = row["agent"], row["variant"]
        if arm != "control":
            transcript.append(
                {
                    "step": steps[0].id,
                    "world": "inbox",
                    "agent": agent,
                    "agent_name": row["name"],
                    "kind": "stimulus",
                    "type": "email",
                    "content": f"[{arm}] VitaBoost email",
                    "source": "email_campaign",
                    "target": agent,
                    "time": "2025-03-03T09:00",
                }
            )
        transcript.append(
            {
                "step": "004-ask-inbox",
                "world": "inbox",
                "agent": agent,
                "agent_name": row["name"],
                "kind": "action",
                "type": "TALK",
                "content": (
                    f"I'd say {row['purchase_intent']}. My main worry is {row['main_concern']}."
                ),
                "source": agent,
                "target": None,
                "time": "2025-03-04T08:00",
            }
        )
    with (run_dir / "transcript.jsonl").open("w") as stream:
        for seq, record in enumerate(transcript):
            stream.write(json.dumps({"seq": seq, **record}) + "\n")
    manifest = {
        "tiny_dsl_version": "0.1.0",
        "run_id": run_dir.name,
        "status": "ok",
        "exit_code": 0,
        "analysis": True,
        "scenario": "email_campaign_ab",
        "plan_hash": plan.plan_hash,
        "seed": 42,
        "provider": provider,
        "model": model,
        "answered_by": [{"provider": provider, "model": model}],
        "started": "2025-03-03T10:00:00Z",
        "finished": "2025-03-03T10:02:05Z",
        "duration_s": 125.0,
        "model_calls": 48,
        "cache_hits": 0,
        "input_tokens": 21034,
        "output_tokens": 3877,
        "cost_usd": 0.0,
        "steps": [
            {
                "id": s.id,
                "kind": s.kind,
                "label": s.kind,
                "origin": str(s.origin),
                "status": "executed",
                "seconds": 1.5,
            }
            for s in steps
        ],
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


# ------------------------------------------------------------------ reports


def report(run_dir: Path, formats: set[str] | None = None) -> list[Path]:
    """The reports of a run folder, as `tts report` writes them (both when `formats` is None)."""
    return Session().report(run_dir, formats or {"html", "md"})


def test_html_report_has_charts_tables_expectations_and_transcripts(run_dir: Path) -> None:
    written = report(run_dir)
    assert written == [run_dir / "report.html", run_dir / "report.md"]
    html = (run_dir / "report.html").read_text()
    # two compares, two summaries and a funnel, each with an inline SVG chart; a
    # histogram per group for the three of them on a number, bool or enum field, and
    # one per such field (four) in Distributions
    assert html.count("<svg") == 5 + 3 + 4
    assert html.count("answers per group") >= 7 and 'id="distributions"' in html
    assert "mean with 95% CI" in html and "share with 95% CI" in html
    assert "Welch&#39;s t-test" in html and "Holm p" in html and "Cohen&#39;s d" in html
    assert "One-way ANOVA" in html and "Chi-square test of independence" in html
    # expectations: one passes, one fails
    assert '<span class="badge pass">PASS</span>' in html
    assert '<span class="badge fail">FAIL</span>' in html
    assert "share(opened) = " in html and "&gt; 90% does not hold" in html
    # the embedded model is flagged loudly
    assert "Demo-quality answers" in html and "SmolLM2-135M-Instruct" in html
    # population table links to each agent's transcript section
    for index in range(24):
        anchor = f"agent-consumers-{index:03d}"
        assert f'href="#{anchor}"' in html
        assert f'id="{anchor}"' in html
    assert "My main worry is" in html and "[emotional] VitaBoost email" in html
    assert "Assignment: email_campaign" in html
    assert "missing: no number in the answer" in html
    # one self-contained file
    assert "<script" not in html and "<link" not in html and "src=" not in html
    # chart element ids are unique across the document
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_markdown_report_for_pull_requests(run_dir: Path) -> None:
    report(run_dir, {"md"})
    assert not (run_dir / "report.html").exists()
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# Email campaign A/B test\n")
    assert "**DEMO-QUALITY ANSWERS**" in md
    assert "**Expectations:** 1 passed, 1 failed" in md
    assert "| **FAIL** | expect share(opened) > 90% |" in md
    assert "### `compare purchase_intent by email_campaign`" in md
    assert "| Arm | n | Missing | Mean |" in md
    assert "| emotional vs control | Welch's t-test |" in md
    assert "| 1 | opened | " in md  # the funnel's first stage
    assert "<svg" not in md


def test_report_formats_follow_the_scenario_output(run_dir: Path) -> None:
    assert report(run_dir, {"csv", "json"}) == []
    assert report(run_dir, {"csv", "HTML"}) == [run_dir / "report.html"]


def test_reports_are_byte_stable(run_dir: Path) -> None:
    report(run_dir)
    first = (run_dir / "report.html").read_bytes(), (run_dir / "report.md").read_bytes()
    report(run_dir)
    assert ((run_dir / "report.html").read_bytes(), (run_dir / "report.md").read_bytes()) == first


def test_the_runs_notes_are_in_both_reports(run_dir: Path) -> None:
    note = "step 05-ask-inbox: 1 agent turn allowed 3 actions of at most 400 characters"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_text(json.dumps({**manifest, "notes": [note, "<b>x</b>"]}))
    report(run_dir, {"html", "md"})
    html = (run_dir / "report.html").read_text()
    assert f"<li>{note}</li>" in html and "<li>&lt;b&gt;x&lt;/b&gt;</li>" in html
    md = (run_dir / "report.md").read_text()
    assert f"Notes from the run:\n\n- {note}\n- <b>x</b>\n" in md


def test_capable_model_gets_no_demo_banner(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", provider="openai", model="gpt-4o-mini")
    report(run, {"html"})
    html = (run / "report.html").read_text()
    assert "Demo-quality" not in html
    assert "openai / gpt-4o-mini" in html


def test_the_analysis_is_recomputed_from_plan_and_results(run_dir: Path) -> None:
    expected = AnalysisResult.from_json((run_dir / "analysis.json").read_text())
    (run_dir / "analysis.json").unlink()
    run = load_run(run_dir)
    assert run.analysis == expected
    assert run.problems == []
    report(run_dir, {"md"})
    assert "analysis.json" not in (run_dir / "report.md").read_text()


def test_a_stored_analysis_is_never_reused_when_the_results_changed(run_dir: Path) -> None:
    # Regression: `tts report` showed the stored analysis.json of 24 agents next to
    # a population of 2 after results.json had changed.
    rows = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps(rows[:2]))
    report(run_dir, {"md"})
    md = (run_dir / "report.md").read_text()
    assert "| Agents | 2 |" in md
    analysis = load_run(run_dir).analysis
    assert analysis is not None and analysis.n_agents == 2
    assert analysis.compares and all(sum(arm.n for arm in c.arms) <= 2 for c in analysis.compares)


def test_a_damaged_or_empty_run_directory_still_gets_a_report(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    report(empty)
    html = (empty / "report.html").read_text()
    for name in ("manifest.json", "plan.json", "results.json", "transcript.jsonl"):
        assert f"{name} is missing" in html
    assert "Unknown model" in html

    damaged = make_run(tmp_path / "damaged")
    (damaged / "results.json").write_text("[{not json")
    with (damaged / "transcript.jsonl").open("a") as stream:
        stream.write("garbage\n")
    run = load_run(damaged)
    assert any(p.startswith("results.json could not be read") for p in run.problems)
    assert "transcript.jsonl: 1 unreadable line skipped" in run.problems
    report(damaged)
    assert "results.json could not be read" in (damaged / "report.md").read_text()


def test_results_jsonl_is_read_when_results_json_is_absent(run_dir: Path) -> None:
    rows = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").unlink()
    (run_dir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_run(run_dir).rows == rows


# ------------------------------------------------------------------ diff


def test_diff_shows_settings_steps_and_result_changes(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    b = make_run(
        tmp_path / "b",
        shift=1.5,
        temperature=0.9,
        question="How likely are you to buy VitaBoost, from 1 to 10?",
        extra_step=True,
        provider="openai",
        model="gpt-4o-mini",
    )
    diff = build_diff(a, b)
    assert [(c.key, c.a, c.b) for c in diff.settings] == [("temperature", 0.7, 0.9)]
    assert {c.key for c in diff.run} >= {"provider", "model", "answered_by"}
    changes = {s.id: s.change for s in diff.steps}
    assert changes["003b-wait"] == "added"
    assert changes["004-ask-inbox"] == "changed"
    assert changes["005-extract-inbox"] == "rehashed"
    assert "001-deliver-email_campaign" not in changes

    intent = next(r for r in diff.results if r.statement.startswith("compare purchase_intent"))
    assert intent.presence == "both"
    means = {v.item: v for v in intent.values if v.measure == "mean"}
    old = AnalysisResult.from_json((a / "analysis.json").read_text()).compares[0]
    new = AnalysisResult.from_json((b / "analysis.json").read_text()).compares[0]
    assert means["control"].a == old.arms[2].mean and means["control"].b == new.arms[2].mean
    cohen = next(
        e for e in intent.effects if e.item == "emotional vs control" and e.measure == "Cohen's d"
    )
    assert cohen.a == old.pairs[0].effects[1].value
    assert cohen.delta == pytest.approx(
        (new.pairs[0].effects[1].value or 0) - (old.pairs[0].effects[1].value or 0)
    )
    assert any(p.measure == "Welch's t-test p (Holm)" for p in intent.p_values)

    text = diff_runs(a, b)
    assert "temperature: 0.7 -> 0.9" in text
    assert "+ added    003b-wait (wait)" in text
    assert "~ changed  004-ask-inbox (ask)" in text
    assert "rehashed by an earlier change: 005-extract-inbox, 006-analyze" in text
    assert "Cohen's d" in text and "emotional vs control" in text
    assert "funnel opened, clicked" in text
    data = json.loads(diff_runs_json(a, b))
    assert data["settings"][0] == {"key": "temperature", "a": 0.7, "b": 0.9}
    assert "delta" in data["results"][0]["effects"][0]


def test_diff_of_a_run_with_itself_is_empty(run_dir: Path) -> None:
    diff = build_diff(run_dir, run_dir)
    assert diff.settings == diff.run == diff.steps == []
    assert all(v.delta in (0, None) for r in diff.results for v in r.values + r.effects)
    assert "(no changes)" in diff.to_text()


# ------------------------------------------------------------------ headless browser


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the Debian package `chromium`")
def test_report_renders_in_headless_chromium(run_dir: Path) -> None:
    report(run_dir, {"html"})
    screenshot, dom, log = render(run_dir / "report.html", "report-fixture.png")
    assert screenshot.read_bytes()[:8] == PNG_SIGNATURE
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    assert console_errors(log) == []
    assert dom.count("<svg") == 5 + 3 + 4  # as in the HTML: nothing dropped by the browser
    assert 'id="verdicts"' in dom and 'id="distributions"' in dom
    assert dom.count("<path") > 20  # the charts' marks made it into the rendered DOM
    assert 'id="agent-consumers-023"' in dom


def test_one_test_is_one_test(run_dir: Path) -> None:
    # Regression: "Holm-adjusted over 1 tests".
    from tiny_dsl.reporting import build_view

    run = load_run(run_dir)
    assert run.analysis is not None
    run.analysis.adjustment.family_size = 1
    assert build_view(run).adjustment.startswith("P-values are Holm-adjusted over 1 test (")
