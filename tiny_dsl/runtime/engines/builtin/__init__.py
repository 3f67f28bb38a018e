"""The built-in engine: TinyTroupe's semantics implemented directly (see `engine`)."""

from tiny_dsl.runtime.engines.builtin.agents import MEMORY_CHARS
from tiny_dsl.runtime.engines.builtin.engine import BuiltinEngine

__all__ = ["MEMORY_CHARS", "BuiltinEngine"]
