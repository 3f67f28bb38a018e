"""Answer-quality checks: the flags themselves, and where a run reports them."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.test_external_agents import ENGINES, _keep_only_the_record
from tests.test_tinytroupe_engine import HashProvider
from tiny_dsl.plan.model import FieldPlan
from tiny_dsl.runtime.providers.base import ChatRequest, ChatResponse
from tiny_dsl.runtime.quality import answer_flags, turn_flags
from tiny_dsl.session import RunOptions, Session


@pytest.mark.parametrize(
    ("said", "heard", "previous", "flags"),
    [
        ([], ["Hello"], None, ["empty"]),
        (["   "], [], None, ["empty"]),
        (["I would buy it, the price is fair."], ["Would you buy it?"], None, []),
        # Said back, with a framing of its own: still mostly what it heard.
        (
            ["You set yourself a goal: BREAKING: The Fed raises interest rates."],
            ["BREAKING: The Fed raises interest rates. Ask the assistant what to do."],
            None,
            ["echo"],
        ),
        (["Welcome to the panel!"], ["Welcome to the panel, everyone."], None, ["echo"]),
        (["short text"], [], None, ["placeholder"]),
        (["<your message here>"], [], None, ["placeholder"]),
        (["I like it."], [], "I like it!", ["repeat"]),
        (["I like it."], [], "The colour is odd.", []),
        # A line of the previous turn said again, or the same line twice in one turn.
        (["Hello there.", "I like it."], [], "The colour is odd.\nI like it!", ["repeat"]),
        (["I like the colour.", "I like the colour!"], [], None, ["repeat"]),
        # What the prompt shows, copied: a time stamp, or only someone's name.
        (["2025-01-01 09:00"], [], None, ["placeholder"]),
        (["Mia Okafor"], [], None, ["placeholder"]),
        # Said back a line heard a while ago, among other things heard since.
        (
            ["Welcome! Please introduce yourselves."],
            ["Welcome! Please introduce yourselves.", "I am Tom.", "I am Lisa."],
            None,
            ["echo"],
        ),
    ],
)
def test_turn_flags(
    said: list[str], heard: list[str], previous: str | None, flags: list[str]
) -> None:
    assert turn_flags(said, heard, previous, ["Mia Okafor", "Tom Hill"]) == flags


def test_answer_flags_cover_text_and_lists_only() -> None:
    post = FieldPlan(name="post", kind="text", description="A short social media post")
    assert answer_flags("", post) == ["empty"]
    assert answer_flags("short text", post) == ["placeholder"]
    assert answer_flags("A short social media post", post) == ["placeholder"]
    assert answer_flags("Rates up again, I'm holding.", post) == []
    assert answer_flags(None, post) == []  # missing, counted as missing
    ideas = FieldPlan(name="ideas", kind="list")
    assert answer_flags(["", " "], ideas) == ["empty"]
    assert answer_flags(["...", "a real idea"], ideas) == ["placeholder"]
    score = FieldPlan(name="score", kind="int", low=1, high=5)
    assert answer_flags(3, score) == []


SCENARIO = """\
scenario weak_answers {
  title "Weak answers"
  seed 2
}

persona ann {
  name "Ann Lee"
  age 30
  occupation "Nurse"
}

persona bob {
  name "Bob Stone"
  age 40
  occupation "Baker"
}

timeline {
  tell ann, bob "What do you think of the new phone?"
  tell ann, bob "And of its price?"
}

extract from ann, bob {
  opinion text "The person's opinion of the phone"
}

output {
  formats [json, messages, md]
}
"""


class PlaceholderProvider(HashProvider):
    """Every turn says the schema's placeholder; every extracted text is one too."""

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await super().complete(request)
        properties = (request.json_schema or {}).get("properties", {})
        if "actions" in properties:  # an agent's turn, on either engine
            data: dict[str, Any] = dict(response.data)
            action = dict(data["actions"][0]) if data["actions"] else {}
            action.update(type="TALK", content="short text")
            data["actions"] = [action]
        elif request.schema_name == "extraction":
            data = {**response.data, "opinion": "short text"}
        else:
            return response
        return dataclasses.replace(response, data=data, text=json.dumps(data))


