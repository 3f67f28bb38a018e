"""Diagnostic codes of `tts run`, registered when `tiny_dsl.runtime` is imported.

E51x: the run cannot start (nothing was spent, exit 2). E52x: the run started and
stopped (exit 3, resumable), except a replay with nothing recorded (exit 2). The
plan stage's refusals before a run (E501, E502) are in `tiny_dsl.plan.codes`.
Codes are stable: never renumber one; retire it instead.
"""

from tiny_dsl.diagnostics import register

RUN_SETUP_FAILED = "E510"
PROVIDER_UNAVAILABLE = "E511"
ENGINE_UNAVAILABLE = "E512"
AGENT_MODEL_UNAVAILABLE = "E513"
STEP_FAILED = "E520"
RUN_STOPPED = "E521"
REPLAY_NOTHING_RECORDED = "E522"
REPLAY_MISS = "E523"
CACHE_CORRUPT = "E524"

register(
    RUN_SETUP_FAILED,
    "run-setup-failed",
    """`tts run` could not start: the file does not exist, a saved plan.json
    cannot be read or was planned from an earlier version of its scenario, or a
    flag would change a saved plan. Nothing was sent to any model. The message
    says which; plan again (`tts plan FILE -o plan.json`) or run the .tts file.""",
)
register(
    PROVIDER_UNAVAILABLE,
    "provider-unavailable",
    """The model provider the scenario or `--provider` asks for cannot be used:
    the name is unknown, or a credential it needs (an API key, an endpoint) is
    missing from the environment. Nothing was sent to any model. Set the
    variable the message names, or run on the embedded model with
    `--provider embedded`.""",
)
register(
    ENGINE_UNAVAILABLE,
    "engine-unavailable",
    """The simulation engine the scenario or `--engine` asks for is not
    installed (TinyTroupe is an optional extra). The message says how to
    install it; `--engine builtin` runs the scenario on the built-in engine.""",
)
register(
    AGENT_MODEL_UNAVAILABLE,
    "agent-model-unavailable",
    """A persona or population asks for its own `model`, which the run's
    provider cannot serve: the embedded provider runs only its own model.
    Nothing was sent to any model. Run with a provider that serves it
    (`--provider openai`, or an OpenAI-compatible server), or remove the
    agent's `model` line to use the scenario's model.""",
)
register(
    STEP_FAILED,
    "step-failed",
    """A timeline step raised an error and the run stopped. Everything up to
    the previous step is checkpointed, and every model call already answered is
    in the cache: fix the cause and run the same command again to resume from
    the failed step, without paying twice. The run folder holds the manifest
    (status `failed`) and the transcript so far.""",
)
register(
    RUN_STOPPED,
    "run-stopped",
    """The run stopped before a model call that would have exceeded the
    scenario's `budget` or `max_calls`, or a call failed for good after its
    retries. Completed steps are checkpointed; raise the limit, or fix the
    provider, and run again to resume.""",
)
register(
    REPLAY_NOTHING_RECORDED,
    "replay-nothing-recorded",
    """`--replay` answers every model call from the cache and never calls a
    model, but the cache holds no recorded run of this scenario to replay.
    Run it once without `--replay` (on a machine with the model or its
    credentials) to record the answers; later runs can then replay them.""",
)
register(
    REPLAY_MISS,
    "replay-miss",
    """`--replay` found a model call with no recorded answer, while other calls
    of the scenario were answered from the cache: the scenario, its prompts or
    the model settings changed since the recorded run. Run without `--replay`
    to call the model for what changed.""",
)
register(
    CACHE_CORRUPT,
    "cache-corrupt",
    """The LLM cache (`.tts/cache.sqlite` under the state directory) is
    damaged. Running again would read the same damaged entries: move the file
    aside to start a new cache (answers are asked again), or restore it from a
    backup.""",
)
