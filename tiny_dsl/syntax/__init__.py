"""Stage 1: text to syntax tree (`parse`), and syntax tree to text (`format_module`)."""

from tiny_dsl.syntax.parser import parse

__all__ = ["parse"]