@pytest.mark.parametrize("engine", ENGINES)
def test_flags_are_counted_per_step_and_marked_in_results_messages_and_report(
    tmp_path: Path, engine: str
) -> None:
    path = tmp_path / "weak.tts"
    path.write_text(SCENARIO, encoding="utf-8")
    session = Session(
        root=tmp_path,
        state_dir=tmp_path / ".tts",
        provider_factory=lambda plan, options: PlaceholderProvider(),
    )
    options = RunOptions(engine=engine, quiet=True, output_dir=tmp_path / "outputs")
    outcome = session.run(path, options)
    assert outcome.exit_code == 0, outcome.diagnostics
    manifest, run_dir = outcome.manifest, outcome.run_dir
    assert manifest is not None and run_dir is not None
    first, second, extract = (record.quality for record in manifest.steps)
    assert first is not None and second is not None and extract is not None
    assert (first.turns, first.turns_flagged, first.flags) == (2, 2, {"placeholder": 2})
    # The second turn says the same again: a repeat too. TinyTroupe refuses an action
    # that repeats the last one, so there the turn ends having said nothing.
    repeated = {"placeholder": 2, "repeat": 2} if engine == "builtin" else {"empty": 2}
    assert (second.turns, second.flags) == (2, repeated)
    assert (extract.answers, extract.answers_flagged, extract.flags) == (2, 2, {"placeholder": 2})
    assert manifest.quality.turns == 4 and manifest.quality.answers == 2
    rows = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert [row["_quality"] for row in rows] == [{"opinion": ["placeholder"]}] * 2
    messages = [
        json.loads(line)
        for line in (run_dir / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    flags = ["placeholder"] * 2 + (["placeholder,repeat"] * 2 if engine == "builtin" else [])
    assert [row["quality"] for row in messages] == flags
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    shown = ", ".join(f"{flag} {n}" for flag, n in sorted(repeated.items()))
    assert f"2 of 2 turns flagged ({shown})" in report
    assert "2 of 2 answers flagged (placeholder 2)" in report


class FirstTryPlaceholderProvider(HashProvider):
    """Every turn's first answer is the schema's placeholder; asked again (the same
    prompt under another seed), it answers properly."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await super().complete(request)
        properties = (request.json_schema or {}).get("properties", {})
        if "actions" not in properties:  # not an agent's turn (on either engine)
            return response
        prompt = json.dumps([[m.role, m.content] for m in request.messages])
        if prompt in self.asked:
            return response
        self.asked.add(prompt)
        data: dict[str, Any] = dict(response.data)
        data["actions"] = [{**data["actions"][0], "type": "TALK", "content": "short text"}]
        return dataclasses.replace(response, data=data, text=json.dumps(data))


@pytest.mark.parametrize("engine", ENGINES)
def test_regenerate_asks_a_flagged_turn_again_with_another_seed(
    tmp_path: Path, engine: str
) -> None:
    path = tmp_path / "weak.tts"
    path.write_text(
        SCENARIO.replace("  seed 2\n", "  seed 2\n  quality { regenerate 2 }\n"), encoding="utf-8"
    )
    provider = FirstTryPlaceholderProvider()
    session = Session(
        root=tmp_path, state_dir=tmp_path / ".tts", provider_factory=lambda plan, o: provider
    )
    options = RunOptions(engine=engine, quiet=True, output_dir=tmp_path / "outputs")
    outcome = session.run(path, options)
    assert outcome.exit_code == 0, outcome.diagnostics
    manifest = outcome.manifest
    assert manifest is not None
    # Every placeholder was asked again, and none is left.
    assert manifest.quality.flags.get("placeholder", 0) == 0
    # A re-ask is the same prompt under a seed of its own.
    seeds: dict[str, set[int]] = {}
    for request in provider.requests:
        prompt = json.dumps([[m.role, m.content] for m in request.messages])
        seeds.setdefault(prompt, set()).add(request.seed)
    asked_twice = [found for found in seeds.values() if len(found) > 1]
    notes = [note for note in manifest.notes if "asked again" in note]
    asked_again = sum(int(re.search(r"(\d+) flagged", note)[1]) for note in notes)
    assert asked_again == len(asked_twice) >= 4  # at least the four `tell` turns
    assert all(note.endswith("0 still flagged after the last attempt") for note in notes)
    assert manifest.model_calls == len(provider.requests)
    # Replayed from the record alone, re-asks included: the same results, no call.
    _keep_only_the_record(tmp_path / ".tts")
    replay = RunOptions(engine=engine, quiet=True, mode="replay", output_dir=tmp_path / "again")
    again = session.run(path, replay)
    assert again.exit_code == 0, again.diagnostics
    assert again.manifest is not None and again.manifest.model_calls == 0
    assert again.rows == outcome.rows


class JudgingProvider(HashProvider):
    """A turn of Ann's is judged not fluent (3); every other score is 8."""

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await super().complete(request)
        if request.schema_name != "turn_judgment":
            return response
        ann = "The person: Ann Lee." in request.messages[1].content
        data = {
            name: {"reason": "because", "score": 3 if ann and name == "fluency" else 8}
            for name in request.json_schema["properties"]  # type: ignore[index]
        }
        return dataclasses.replace(response, data=data, text=json.dumps(data))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_judge_scores_every_turn_flags_low_ones_and_keeps_its_scores(
    tmp_path: Path, engine: str
) -> None:
    path = tmp_path / "judged.tts"
    judge = "  quality {\n    judge [persona_adherence, fluency]\n    threshold 5\n  }\n"
    path.write_text(SCENARIO.replace("  seed 2\n", "  seed 2\n" + judge), encoding="utf-8")
    provider = JudgingProvider()
    session = Session(
        root=tmp_path, state_dir=tmp_path / ".tts", provider_factory=lambda plan, o: provider
    )
    planned = session.plan(path, RunOptions(engine=engine))
    assert planned.plan is not None
    # One judge call per agent turn, counted in the step (4 turns: 2 tells x 2 people).
    assert [step.judge_calls for step in planned.plan.steps] == [2, 2, 0]
    options = RunOptions(engine=engine, quiet=True, output_dir=tmp_path / "outputs")
    outcome = session.run(path, options)
    assert outcome.exit_code == 0, outcome.diagnostics
    manifest, run_dir = outcome.manifest, outcome.run_dir
    assert manifest is not None and run_dir is not None
    judged = [r for r in provider.requests if r.schema_name == "turn_judgment"]
    assert len(judged) == 4
    # The judge sees the persona, what the agent heard and its turn; it does not sample.
    assert all(r.temperature == 0 for r in judged)
    assert any("What do you think of the new phone?" in r.messages[1].content for r in judged)
    first = manifest.steps[0].quality
    assert first is not None and first.judged == 2
    assert first.scores == {"persona_adherence": 8.0, "fluency": 5.5}
    assert first.flags.get("low_fluency") == 1
    assert manifest.quality.judged == 4 and manifest.quality.flags.get("low_fluency") == 2
    messages = [
        json.loads(line)
        for line in (run_dir / "messages.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    by_speaker = {(row["name"], "low_fluency" in row["quality"]) for row in messages}
    assert by_speaker == {("Ann Lee", True), ("Bob Stone", False)}
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "persona_adherence 8.0, fluency 5.5 (2 turns)" in report
    # Run again: every step is restored from its checkpoint, scores included.
    again = session.run(path, RunOptions(engine=engine, quiet=True, output_dir=tmp_path / "b"))
    assert again.manifest is not None and again.manifest.model_calls == 0
    assert again.manifest.quality == manifest.quality
    # Replayed from the record alone: the judge's answers are in it too.
    _keep_only_the_record(tmp_path / ".tts")
    replay = RunOptions(engine=engine, quiet=True, mode="replay", output_dir=tmp_path / "c")
    replayed = session.run(path, replay)
    assert replayed.exit_code == 0, replayed.diagnostics
    assert replayed.manifest is not None and replayed.manifest.quality == manifest.quality


@pytest.mark.model
@pytest.mark.parametrize("engine", ENGINES)
def test_the_judge_runs_on_the_embedded_model(tmp_path: Path, engine: str) -> None:
    """Whatever the small model thinks of a turn, its judgment is a valid score per
    criterion, and a run with a judge is as replayable as one without."""
    path = tmp_path / "judged.tts"
    text = SCENARIO.replace("  seed 2\n", "  seed 2\n  quality { judge [fluency, suitability] }\n")
    text = text.replace('  tell ann, bob "And of its price?"\n', "")
    text = text.replace("tell ann, bob", "tell ann").replace("from ann, bob", "from ann")
    path.write_text(text, encoding="utf-8")
    session = Session(root=tmp_path, state_dir=tmp_path / ".tts")
    options = RunOptions(engine=engine, quiet=True, output_dir=tmp_path / "outputs")
    outcome = session.run(path, options)
    assert outcome.exit_code == 0, outcome.diagnostics
    assert outcome.manifest is not None
    quality = outcome.manifest.quality
    assert quality.judged == 1 and set(quality.scores) == {"fluency", "suitability"}
    assert all(0 <= score <= 9 for score in quality.scores.values())
    _keep_only_the_record(tmp_path / ".tts")
    replay = RunOptions(engine=engine, quiet=True, mode="replay", output_dir=tmp_path / "again")
    again = session.run(path, replay)
    assert again.manifest is not None and again.manifest.model_calls == 0
    assert again.manifest.quality == quality
