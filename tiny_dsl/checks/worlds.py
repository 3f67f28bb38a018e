"""Worlds, interventions, and the groups of agents they name.

A group (`agents`, `targets`, `interview`) is a comma list of personas,
populations and segments (`population.segment`). Each item is resolved here to
a `GroupRef`, so later stages never look a name up again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime

from tiny_dsl import diagnostics as diag
from tiny_dsl.checks import codes
from tiny_dsl.checks import model as m
from tiny_dsl.checks.context import Context, Declared, check_unknown_name
from tiny_dsl.checks.values import (
    Node,
    Props,
    check_invalid_choice,
    check_out_of_range,
    check_wrong_type,
    read_choice,
    read_string,
    read_word,
)
from tiny_dsl.diagnostics import Label
from tiny_dsl.source import Span
from tiny_dsl.syntax import ast

WORLD_FIELDS = ("mode", "agents", "moderator", "context", "start", "turns")
TURNS = ("simultaneous", "sequential")
MODES: dict[str, m.WorldMode] = {
    "survey": "survey",
    "focus_group": "focus_group",
    "interview": "interview",
}
DEFAULT_START = datetime(2025, 1, 1, 9, 0)
# Years a simulated clock may start in: leaves a century of `wait` steps on the calendar.
MIN_YEAR, MAX_YEAR = 1000, 9000
START_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")
INTERVENTION_FIELDS = ("channel", "targets", "control", "assign")
CHANNELS = (
    "email",
    "sms",
    "push",
    "in_app",
    "social_post",
    "ad",
    "letter",
    "web",
    "phone",
)
ASSIGNMENTS = ("random", "stratified by segment")
VARIANT_FIELDS = ("content", "timing", "channel")
TOUCH_FIELDS = ("content", "timing", "channel")
TIMINGS = tuple(m.TIMING_HOURS)
CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


# ---------------------------------------------------------------------- groups


def resolve_group(ctx: Context, items: Sequence[Node], key: str, where: str) -> list[m.GroupRef]:
    """The members of a group that resolve; the others are reported.

    `key` is the property or step that lists the group (for messages), and
    `where` says where it is ("`agents` of world `panel`").
    """
    members: list[m.GroupRef] = []
    for item in items:
        if not isinstance(item, ast.Ref):
            check_wrong_type(
                ctx, key, item, "personas, populations or `population.segment`", "consumers, lisa"
            )
            continue
        member = resolve_member(ctx, item, key, where)
        if member is not None:
            members.append(member)
    check_duplicate_members(ctx, members)
    return members


def group_items(node: Node) -> Sequence[Node]:
    """The items of a group property: `a, b`, `[a, b]` or a single `a`."""
    return node.items if isinstance(node, ast.Seq | ast.ListValue) else (node,)


def resolve_member(ctx: Context, ref: ast.Ref, key: str, where: str) -> m.GroupRef | None:
    """One group item: a persona, a population, or one of a population's segments."""
    if len(ref.parts) == 1:
        found = ctx.resolve(
            ref.parts[0], ref.span, ("persona", "population"), where, _segment_names(ctx)
        )
        if found is None:
            return None
        if found.kind == "persona":
            return m.GroupRef("persona", found.name, None, ref.span)
        return m.GroupRef("population", found.name, None, ref.span)
    if len(ref.parts) != 2:
        check_wrong_type(ctx, key, ref, "`population.segment`", "consumers.families")
        return None
    population, segment = ref.parts
    if ctx.resolve(population, ref.span, ("population",), where) is None:
        return None
    built = ctx.populations.get(population)
    if built is not None and segment not in {s.name for s in built.segments}:
        check_unknown_name(
            ctx,
            segment,
            ref.span,
            f"segment of population `{population}`",
            where,
            (s.name for s in built.segments),
            declare_hint=f"the segments of `{population}` are "
            + ", ".join(f"`{s.name}`" for s in built.segments)
            + (
                "; there is no `general` segment because the declared segments fill the population"
                if segment == "general"
                else ""
            ),
        )
        return None
    return m.GroupRef("segment", population, segment, ref.span)


