"""Runtime support for executing scenarios: model providers, the LLM-call cache and client."""

# `tts run`'s diagnostic codes are registered with the stage, as every stage's are.
from tiny_dsl.runtime import codes as codes

# The interpreter's entry points, for `tiny_dsl.cli`. Imported lazily so that using
# the provider layer alone (`tiny_dsl.runtime.client`) does not load the engine.
_INTERPRETER_EXPORTS = ("RunResult", "StepFailed", "run_plan")


def __getattr__(name: str) -> object:
    if name in _INTERPRETER_EXPORTS:
        from tiny_dsl.runtime import interpreter

        return getattr(interpreter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
