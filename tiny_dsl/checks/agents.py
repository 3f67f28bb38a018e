"""`agent NAME external { ... }`: a system under test, and how to talk to it.

An external agent is reached over HTTP. `openai_chat` sends the conversation as
chat messages to an OpenAI-compatible `/chat/completions` endpoint (the bot is
the assistant, the persona the user) and reads `choices[0].message.content`;
`http_json` posts the `request` template with the persona's latest message and
the conversation's `session` filled in, and reads the reply at the dotted path
`reply` of the JSON answer, for bots that keep each session's history
themselves. `{env.NAME}` in the url, a header or the request is read from the
environment when the call is made, so a secret never enters the plan, the cache
or any output; `tts check` only checks that the placeholders are well formed.
"""

from __future__ import annotations

import json
import re
from typing import Literal, cast

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context, Declared
from tiny_dsl.checks.values import Props, check_wrong_type, entry_key
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

AGENT_FIELDS = ("url", "protocol", "model", "request", "reply", "timeout")
PROTOCOLS = ("openai_chat", "http_json")
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600
DEFAULT_REQUEST = '{"session": "{session}", "message": "{message}"}'
DEFAULT_REPLY = "reply"
# What an `http_json` request may hold in braces: the conversation's id, the
# persona's latest message, the turn number (1-based) and environment variables.
REQUEST_PLACEHOLDERS = ("session", "message", "turn")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_ENV_NAME = re.compile(r"env\.([A-Za-z_][A-Za-z0-9_]*)")
_REPLY_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")


def check_external_agent(ctx: Context, declared: Declared) -> None:
    """Check one `agent NAME external` block and build its `m.ExternalAgent`."""
    node = declared.node
    assert isinstance(node, ast.ExternalAgent)
    errors = ctx.error_count
    owner = f"agent `{node.name.name}`"
    headers_entries = [e for e in node.body.entries if entry_key(e) == "header"]
    others = ast.Block(
        tuple(e for e in node.body.entries if entry_key(e) != "header"), node.body.span
    )
    props = Props(ctx, others, owner, node.name.span, AGENT_FIELDS)
    for entry in props.unknown:
        check_unknown_agent_property(ctx, entry, owner)
    url = props.string("url", required='"http://127.0.0.1:8080/v1/chat/completions"')
    protocol = props.choice("protocol", PROTOCOLS) or "openai_chat"
    model = props.string("model")
    request = props.string("request")
    reply = props.string("reply")
    timeout = props.number("timeout", 1, MAX_TIMEOUT_S)
    if url is not None:
        check_url(ctx, url, _span_of(props, "url"))
        check_env_placeholders(ctx, url, _span_of(props, "url"), "url")
    if protocol == "openai_chat":
        for key in ("request", "reply"):
            if props.value(key) is not None:
                check_not_for_protocol(ctx, key, _span_of(props, key))
    else:
        if model is not None:
            check_not_for_protocol(ctx, "model", _span_of(props, "model"))
        if request is not None:
            check_request_template(ctx, request, _span_of(props, "request"))
        if reply is not None and not _REPLY_PATH.fullmatch(reply):
            check_bad_agent_value(
                ctx,
                f"`reply` must be a dotted path into the JSON answer, found {reply!r}",
                _span_of(props, "reply"),
                'for example `reply "answer.text"` or `reply "choices.0.text"`',
            )
    headers = read_headers(ctx, headers_entries)
    if ctx.error_count != errors or url is None:
        return
    ctx.external_agents[node.name.name] = m.ExternalAgent(
        name=node.name.name,
        url=url,
        protocol=cast(Literal["openai_chat", "http_json"], protocol),
        model=model if protocol == "openai_chat" else None,
        request=(request or DEFAULT_REQUEST) if protocol == "http_json" else None,
        reply=(reply or DEFAULT_REPLY) if protocol == "http_json" else None,
        headers=headers,
        timeout_s=timeout if timeout is not None else DEFAULT_TIMEOUT_S,
        span=node.name.span,
    )


def _span_of(props: Props, key: str) -> Span:
    entry = props.entries[key]
    return entry.value.span if isinstance(entry, ast.Property) else entry.span


def check_unknown_agent_property(ctx: Context, entry: ast.Entry, owner: str) -> None:
    """A property an external agent does not take (`header` is one, repeatable)."""
    key = entry_key(entry)
    known = (*AGENT_FIELDS, "header")
    suggestion = diag.did_you_mean(key, known)
    listed = ", ".join(f"`{k}`" for k in known)
    ctx.report(
        diag.error(
            codes.UNKNOWN_PROPERTY,
            f"`{key}` is not a property of {owner}",
            entry.key.span if not isinstance(entry, ast.NamedBlock) else entry.kind.span,
            "unknown property",
            help=[suggestion or f"{owner} accepts {listed}"],
        )
    )