def _segment_names(ctx: Context) -> Iterator[str]:
    for population in ctx.populations.values():
        for segment in population.segments:
            yield f"{population.name}.{segment.name}"


def check_duplicate_members(ctx: Context, members: list[m.GroupRef]) -> None:
    """A member listed twice, or a segment listed with its whole population."""
    first: dict[str, m.GroupRef] = {}
    for member in members:
        if member.text() in first:
            _duplicate_member(ctx, member, first[member.text()], "is listed twice")
            continue
        first[member.text()] = member
    for member in members:
        whole = first.get(member.name)
        if member.kind == "segment" and whole is not None and whole.kind == "population":
            _duplicate_member(ctx, member, whole, f"is already included in `{member.name}`")


def _duplicate_member(ctx: Context, member: m.GroupRef, first: m.GroupRef, problem: str) -> None:
    assert member.span is not None and first.span is not None
    ctx.report(
        diag.error(
            codes.DUPLICATE_NAME,
            f"`{member.text()}` {problem}",
            member.span,
            "listed again here",
            secondary=[Label(first.span, "already listed here")],
            help=["list every member once"],
        )
    )


def covers(agents: Sequence[m.GroupRef], target: m.GroupRef, ctx: Context) -> bool:
    """Whether every member `target` stands for is among `agents`."""
    texts = {agent.text() for agent in agents}
    if target.text() in texts:
        return True
    if target.kind == "segment":
        return target.name in texts
    if target.kind == "population":
        population = ctx.populations.get(target.name)
        return population is not None and all(
            f"{target.name}.{s.name}" in texts for s in population.segments
        )
    return False


# ---------------------------------------------------------------------- worlds


def check_world(ctx: Context, declared: Declared) -> None:
    """A world: its mode, agents, moderator, context and simulated start time."""
    node = declared.node
    if not isinstance(node, ast.World):
        return
    errors = ctx.error_count
    name = declared.name
    owner = f"world `{name}`"
    props = Props(ctx, node.body, owner, node.name.span, WORLD_FIELDS)
    props.report_unknown()
    mode_word = props.choice("mode", tuple(MODES), required=True)
    mode = MODES.get(mode_word) if mode_word is not None else None
    agents: list[m.GroupRef] = []
    listed = props.value("agents", required="lisa, tomas")
    if listed is not None:
        agents = resolve_group(ctx, group_items(listed), "agents", f"`agents` of {owner}")
        for item in group_items(listed):
            # Members count as used even when a segment name is misspelt.
            if isinstance(item, ast.Ref):
                for kind in ("persona", "population"):
                    if ctx.lookup(kind, item.parts[0]) is not None:
                        ctx.world_members.add((kind, item.parts[0]))
    moderator = None
    moderator_node = props.value("moderator")
    if moderator_node is not None:
        moderator = _moderator(ctx, moderator_node, agents, owner)
    context = props.string("context")
    start = DEFAULT_START
    start_node = props.value("start")
    if start_node is not None:
        start = read_start(ctx, start_node) or DEFAULT_START
    turns = _turns(ctx, props, mode)
    if ctx.error_count == errors and mode is not None and listed is not None:
        ctx.worlds[name] = m.World(
            name, mode, tuple(agents), moderator, context or "", start, node.span, turns
        )


def _turns(ctx: Context, props: Props, mode: m.WorldMode | None) -> m.Turns:
    """`turns simultaneous|sequential`; a warning in a survey, where nobody hears anybody."""
    turns = props.choice("turns", TURNS)
    if turns is None:
        return "simultaneous"
    node = props.value("turns")
    if mode == "survey" and node is not None:
        check_turns_in_survey(ctx, node.span)
    return "sequential" if turns == "sequential" else "simultaneous"


def check_turns_in_survey(ctx: Context, span: Span) -> None:
    """`turns` on a survey world changes nothing."""
    ctx.report(
        diag.warning(
            codes.TURNS_IN_SURVEY,
            "`turns` has no effect in a survey world: nobody hears anybody",
            span,
            "no effect in `mode survey`",
            help=["remove `turns`, or use `mode focus_group` so the agents hear each other"],
        )
    )


