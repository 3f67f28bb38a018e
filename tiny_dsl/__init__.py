"""tiny_dsl: a declarative scenario language for LLM persona simulations."""

__version__ = "0.1.0"