def check_url(ctx: Context, url: str, span: Span) -> None:
    """An http(s) URL (a `{env.NAME}` may stand for any part of it)."""
    if url.startswith(("http://", "https://")) or url.startswith("{env."):
        return
    check_bad_agent_value(
        ctx,
        f"the `url` of an external agent must start with http:// or https://, found {url!r}",
        span,
        'for example `url "http://127.0.0.1:8080/v1/chat/completions"`',
    )


def check_env_placeholders(ctx: Context, text: str, span: Span, key: str) -> list[str]:
    """The `{env.NAME}` placeholders of `text` (reported when malformed); returns the
    other placeholders, for the caller to judge."""
    others = []
    for match in _PLACEHOLDER.finditer(text):
        inner = match.group(1)
        if inner.startswith("env."):
            if not _ENV_NAME.fullmatch(inner):
                check_bad_agent_value(
                    ctx,
                    f"`{{{inner}}}` in `{key}` is not an environment variable placeholder",
                    span,
                    "write `{env.NAME}`, NAME a variable name such as `HELPDESK_TOKEN`",
                )
        else:
            others.append(inner)
    return others


def check_request_template(ctx: Context, request: str, span: Span) -> None:
    """An `http_json` request: JSON once its placeholders are filled in, and only
    the placeholders a request may hold."""
    for inner in check_env_placeholders(ctx, request, span, "request"):
        if inner not in REQUEST_PLACEHOLDERS:
            suggestion = diag.did_you_mean(inner, REQUEST_PLACEHOLDERS)
            listed = ", ".join(f"`{{{name}}}`" for name in REQUEST_PLACEHOLDERS)
            check_bad_agent_value(
                ctx,
                f"`{{{inner}}}` is not a placeholder of an external agent's `request`",
                span,
                suggestion or f"a request may hold {listed} and `{{env.NAME}}`",
            )
    filled = _PLACEHOLDER.sub("1", request)
    try:
        json.loads(filled)
    except json.JSONDecodeError as exc:
        check_bad_agent_value(
            ctx,
            f"the `request` of an external agent is not JSON once its placeholders are "
            f"filled in: {exc.msg} at line {exc.lineno} column {exc.colno}",
            span,
            'for example `request """{"session": "{session}", "message": "{message}"}"""`',
        )


def read_headers(ctx: Context, entries: list[ast.Entry]) -> tuple[tuple[str, str], ...]:
    """`header NAME "value"` entries, in order; a header set twice is reported."""
    headers: list[tuple[str, str]] = []
    first_set: dict[str, Span] = {}
    for entry in entries:
        value = entry.value if isinstance(entry, ast.Property) else None
        parts = value.items if isinstance(value, ast.Phrase) else ()
        if not (
            len(parts) == 2
            and isinstance(parts[0], ast.Ref | ast.Str)
            and isinstance(parts[1], ast.Str)
        ):
            node = value if value is not None else ast.Str("", span=entry.span)
            check_wrong_type(ctx, "header", node, "a header name and its value", 'X-Key "..."')
            continue
        name_node, text = parts[0], parts[1]
        name = name_node.dotted if isinstance(name_node, ast.Ref) else name_node.value
        if not _HEADER_NAME.fullmatch(name):
            check_bad_agent_value(
                ctx,
                f"`{name}` is not an HTTP header name",
                name_node.span,
                "a header name holds letters, digits and `-`, as in `X-Api-Key`",
            )
            continue
        first = first_set.get(name.lower())
        if first is not None:
            ctx.report(
                diag.error(
                    codes.DUPLICATE_PROPERTY,
                    f"header `{name}` is set twice",
                    name_node.span,
                    "set again here",
                    secondary=[diag.Label(first, "first set here")],
                    help=["remove one of them"],
                )
            )
            continue
        check_env_placeholders(ctx, text.value, text.span, "header")
        first_set[name.lower()] = name_node.span
        headers.append((name, text.value))
    return tuple(headers)


def check_not_for_protocol(ctx: Context, key: str, span: Span) -> None:
    """`request`/`reply` on an `openai_chat` agent, `model` on an `http_json` one."""
    why = {
        "request": "`openai_chat` sends the conversation as chat messages",
        "reply": "`openai_chat` reads the reply from `choices[0].message.content`",
        "model": "`http_json` sends only the `request` template",
    }[key]
    check_bad_agent_value(
        ctx,
        f"`{key}` does not apply to this protocol: {why}",
        span,
        "remove it, or set `protocol http_json`"
        if key != "model"
        else "remove it, or put the model in the `request` template",
    )


def check_bad_agent_value(ctx: Context, problem: str, span: Span, hint: str) -> None:
    ctx.report(
        diag.error(codes.BAD_EXTERNAL_AGENT, problem, span, "here", help=[hint]),
    )