def _moderator(ctx: Context, node: Node, agents: list[m.GroupRef], owner: str) -> str | None:
    word = read_word(ctx, "moderator", node, "mia")
    if (
        word is None
        or ctx.resolve(word, node.span, ("persona",), f"`moderator` of {owner}") is None
    ):
        return None
    for agent in agents:
        if agent.kind == "persona" and agent.name == word and agent.span is not None:
            check_conductor_in_group(ctx, word, node.span, agent.span, "moderator", "agents")
            return None
    return word


def check_conductor_in_group(
    ctx: Context, persona: str, span: Span, member: Span, role: str, group: str
) -> None:
    """A moderator among the agents, or an interviewer among the interviewed."""
    ctx.report(
        diag.error(
            codes.CONDUCTOR_IN_GROUP,
            f"`{persona}` is the {role} and cannot also be one of the {group}",
            span,
            f"the {role}",
            secondary=[Label(member, f"also one of the {group}")],
            help=[f"remove `{persona}` from the {group}, or choose another {role}"],
        )
    )


def read_start(ctx: Context, node: Node) -> datetime | None:
    """A world's simulated start, "YYYY-MM-DD HH:MM", a real moment from year 1000 to 9000."""
    text = read_string(ctx, "start", node)
    if text is None:
        return None
    if START_FORMAT.fullmatch(text):
        try:
            start = datetime.strptime(text, "%Y-%m-%d %H:%M")
        except ValueError:
            start = None
        if start is not None and MIN_YEAR <= start.year <= MAX_YEAR:
            return start
    check_invalid_datetime(
        ctx, "start", text, node.span, '"YYYY-MM-DD HH:MM"', '"2025-03-03 08:00"'
    )
    return None


def check_invalid_datetime(
    ctx: Context, key: str, text: str, span: Span, form: str, example: str
) -> None:
    """A date or time that is not in its expected form, or does not exist."""
    ctx.report(
        diag.error(
            codes.INVALID_DATETIME,
            f'`{key}` is not a valid {form} time: "{text}"',
            span,
            f"expected {form}",
            help=[f"for example: `{key} {example}`"],
        )
    )


# --------------------------------------------------------------- interventions


def check_intervention(ctx: Context, declared: Declared) -> None:
    """An intervention: channel, targets, control share, assignment and variants."""
    node = declared.node
    if not isinstance(node, ast.Intervention):
        return
    errors = ctx.error_count
    name = declared.name
    owner = f"intervention `{name}`"
    props = Props(ctx, node.body, owner, node.name.span, INTERVENTION_FIELDS, named=("variant",))
    props.report_unknown()
    channel = props.choice("channel", CHANNELS)
    targets: list[m.GroupRef] = []
    listed = props.value("targets", required="consumers")
    if listed is not None:
        targets = resolve_group(ctx, group_items(listed), "targets", f"`targets` of {owner}")
    control = 0.0
    control_node = props.value("control")
    if control_node is not None:
        control = read_control(ctx, control_node) or 0.0
    assign, stratify_by = "random", None
    assign_node = props.value("assign")
    if assign_node is not None:
        assign, stratify_by = read_assign(ctx, assign_node)
    variants = [
        check_variant(ctx, block, channel)
        for block in _unique_blocks(ctx, props, "variant", "variants", f"intervention `{name}`")
    ]
    if not props.named["variant"]:
        check_no_variants(ctx, node)
    checked = [v for v in variants if v is not None]
    if checked and len(checked) == len(variants):
        check_same_touches(ctx, checked)
    if props.value("channel") is None:
        check_channel_everywhere(ctx, node, props.named["variant"])
    if ctx.error_count == errors and listed is not None:
        ctx.interventions[name] = m.Intervention(
            name,
            channel,
            tuple(targets),
            control,
            "stratified" if assign == "stratified" else "random",
            stratify_by,
            tuple(checked),
            node.span,
        )


