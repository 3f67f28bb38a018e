"""Extraction: field schemas, re-validation of answers, missing values with reasons, rows."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.origins import ORIGIN
from tests.test_runtime import scripted_client, sent
from tiny_dsl.extraction import (
    build_row,
    extraction_schema,
    result_columns,
    validate_answer,
    validate_value,
)
from tiny_dsl.extraction.schema import (
    LIST_ITEM_MAX_CHARS,
    LIST_MAX_ITEMS,
    TEXT_MAX_CHARS,
    max_answer_tokens,
)
from tiny_dsl.plan.model import AgentPlan, ExtractStep, FieldPlan, InterventionPlan
from tiny_dsl.runtime.engines.core import TranscriptEvent
from tiny_dsl.runtime.engines.extraction import extract_row
from tiny_dsl.runtime.providers.base import ChatRequest, InvalidOutput, validate_json

SCORE = FieldPlan(name="score", kind="int", low=1, high=10)
RATIO = FieldPlan(name="ratio", kind="float", low=-1, high=1)
OPENED = FieldPlan(name="opened", kind="bool")
MOOD = FieldPlan(name="mood", kind="enum", members=["positive", "neutral", "negative"])
NOTE = FieldPlan(name="note", kind="text", description="A note")
THEMES = FieldPlan(name="themes", kind="list")
FIELDS = [SCORE, RATIO, OPENED, MOOD, NOTE, THEMES]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (SCORE, 7, 7),
        (SCORE, 7.0, 7),
        (SCORE, "7", 7),
        (SCORE, 1, 1),
        (SCORE, 10, 10),
        (RATIO, -1, -1.0),
        (RATIO, "0.25", 0.25),
        (OPENED, True, True),
        (OPENED, "false", False),
        (MOOD, "neutral", "neutral"),
        (NOTE, "  too pricey ", "too pricey"),
        (THEMES, ["price", " ", "taste"], ["price", "taste"]),
        (THEMES, [], []),
    ],
)
def test_valid_values_are_kept_exactly(field: FieldPlan, value: Any, expected: Any) -> None:
    assert validate_value(field, value) == (expected, None)
    assert type(validate_value(field, value)[0]) is type(expected)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (SCORE, 11, "11 is outside the declared range 1..10"),
        (SCORE, 0, "0 is outside the declared range 1..10"),
        (SCORE, 7.5, "expected an integer, got 7.5"),
        (SCORE, "7.5", 'expected an integer, got "7.5"'),
        (SCORE, " 7", 'expected an integer, got " 7"'),
        (SCORE, True, "expected an integer, got true"),
        (SCORE, "seven", 'expected an integer, got "seven"'),
        (RATIO, 1.5, "1.5 is outside the declared range -1..1"),
        (RATIO, "nan", 'expected a number, got "nan"'),
        (RATIO, False, "expected a number, got false"),
        (OPENED, 1, "expected true or false, got 1"),
        (OPENED, "yes", 'expected true or false, got "yes"'),
        (MOOD, "Positive", '"Positive" is not one of positive, neutral, negative'),
        (MOOD, "happy", '"happy" is not one of positive, neutral, negative'),
        (NOTE, "   ", "the model answered with empty text"),
        (NOTE, 3, "expected text, got 3"),
        (THEMES, "price", 'expected a list of strings, got "price"'),
        (THEMES, ["price", 3], 'expected a list of strings, got ["price", 3]'),
        (SCORE, None, "the model answered null: the transcript does not tell"),
    ],
)
def test_invalid_values_are_missing_with_a_reason(
    field: FieldPlan, value: Any, reason: str
) -> None:
    assert validate_value(field, value) == (None, reason)


def test_answer_validation_covers_absent_fields_and_non_objects() -> None:
    values, missing = validate_answer([SCORE, OPENED], {"score": 3})
    assert values == {"score": 3, "opened": None}
    assert missing == {"opened": "the answer does not contain this field"}
    values, missing = validate_answer([SCORE], ["not", "an", "object"])
    assert values == {"score": None}
    assert missing["score"].startswith("the answer is not a JSON object")


def test_schema_allows_null_and_enforces_types() -> None:
    schema = extraction_schema(FIELDS)
    assert schema["required"] == [f.name for f in FIELDS]
    assert schema["additionalProperties"] is False
    good = {
        "score": 4,
        "ratio": 0.5,
        "opened": None,
        "mood": "positive",
        "note": "ok",
        "themes": ["a"],
    }
    assert validate_json(good, schema) == []
    assert validate_json({**good, "score": 11}, schema)
    assert validate_json({**good, "mood": "happy"}, schema)
    assert validate_json({**good, "opened": "yes"}, schema)
    assert validate_json({**good, "themes": ["x" * 500]}, schema)
    assert schema["properties"]["note"]["description"] == "A note"
    # max_tokens leaves room for the longest valid answer at two characters per token.
    longest = {
        **good,
        "score": 10,
        "ratio": -0.123456789,
        "note": "x" * TEXT_MAX_CHARS,
        "themes": ["y" * LIST_ITEM_MAX_CHARS] * LIST_MAX_ITEMS,
    }
    assert validate_json(longest, schema) == []
    assert len(json.dumps(longest)) / 2 < max_answer_tokens(FIELDS)


AGENT = AgentPlan(
    id="pop/001",
    kind="member",
    persona=None,
    population="pop",
    segment="young",
    index=1,
    attributes={"age": 30, "region": "North", "income": "high"},
)
CAMPAIGN = InterventionPlan(
    name="mail",
    channel="email",
    control=0.2,
    assign="random",
    variants=[],
    targets=["pop/001"],
    assignment={"pop/001": "control"},
)


def run_extraction(answer: Any) -> tuple[dict[str, Any], ChatRequest]:
    step = ExtractStep(id="09-extract", origin=ORIGIN, world="w", agents=["pop/001"], fields=FIELDS)
    event = TranscriptEvent(
        seq=1,
        step="02-ask",
        world="w",
        agent="pop/001",
        agent_name="Ana",
        kind="stimulus",
        type="CONVERSATION",
        content="Would you buy it?",
        time="2025-01-01T09:00:00",
    )

    def reply(request: ChatRequest, who: str) -> dict[str, Any]:
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = scripted_client(reply, validate=False)
    row = asyncio.run(
        extract_row(
            client,
            seed=1,
            step=step,
            agent=AGENT,
            name="Ana",
            persona={
                "name": "Ana",
                "age": 30,
                "occupation": {"title": "Nurse"},
                "gender": "female",
            },
            brief="30, Nurse",
            events=[event],
            interventions=[CAMPAIGN],
        )
    )
    return row, sent(client)[0]


def test_extract_row_validates_and_records_reasons() -> None:
    row, request = run_extraction(
        {
            "score": 12,
            "ratio": 0.5,
            "opened": "yes",
            "mood": "happy",
            "note": "too expensive",
            "themes": None,
        }
    )
    assert row["score"] is None and row["opened"] is None and row["mood"] is None
    assert row["themes"] is None
    assert row["ratio"] == 0.5 and row["note"] == "too expensive"
    assert row["_missing"] == {
        "score": "12 is outside the declared range 1..10",
        "opened": 'expected true or false, got "yes"',
        "mood": '"happy" is not one of positive, neutral, negative',
        "themes": "the model answered null: the transcript does not tell",
    }
    # Who the row is about sits next to the fields.
    assert row["agent"] == "pop/001" and row["name"] == "Ana" and row["world"] == "w"
    assert (row["population"], row["segment"]) == ("pop", "young")
    assert row["variant"] == row["variant_mail"] == "control"
    assert row["persona_age"] == 30 and row["persona_occupation"] == "Nurse"
    assert row["persona_region"] == "North" and row["persona_income"] == "high"
    # The prompt shows the record and describes every field.
    prompt = request.messages[1].content
    assert '"Would you buy it?"' in prompt and "score: integer from 1 to 10" in prompt
    assert "mood: one of positive, neutral, negative" in prompt
    assert request.temperature == 0.0 and request.schema_name == "extraction"


def test_extract_row_marks_everything_missing_when_the_answer_never_fits() -> None:
    failure = InvalidOutput(
        "model output does not match the JSON schema: $.score: expected integer",
        text="{",
        errors=["$.score: expected integer"],
        input_tokens=1,
        output_tokens=1,
    )
    row, _ = run_extraction(failure)
    assert all(row[field.name] is None for field in FIELDS)
    assert set(row["_missing"]) == {field.name for field in FIELDS}
    assert "did not match the schema" in row["_missing"]["score"]


def test_extract_row_lets_provider_failures_stop_the_step() -> None:
    with pytest.raises(RuntimeError, match="network down"):
        run_extraction(RuntimeError("network down"))


def test_result_columns_are_stable() -> None:
    rows = [
        build_row(
            agent=AGENT,
            name="Ana",
            world="w",
            persona={"gender": "female", "age": 30},
            interventions=[CAMPAIGN],
            values={"score": 3, "opened": True},
            missing={},
        ),
        {"agent": "x", "persona_zodiac": "leo", "score": 1},
    ]
    assert result_columns(rows, [SCORE, OPENED]) == [
        "agent",
        "name",
        "world",
        "population",
        "segment",
        "variant",
        "variant_mail",
        "persona_age",
        "persona_gender",
        "persona_income",
        "persona_region",
        "persona_zodiac",
        "score",
        "opened",
        "_missing",
    ]
