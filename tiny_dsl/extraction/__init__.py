"""Structured results from a simulation: schemas, validated answers, result rows."""

from tiny_dsl.extraction.extract import extract_row, extraction_request
from tiny_dsl.extraction.rows import build_row, persona_attributes, result_columns
from tiny_dsl.extraction.schema import (
    extraction_schema,
    field_schema,
    validate_answer,
    validate_value,
)

__all__ = [
    "build_row",
    "extract_row",
    "extraction_request",
    "extraction_schema",
    "field_schema",
    "persona_attributes",
    "result_columns",
    "validate_answer",
    "validate_value",
]