def read_control(ctx: Context, node: Node) -> float | None:
    """The control share: a percentage from 0% to below 100%."""
    if not isinstance(node, ast.Percent):
        check_wrong_type(ctx, "control", node, "a percentage", "20%")
        return None
    if not 0 <= node.value < 100:
        check_out_of_range(
            ctx, "control", node.span, node.raw, 0, 100, high_exclusive=True, unit="%"
        )
        return None
    return node.fraction


def read_assign(ctx: Context, node: Node) -> tuple[str, str | None]:
    """`random` or `stratified by segment`; invalid input falls back to random after an error."""
    words = node.items if isinstance(node, ast.Phrase) else (node,)
    text = " ".join(w.dotted if isinstance(w, ast.Ref) else "?" for w in words)
    if text == "random":
        return "random", None
    if text == "stratified by segment":
        return "stratified", "segment"
    if len(words) == 3 and text.startswith("stratified by ") and isinstance(words[2], ast.Ref):
        check_invalid_choice(ctx, "stratified by", words[2].dotted, words[2].span, ["segment"])
    elif all(isinstance(w, ast.Ref) for w in words):
        check_invalid_choice(ctx, "assign", text, node.span, ASSIGNMENTS)
    else:
        check_wrong_type(ctx, "assign", node, "`random` or `stratified by segment`", "random")
    return "random", None


def _unique_blocks(
    ctx: Context, props: Props, kind: str, kinds: str, owner: str
) -> list[ast.NamedBlock]:
    """The `kind NAME { ... }` blocks of `owner` (a variant's touches, an intervention's
    variants), each name once: a name given again is E202 and its block is dropped."""
    seen: dict[str, ast.NamedBlock] = {}
    for block in props.named[kind]:
        first = seen.get(block.name.name)
        if first is not None:
            ctx.report(
                diag.error(
                    codes.DUPLICATE_NAME,
                    f"{owner} already has a {kind} `{block.name.name}`",
                    block.name.span,
                    "declared again here",
                    secondary=[Label(first.name.span, "first declared here")],
                    help=[f"rename one of the {kinds}"],
                )
            )
            continue
        seen[block.name.name] = block
    return list(seen.values())


def check_variant(
    ctx: Context, block: ast.NamedBlock, default_channel: str | None
) -> m.Variant | None:
    """One arm: the content delivered, when in the day and on which channel; or its
    touches, each with its own content (the variant's timing and channel are theirs
    unless a touch sets its own)."""
    owner = f"variant `{block.name.name}`"
    props = Props(ctx, block.body, owner, block.name.span, VARIANT_FIELDS, named=("touch",))
    props.report_unknown()
    touch_blocks = _unique_blocks(ctx, props, "touch", "touches", f"variant `{block.name.name}`")
    content_node = props.value("content")
    if touch_blocks and content_node is not None:
        check_content_and_touches(ctx, block.name.name, content_node.span, touch_blocks[0])
        return None
    content = None if touch_blocks else props.string("content", required='"..."')
    errors = ctx.error_count
    timing = None
    timing_node = props.value("timing")
    if timing_node is not None:
        timing = read_timing(ctx, timing_node)
    channel = props.choice("channel", CHANNELS)
    touches = [
        _touch(ctx, touch, block.name.name, timing, channel or default_channel)
        for touch in touch_blocks
    ]
    if ctx.error_count != errors or None in touches:
        return None
    if touch_blocks:
        kept = tuple(t for t in touches if t is not None)
        return m.Variant(block.name.name, "", timing, block.span, channel, kept)
    if content is None:
        return None
    return m.Variant(block.name.name, content, timing, block.span, channel)


