"""The built-in engine: TinyTroupe's semantics implemented directly (see `engine`)."""

from tiny_dsl.runtime.builtin.engine import MEMORY_CHARS, BuiltinEngine, EngineStateError

__all__ = ["MEMORY_CHARS", "BuiltinEngine", "EngineStateError"]
