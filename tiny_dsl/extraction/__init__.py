"""Structured results from a simulation: schemas, validated answers, result rows.

Pure: nothing here calls a model or imports the runtime. The extraction call
itself is the engines' (`tiny_dsl.runtime.engines.extraction`).
"""

from tiny_dsl.extraction.rows import build_row, persona_attributes, result_columns
from tiny_dsl.extraction.schema import (
    extraction_schema,
    field_schema,
    validate_answer,
    validate_value,
)

__all__ = [
    "build_row",
    "extraction_schema",
    "field_schema",
    "persona_attributes",
    "result_columns",
    "validate_answer",
    "validate_value",
]