def _touch(
    ctx: Context,
    block: ast.NamedBlock,
    variant: str,
    variant_timing: str | None,
    variant_channel: str | None,
) -> m.Touch | None:
    """`touch NAME { channel; timing; content }`; the nearest `channel` and `timing` win."""
    owner = f"touch `{block.name.name}` of variant `{variant}`"
    props = Props(ctx, block.body, owner, block.name.span, TOUCH_FIELDS)
    props.report_unknown()
    content = props.string("content", required='"..."')
    timing = variant_timing
    timing_node = props.value("timing")
    if timing_node is not None:
        timing = read_timing(ctx, timing_node)
        if timing is None:
            return None
    channel = props.choice("channel", CHANNELS) or variant_channel
    if content is None or channel is None:
        if channel is None and props.value("channel") is None:
            check_no_channel(ctx, block.name.span, owner)
        return None
    return m.Touch(block.name.name, content, timing, channel, block.span)


def check_content_and_touches(
    ctx: Context, variant: str, content: Span, touch: ast.NamedBlock
) -> None:
    """A variant is one message or a sequence of touches, not both."""
    ctx.report(
        diag.error(
            codes.CONTENT_AND_TOUCHES,
            f"variant `{variant}` has both `content` and `touch` blocks",
            content,
            "the variant's own content",
            secondary=[Label(touch.name.span, "a touch with its own content")],
            help=['move the content into a `touch NAME { content "..." }`, or remove the touches'],
        )
    )


def check_same_touches(ctx: Context, variants: Sequence[m.Variant]) -> None:
    """Every variant of a multi-touch intervention declares the same touch names."""
    if not any(variant.touches for variant in variants):
        return
    names: dict[str, m.Touch] = {}
    for variant in variants:
        for touch in variant.touches:
            names.setdefault(touch.name, touch)
    for variant in variants:
        own = {touch.name for touch in variant.touches}
        for name, example in names.items():
            if name in own:
                continue
            ctx.report(
                diag.error(
                    codes.MISSING_TOUCH,
                    f"variant `{variant.name}` has no touch `{name}`",
                    variant.span,
                    f"no `touch {name}`",
                    secondary=[Label(example.span, f"`{name}` is declared here")],
                    help=[
                        f"every variant needs the same touches: add "
                        f'`touch {name} {{ content "..." }}` to `{variant.name}`'
                    ],
                )
            )


def check_channel_everywhere(
    ctx: Context, node: ast.Intervention, variants: Sequence[ast.NamedBlock]
) -> None:
    """Without a channel on the intervention, every variant without touches needs one
    (a touch without one is reported at the touch)."""

    def has(block: ast.NamedBlock, kind: str) -> bool:
        entries = block.body.entries
        return any(
            isinstance(entry, ast.Property | ast.NamedBlock)
            and ast.key_text(entry.key if isinstance(entry, ast.Property) else entry.kind) == kind
            for entry in entries
        )

    if not variants or any(not has(v, "touch") and not has(v, "channel") for v in variants):
        check_no_channel(ctx, node.name.span, f"intervention `{node.name.name}`")


def check_no_channel(ctx: Context, span: Span, owner: str) -> None:
    """No channel for a message: none on it, its variant or the intervention."""
    ctx.report(
        diag.error(
            codes.MISSING_PROPERTY,
            f"{owner} has no `channel`",
            span,
            "`channel` is required",
            help=["add `channel email` to the intervention, the variant or the touch"],
        )
    )


def read_timing(ctx: Context, node: Node) -> str | None:
    """`morning`, `afternoon`, `evening`, or an exact "HH:MM" (normalised to two digits)."""
    if isinstance(node, ast.Str):
        clock = CLOCK.fullmatch(node.value)
        if clock:
            return f"{int(clock.group(1)):02d}:{clock.group(2)}"
        if node.value not in TIMINGS:
            check_invalid_datetime(ctx, "timing", node.value, node.span, '"HH:MM"', '"08:30"')
            return None
        return node.value
    return read_choice(ctx, "timing", node, TIMINGS)


def check_no_variants(ctx: Context, node: ast.Intervention) -> None:
    """An intervention with nothing to deliver."""
    ctx.report(
        diag.error(
            codes.NO_VARIANTS,
            f"intervention `{node.name.name}` has no variant",
            node.name.span,
            "no `variant` block",
            help=['add at least one `variant NAME { content "..." }`'],
        )
    )
