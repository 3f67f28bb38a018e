"""Importing TinyTroupe without letting it take over the host process.

`import tinytroupe` prints a banner and its whole configuration to stdout, reads
`./config.ini` from the working directory, attaches handlers to the *root*
logger and changes its level, writes a DEBUG log with full prompts into the
working directory, and appends `"."` to `sys.path`. A library embedded in `tts`
may do none of that, so the first import goes through `import_tinytroupe()`:

* our `config.ini` is written to a private temporary directory and the import
  runs with that directory as the working directory, under a lock (the working
  directory is process-wide), which is restored right after;
* stdout, stderr and warnings are captured (kept in `TinyTroupe.banner`);
* the root logger's handlers and level, and `sys.path`, are restored;
* TinyTroupe's own `tinytroupe` logger stops propagating to the root logger, so
  its per-turn warnings reach only a handler the engine attaches (a log file in
  the run's state directory), or nothing.

The configuration turns off TinyTroupe's hidden cost multipliers (see
`CONFIG_INI`), disables its log file and console logging, and selects the
`tiny_dsl` client that `tiny_dsl.runtime.engines.tinytroupe.bridge` registers, so no
model call ever goes through TinyTroupe's own OpenAI client (and tiktoken never
tries to download its encodings).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "API_TYPE",
    "CONFIG_INI",
    "INSTALL_HINT",
    "TinyTroupe",
    "TinyTroupeNotInstalled",
    "import_tinytroupe",
    "tinytroupe_installed",
]

# The name our client is registered under in TinyTroupe's client registry.
API_TYPE = "tiny_dsl"

INSTALL_HINT = (
    "TinyTroupe is not installed. The `tinytroupe` package on PyPI is an empty placeholder, "
    "so install it from its repository as the optional extra described in the README "
    '("Running scenarios on TinyTroupe"): '
    "pip install --no-deps git+https://github.com/microsoft/TinyTroupe.git@main "
    "then pip install tiktoken chevron textdistance llama-index-core "
    "llama-index-embeddings-openai llama-index-readers-web pypandoc markdown"
)

# Overlaid on TinyTroupe's packaged defaults at import (keys it does not find here keep
# their defaults). Every value is read once, at import or at agent construction.
CONFIG_INI = f"""\
[OpenAI]
; Every call goes to tiny_dsl's client (our providers, cache, retries and budget).
API_TYPE={API_TYPE}
; Our LLM cache records every answer; TinyTroupe's pickle cache would duplicate it.
CACHE_API_CALLS=False
; The 1 s sleep before every uncached call and the 4-call semaphore belong to
; TinyTroupe's OpenAI client, which is never used; set anyway so a stray call cannot
; sleep or throttle.
WAITING_TIME=0
MAX_CONCURRENT_MODEL_CALLS=0

[Cognition]
; Consolidation costs an extra LLM call (plus an extended minibio call) whenever an
; episode passes MIN_EPISODE_LENGTH events; contextual retrieval embeds every turn
; through OpenAI's embedding API. Both are off, as in the TinyTroupe paper's experiments.
ENABLE_MEMORY_CONSOLIDATION=False
ENABLE_CONTINUOUS_CONTEXTUAL_SEMANTIC_MEMORY_RETRIEVAL=False

[ActionGenerator]
; Each quality check is one more LLM-judged proposition per action (off by default).
ENABLE_QUALITY_CHECKS=False
ENABLE_REGENERATION=False
ENABLE_DIRECT_CORRECTION=False

[Logging]
; No log file in the working directory and no console handler on the root logger.
LOGLEVEL=WARNING
LOGLEVEL_CONSOLE=NONE
LOGLEVEL_FILE=NONE
LOG_INCLUDE_THREAD_ID=False
"""

_IMPORT_LOCK = threading.Lock()
_loaded: TinyTroupe | None = None


class TinyTroupeNotInstalled(ImportError):
    """TinyTroupe cannot be imported; the message says how to install it."""


@dataclass(frozen=True)
class TinyTroupe:
    """The imported TinyTroupe modules and what their import printed.

    Attributes are typed `Any` because TinyTroupe ships no type information.
    """

    version: str
    banner: str  # stdout and stderr of the import, for `--verbose`
    package: ModuleType
    clients: ModuleType
    utils: ModuleType
    TinyPerson: Any
    TinyWorld: Any
    EpisodicMemory: Any
    ResultsExtractor: Any


def tinytroupe_installed() -> bool:
    """Whether the real TinyTroupe is installed, found without importing it.

    PyPI's placeholder is also called `tinytroupe`; only the real package has
    the `agent` subpackage.
    """
    spec = importlib.util.find_spec("tinytroupe")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(path) / "agent").is_dir() for path in spec.submodule_search_locations)


def import_tinytroupe() -> TinyTroupe:
    """Import TinyTroupe once per process with its side effects contained (see module doc).

    Raises `TinyTroupeNotInstalled` when it is missing or is PyPI's placeholder
    (which has no `tinytroupe.agent`).
    """
    global _loaded
    with _IMPORT_LOCK:
        if _loaded is None:
            _loaded = _import_contained()
        return _loaded


def _import_contained() -> TinyTroupe:
    if not tinytroupe_installed():
        raise TinyTroupeNotInstalled(INSTALL_HINT)
    workdir = Path(tempfile.mkdtemp(prefix="tiny-dsl-tinytroupe-"))
    (workdir / "config.ini").write_text(CONFIG_INI, encoding="utf-8")
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    saved_path, saved_cwd = list(sys.path), os.getcwd()
    captured = io.StringIO()
    try:
        os.chdir(workdir)
        with (
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            modules = {
                name: importlib.import_module(name)
                for name in (
                    "tinytroupe",
                    "tinytroupe.agent",
                    "tinytroupe.environment",
                    "tinytroupe.extraction",
                    "tinytroupe.clients",
                    "tinytroupe.utils",
                )
            }
    except ImportError as exc:
        raise TinyTroupeNotInstalled(
            f"importing TinyTroupe failed ({exc}). {INSTALL_HINT}"
        ) from exc
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        for handler in [h for h in root.handlers if h not in root_handlers]:
            root.removeHandler(handler)
            handler.close()
        for handler in root_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(root_level)
        shutil.rmtree(workdir, ignore_errors=True)
    tt_logger = logging.getLogger("tinytroupe")
    tt_logger.propagate = False
    tt_logger.setLevel(logging.INFO)
    # Without any handler, logging's last-resort handler would print warnings to stderr.
    tt_logger.addHandler(logging.NullHandler())
    package = modules["tinytroupe"]
    # Its dependencies' deprecation warnings join the banner rather than stderr.
    for warning in caught:
        captured.write(f"{warning.category.__name__}: {warning.message}\n")
    return TinyTroupe(
        version=_version(),
        banner=captured.getvalue(),
        package=package,
        clients=modules["tinytroupe.clients"],
        utils=modules["tinytroupe.utils"],
        TinyPerson=modules["tinytroupe.agent"].TinyPerson,
        TinyWorld=modules["tinytroupe.environment"].TinyWorld,
        EpisodicMemory=modules["tinytroupe.agent"].EpisodicMemory,
        ResultsExtractor=modules["tinytroupe.extraction"].ResultsExtractor,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("tinytroupe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
