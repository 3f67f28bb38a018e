"""The diagnostic codes of the check stage and what `tts explain CODE` says about them.

E2xx: names, imports and the files a scenario reads. E3xx: values and types.
W1xx: legal but probably not what the author meant. Codes are stable: never
renumber one; retire it instead.
"""

from __future__ import annotations

from tiny_dsl.diagnostics import register

# ------------------------------------------------------------ names and imports

UNKNOWN_NAME = "E201"
DUPLICATE_NAME = "E202"
FILE_NOT_FOUND = "E203"
IMPORT_CYCLE = "E204"
PATH_OUTSIDE_ROOT = "E205"
NOT_ALLOWED_IN_IMPORT = "E206"
NOT_RUNNABLE = "E207"
DUPLICATE_BLOCK = "E208"
RESERVED_NAME = "E209"
UNREADABLE_FILE = "E210"
INVALID_JSON = "E211"
INVALID_TINYTROUPE_SPEC = "E212"
TARGET_NOT_IN_WORLD = "E213"
CONDUCTOR_IN_GROUP = "E214"
WRONG_KIND = "E215"
INTERVENTION_NOT_IN_WORLD = "E216"

# ------------------------------------------------------------- values and types

UNKNOWN_PROPERTY = "E301"
DUPLICATE_PROPERTY = "E302"
WRONG_TYPE = "E303"
OUT_OF_RANGE = "E304"
INVALID_CHOICE = "E305"
MISSING_PROPERTY = "E306"
UNSUPPORTED_CURRENCY = "E307"
MERGE_CONFLICT = "E308"
SHARES_EXCEED_TOTAL = "E309"
INCOMPLETE_NUMERIC_DISTRIBUTION = "E310"
OVERLAPPING_RANGES = "E311"
REVERSED_RANGE = "E312"
SEGMENTS_EXCEED_SIZE = "E313"
CONSTRAINT_OUTSIDE_SUPPORT = "E314"
UNKNOWN_LABEL = "E315"
INVALID_DATETIME = "E316"
NO_VARIANTS = "E317"
FIELD_TYPE_MISMATCH = "E318"
FUNNEL_TOO_SHORT = "E319"
PERCENT_NOT_ALLOWED = "E320"
# Multi-touch interventions (language v2).
MISSING_TOUCH = "E330"
TOUCH_NOT_NAMED = "E331"
NOT_MULTI_TOUCH = "E332"
CONTENT_AND_TOUCHES = "E333"
FIELD_TYPE_CONFLICT = "E334"
# Generated people (language v2).
CONTEXT_WITHOUT_GENERATE = "E340"
CONSTRAINT_WITHOUT_DEMOGRAPHICS = "E341"
VARY_NAME_TAKEN = "E342"
# People and demographics from files (language v2).
NOT_FOR_LOADED_POPULATION = "E344"
BAD_MEMBER_ID = "E345"
DUPLICATE_MEMBER = "E346"
NO_MEMBERS = "E347"

# Analyses over any group, and validation against real data (language v2).
METRIC_WITHOUT_VALIDATE = "E350"
DATA_FILE = "E351"
# Systems under test (language v2).
BAD_EXTERNAL_AGENT = "E360"
# Parameters and replicates (language v2, runs).
UNKNOWN_PARAM = "E370"
PARAM_CYCLE = "E371"

# --------------------------------------------------------------------- warnings

UNKNOWN_PERSONA_FIELD = "W101"
INCOMPLETE_PERSONA = "W102"
UNUSED_POPULATION = "W103"
UNUSED_PERSONA = "W104"
UNANALYSED_FIELD = "W105"
UNUSED_WORLD = "W106"
UNDELIVERED_INTERVENTION = "W107"
MANY_ROUNDS = "W108"
DUPLICATE_PERSONA_NAME = "W109"
AGENT_FILE_FIELD_TYPE = "W110"
TURNS_IN_SURVEY = "W120"
UNUSED_SETTING = "W130"
PARAM_LIKE_TEXT = "W170"

# ------------------------------------------------------------------------ notes

DEMOGRAPHICS_TEXT = "N101"
ADULTS_ONLY = "N102"
DISTRIBUTION_RENAMED = "N103"

register(
    UNKNOWN_NAME,
    "unknown-name",
    """A reference names something that is not declared in this file or in
    any file it imports: a persona, fragment, demographics, population,
    segment, world, intervention or extracted field. Check the spelling (the
    help line suggests close names), declare it, or import the file that
    declares it.""",
)
register(
    DUPLICATE_NAME,
    "duplicate-name",
    """Two things of the same kind have the same name: two personas, two
    worlds, two segments of one population, two variants of one
    intervention, two extracted fields, two checkpoints, two enum members, or
    a name listed twice. References could not tell them apart. Declarations
    are unique per kind across the root file and every file it imports; a
    persona and a population may not share a name either, because both can
    stand in a group. Rename one of them.""",
)
register(
    FILE_NOT_FOUND,
    "file-not-found",
    """An `import "..."` or a `from "..."` path, or the scenario file given to
    `tts check`, `tts plan` or `tts run`, names a file that does not exist.
    Paths are relative to the file that contains them; an import that starts
    with `stdlib/` is also looked up in the bundled standard library. The help
    line lists close file names.""",
)
register(
    IMPORT_CYCLE,
    "import-cycle",
    """Files import each other in a circle (a imports b, b imports a). Every
    file is read once, so a cycle has no meaning: move the shared
    declarations into a third file that both import.""",
)
register(
    PATH_OUTSIDE_ROOT,
    "path-outside-root",
    """An import or a `from "..."` path leads outside the directory of the
    file being checked (and outside the bundled standard library), or an
    output `dir` (or `tts run --output-dir`) leads outside both the working
    directory and the scenario's directory, after `..` and symlinks are
    resolved. Scenarios stay self-contained so that they can be shared and
    reviewed as one folder, and a shared scenario cannot read `~/.ssh` or
    write into `~/.config`. Copy the file into the scenario's folder, write
    outputs to a relative `dir` such as `outputs/study`, or pass
    `--allow-outside` to `tts check`, `tts plan` or `tts run` if you trust
    the path.""",
)
register(
    NOT_ALLOWED_IN_IMPORT,
    "not-allowed-in-import",
    """An imported file contains a `scenario`, `timeline`, `extract`,
    `analyze` or `output` block. Imported files are libraries: they may only
    declare personas, fragments, demographics, populations, worlds and
    interventions. What a run does belongs to the one file that is run.""",
)
register(
    NOT_RUNNABLE,
    "not-runnable",
    """The file has no `scenario` block, so it cannot be planned or run. A
    file with a `timeline`, `extract`, `analyze` or `output` block needs a
    `scenario NAME { ... }` block. A file with only declarations (personas,
    fragments, demographics, ...) is a library: it checks clean and is meant
    to be imported.""",
)
register(
    DUPLICATE_BLOCK,
    "duplicate-block",
    """A block that may appear only once appears twice: `scenario`,
    `timeline`, `analyze` and `output` at most once per run, and one
    `extract` block per world. Merge the two blocks into one.""",
)
register(
    RESERVED_NAME,
    "reserved-name",
    """The name is reserved. `general` is the implicit segment that holds the
    members of a population not in any declared segment; and a demographics
    distribution may not be called `size`, `particularities` or
    `fragments`, since segments use those words for their own settings.
    Choose another name.""",
)
register(
    UNREADABLE_FILE,
    "unreadable-file",
    """A file exists but cannot be read: it is a directory, it is not
    readable, or it is not UTF-8 text. `.tts` files and TinyTroupe JSON files
    must be UTF-8.""",
)
register(
    INVALID_JSON,
    "invalid-json",
    """A `persona NAME from "..."` or `fragment NAME from "..."` file is not
    valid JSON. The message gives the line and column where the JSON parser
    stopped.""",
)
register(
    INVALID_TINYTROUPE_SPEC,
    "invalid-tinytroupe-spec",
    """A JSON file is valid JSON but not a TinyTroupe specification of the
    expected kind. `persona NAME from` needs an agent file
    `{"type": "TinyPerson", "persona": {"name": "...", ...}}`; `fragment NAME
    from` needs a fragment file `{"type": "Fragment", "persona": {...}}`.""",
)
register(
    TARGET_NOT_IN_WORLD,
    "target-not-in-world",
    """`deliver INTERVENTION in WORLD` needs every target of the intervention
    to be an agent of the world: a message cannot reach someone who is not
    there. Add the target to the world's `agents`, or narrow the
    intervention's `targets`.""",
)
register(
    CONDUCTOR_IN_GROUP,
    "conductor-in-group",
    """A world's moderator is also one of its agents, an interviewer is
    among the people they interview, or a `converse` partner is one of the
    group it converses with. The moderator speaks for the researcher and is
    not a participant: remove it from `agents` (or from the interviewed
    group). A `converse` partner talks with each member in turn, so it
    cannot be one of them: remove it from the group.""",
)
register(
    WRONG_KIND,
    "wrong-kind",
    """A name is declared, but as a different kind of thing than the place
    where it is used expects: for instance a population where a persona is
    needed (`moderator`, `interview ... by`), or a world where an
    intervention is needed (`deliver`). The message says what the name is
    and what was expected.""",
)
register(
    INTERVENTION_NOT_IN_WORLD,
    "intervention-not-in-world",
    """An analysis groups a field by an intervention's arms, but that
    intervention is never delivered in the world the field is extracted
    from, so no agent of that world has an arm. `compare FIELD by
    INTERVENTION` needs a `deliver INTERVENTION in WORLD` step for the
    field's world; `summarize FIELD by variant` needs exactly one.""",
)
register(
    UNKNOWN_PROPERTY,
    "unknown-property",
    """A block contains a property it does not accept, often a typo. The
    help line suggests close names and the message lists what the block
    accepts. (Unknown persona fields are only a warning, W101, because
    TinyTroupe personas are free-form.)""",
)
register(
    DUPLICATE_PROPERTY,
    "duplicate-property",
    """The same property is set twice in one block. Only one value can hold:
    remove one of them.""",
)
register(
    WRONG_TYPE,
    "wrong-type",
    """A value has the wrong form for where it is written: a number where a
    string is expected, a name where a list is expected, a block where a
    single value is expected, and so on. The message names the expected
    form and the help line shows an example.""",
)
register(
    OUT_OF_RANGE,
    "out-of-range",
    """A number is outside the range its property allows: for example
    `temperature` 0..2, `max_concurrency` 1..256, a population `size`
    1..100000, an `age` 0..120, `run` 1..100 rounds, `control` below 100%,
    or a `wait` that is not positive.""",
)
register(
    INVALID_CHOICE,
    "invalid-choice",
    """A property accepts one of a fixed set of words and got another: a
    world `mode`, an intervention `channel`, `assign`, a variant `timing`,
    an output `format`, a `provider`, an `engine`, an aggregate function in
    `expect`, or the grouping of `summarize`. The help line suggests the
    closest valid word.""",
)
register(
    MISSING_PROPERTY,
    "missing-property",
    """A required property is missing: a persona's `name`, a world's `mode`
    and `agents`, a population's `from` and `size`, a segment's `size`, an
    intervention's `channel` and `targets`, or a variant's `content`.""",
)
register(
    UNSUPPORTED_CURRENCY,
    "unsupported-currency",
    """A `budget` is given in a currency other than `usd`. Model prices are
    known in US dollars only, so cost accounting and the budget guard work
    in `usd`. Convert the amount, for example `budget 5.00 usd`.""",
)
register(
    MERGE_CONFLICT,
    "merge-conflict",
    """A persona's fragments cannot be merged the TinyTroupe way: lists are
    concatenated and maps merged, but two different single values for the
    same field (say `age 28` in the persona and `age 70` in a fragment), or
    two values of different types (a string and a list), conflict. Both
    sites are shown; remove one of the values or drop the fragment.""",
)
register(
    SHARES_EXCEED_TOTAL,
    "shares-exceed-total",
    """The shares of a demographics distribution add up to more than 100%
    (a tolerance of 0.5 points allows for rounding). Fix the percentages so
    they add up to 100%.""",
)
register(
    INCOMPLETE_NUMERIC_DISTRIBUTION,
    "incomplete-numeric-distribution",
    """The brackets of a numeric distribution (such as `age`) add up to less
    than 99.5%. A categorical distribution may leave a remainder, which
    becomes the implicit outcome `other`, but a numeric one cannot: there is
    no number to give the rest. Add the missing brackets or fix the
    shares.""",
)
register(
    OVERLAPPING_RANGES,
    "overlapping-ranges",
    """Two brackets of a numeric distribution overlap (brackets include both
    ends, so `18..25` and `25..34` share 25). Each value must fall in one
    bracket: make them `18..24` and `25..34`.""",
)
register(
    REVERSED_RANGE,
    "reversed-range",
    """A range's low end is above its high end (`35..25`), or, where the low
    end must be below the high end (field ranges, `expect ... between a and
    b`), they are equal. Write the smaller number first.""",
)
register(
    SEGMENTS_EXCEED_SIZE,
    "segments-exceed-size",
    """The segments of a population ask for more members than the
    population's `size`. Segment sizes must add up to at most `size`; any
    remainder forms the implicit segment `general`. Raise `size` or lower a
    segment's size.""",
)
register(
    CONSTRAINT_OUTSIDE_SUPPORT,
    "constraint-outside-support",
    """A segment constrains a numeric attribute (such as `age 25..35`) to a
    range in which the demographics has no bracket, so no member could ever
    be sampled. Choose a range that overlaps the distribution's brackets.""",
)
register(
    UNKNOWN_LABEL,
    "unknown-label",
    """A value must be one of a declared set and is not: a segment
    constraint such as `gender female` must name an outcome of that
    distribution in the population's demographics, and `share(field ==
    member)` must name a member of the field's enum. The help line suggests
    close labels.""",
)
register(
    INVALID_DATETIME,
    "invalid-datetime",
    """A date or time is not in the expected format: a world's `start` is
    "YYYY-MM-DD HH:MM" (for example "2025-03-03 08:00") and a variant's
    exact `timing` is "HH:MM" on a 24-hour clock.""",
)
register(
    NO_VARIANTS,
    "no-variants",
    """An intervention has no `variant NAME { content "..." }` block, so
    there is nothing to deliver. Declare at least one variant.""",
)
register(
    FIELD_TYPE_MISMATCH,
    "field-type-mismatch",
    """An analysis does not fit the type of the extracted field: `mean` and
    `median` need an `int` or `float` field; `share` needs a `bool` field or
    `field == member` on an `enum`; `funnel` stages must be `bool` fields;
    `compare` and `summarize` cannot use `text` or `list of text` fields.""",
)
register(
    FIELD_TYPE_CONFLICT,
    "field-type-conflict",
    """One field name is declared with two different types. A field may be
    extracted in several blocks (from different worlds, or from one world at
    different checkpoints, each filling its own field), and the analyses then
    pool its values; that needs one type everywhere: the same kind, the same
    range, the same members. Give the declarations the same type, or rename
    one of the fields.""",
)
register(
    CONTEXT_WITHOUT_GENERATE,
    "context-without-generate",
    """A persona's `context` is the context its generation call sees
    (TinyTroupe's `TinyPersonFactory(context)`); it is only read when the
    persona has `generate "description"`. Add `generate`, or keep the text in
    a persona field such as `other_facts`.""",
)
register(
    CONSTRAINT_WITHOUT_DEMOGRAPHICS,
    "constraint-without-demographics",
    """A segment of a population without `from` constrains an attribute
    (`age 18..30`), but there are no demographics to sample it from: such a
    population's members are generated from its `context` and the
    `particularities` alone. Add `from DEMOGRAPHICS` to the population, or
    describe the segment in words (`particularities "aged 18 to 30"`).""",
)
register(
    VARY_NAME_TAKEN,
    "vary-name-taken",
    """A `vary` dimension becomes an attribute of every member and the
    results' `persona_<name>` column, so its name must not be one already
    taken: a demographics attribute of the population, a persona field
    (`age`, `gender`, `occupation`, `nationality`, `residence`, `education`,
    ...), a result column (`agent`, `name`, `world`, `population`, `segment`,
    `variant`, `replicate`, or a name starting with `variant_` or `persona_`).
    Choose another name.""",
)
register(
    FUNNEL_TOO_SHORT,
    "funnel-too-short",
    """A `funnel` needs at least two stages (`funnel opened, clicked`) to
    show drop-off from one stage to the next.""",
)
register(
    PERCENT_NOT_ALLOWED,
    "percent-not-allowed",
    """A percentage bound is only meaningful for `share(...)`, which is a
    proportion. `mean`, `median` and `count` are compared with plain
    numbers.""",
)
register(
    UNKNOWN_PERSONA_FIELD,
    "unknown-persona-field",
    """A persona or fragment sets a field that is not one of TinyTroupe's
    usual persona fields. It is kept (TinyTroupe personas are free-form JSON
    that the model reads), but it is often a typo: the help line suggests
    close field names.""",
)
register(
    INCOMPLETE_PERSONA,
    "incomplete-persona",
    """A persona who takes part in a world as an agent has no `age` or no
    `occupation` (after its fragments are merged). TinyTroupe reads both to
    introduce the person to the model, and answers are much less specific
    without them.""",
)
register(
    UNUSED_POPULATION,
    "unused-population",
    """A population declared in the scenario file is not an agent of any
    world, so it is never generated and takes no part in the run. Add it to
    a world's `agents`, or remove it.""",
)
register(
    UNUSED_PERSONA,
    "unused-persona",
    """A persona declared in the scenario file is never used: not an agent
    or moderator of any world, not a target, not an interviewer, not
    interviewed and never thinks. Use it or remove it. (Personas of
    imported files are a library and are not reported.)""",
)
register(
    UNANALYSED_FIELD,
    "unanalysed-field",
    """An `int`, `float` or `bool` field is extracted but no statement of the
    `analyze` block uses it. Measured fields are usually extracted to be
    analysed; add `compare`, `summarize`, `funnel` or `expect` for it, or
    drop it. (Text, list and enum fields are often extracted only to be
    read in the report, and are not reported.)""",
)
register(
    UNUSED_WORLD,
    "unused-world",
    """No timeline step (`broadcast`, `ask`, `run`, `deliver`) uses this
    world, so its agents never hear or say anything and extracting from it
    yields nothing.""",
)
register(
    UNDELIVERED_INTERVENTION,
    "undelivered-intervention",
    """An intervention is declared but no `deliver INTERVENTION in WORLD`
    step delivers it, so none of its variants reaches anyone.""",
)
register(
    MANY_ROUNDS,
    "many-rounds",
    """A `run WORLD N rounds` step asks for more than 20 rounds. Every round
    is one model call per agent and conversations rarely gain from that many
    turns; check `tts plan` for the cost.""",
)
register(
    DUPLICATE_PERSONA_NAME,
    "duplicate-persona-name",
    """Two personas that take part in the run have the same `name` (letter
    case aside), in this file, an imported one or an `.agent.json` file.
    Agents address each other by name, and TinyTroupe refuses a second agent
    with a name already in use, so the run adds a number to one of them
    (`NAME 2`). Give each persona its own name.""",
)
register(
    AGENT_FILE_FIELD_TYPE,
    "agent-file-field-type",
    """A `.agent.json` file declared with `persona NAME from "..."` gives one
    of TinyTroupe's usual persona fields a value of another form than
    TinyTroupe's own agents use: `age` that is not a whole number, an
    `occupation` that is neither a string nor an object, `beliefs` that are
    not a list, and so on. The file is used as is (TinyTroupe personas are
    free-form JSON), but the model, TinyTroupe's `minibio` and the result
    columns read these fields as TinyTroupe's forms.""",
)
register(
    MISSING_TOUCH,
    "missing-touch",
    """The variants of a multi-touch intervention do not declare the same
    touches: one variant has a `touch NAME { ... }` block that another lacks
    (or has plain `content` instead). `deliver INTERVENTION.TOUCH` delivers
    that touch to every treated target, each in their own arm, so every arm
    needs it. Add the touch to the variant named, or remove it from the
    others.""",
)
register(
    TOUCH_NOT_NAMED,
    "touch-not-named",
    """`deliver INTERVENTION in WORLD` names an intervention whose variants
    hold several `touch` blocks, so it does not say which message to send.
    Name the touch: `deliver campaign.first in inbox`. The assignment of
    targets to arms is made once per intervention and kept across its
    touches.""",
)
register(
    NOT_MULTI_TOUCH,
    "not-multi-touch",
    """`deliver INTERVENTION.TOUCH in WORLD` names a touch of an intervention
    whose variants have a single `content` and no `touch` blocks. Deliver
    it as `deliver INTERVENTION in WORLD`, or give its variants `touch NAME
    { content "..." }` blocks.""",
)
register(
    CONTENT_AND_TOUCHES,
    "content-and-touches",
    """A variant has both `content` and `touch` blocks. A variant is either
    one message (`content`, with an optional `timing` and `channel`) or a
    sequence of touches, each with its own `content`; keep one form.""",
)
register(
    TURNS_IN_SURVEY,
    "turns-in-survey",
    """A `survey` world sets `turns`. In a survey every agent is alone and
    nobody hears anybody, so the order of turns within a round changes
    nothing. Remove `turns`, or use `mode focus_group` if the agents should
    hear each other.""",
)
register(
    UNUSED_SETTING,
    "unused-setting",
    """A setting that changes nothing where it is written: a `quality`
    block's `threshold` without `judge` (nothing is scored), or a criterion
    listed twice in `judge`. Remove it, or add what it needs.""",
)
register(
    NOT_FOR_LOADED_POPULATION,
    "not-for-loaded-population",
    """A `population NAME from "path"` has a `segment` block or a `vary`
    dimension. Its members are read as they are from the folder or list file,
    so there is nothing to sample into segments or dimensions. Declare one
    `population ... from` per group of files, or generate the population
    (`population NAME { from DEMOGRAPHICS ... }`) to sample it.""",
)
register(
    BAD_MEMBER_ID,
    "bad-member-id",
    """A member read by `population NAME from "path"` has an `id` (or, in a
    folder, a file name) that cannot name an agent: ids start with a letter or
    digit, hold only letters, digits, `_`, `.` and `-`, and are at most 64
    characters long. The agent is `population/ID` and its file
    `personas/population/ID.agent.json`, so spaces and slashes are not
    allowed. Rename it.""",
)
register(
    DUPLICATE_MEMBER,
    "duplicate-member",
    """Two members of a population read from files have the same `id`, or the
    same name (names compared without case). Ids name the agents and their
    result rows; names are how agents address each other, and TinyTroupe
    refuses two agents of one name. Give each member its own.""",
)
register(
    NO_MEMBERS,
    "no-members",
    """`population NAME from "path"` names a folder with no `.agent.json`
    file, or a JSON file holding an empty list. Point it at the people to
    load.""",
)
register(
    DEMOGRAPHICS_TEXT,
    "demographics-text",
    """A note, not a problem: `demographics NAME from "file.json"` read a
    TinyTroupe demography file and kept the keys listed as text for the
    model (shown in every generation prompt), not as distributions to sample:
    strings, lists, maps of lists, share tables whose shares add up to more
    than 100% (several answers per person, such as "High School Graduate or
    Higher" and "Bachelor's Degree or Higher"), and numeric brackets that do
    not cover the whole population.""",
)
register(
    ADULTS_ONLY,
    "adults-only",
    """A note: the population is sampled from a demography file whose `age`
    brackets start below 18 (TinyTroupe's files describe whole countries,
    children included). Members are sampled from 18 up, from the file's own
    age profile, unless a segment constrains `age` itself: write
    `age 0..17` in a segment for a study of children.""",
)
register(
    DISTRIBUTION_RENAMED,
    "distribution-renamed",
    """A note: two keys of a demography file give the same attribute name in
    snake case (for example two `Christian` tables), so the later one is
    named by its whole path (`religion_christian`). Segments constrain it by
    that name.""",
)
register(
    METRIC_WITHOUT_VALIDATE,
    "metric-without-validate",
    """`expect` bounds a validation metric (`ks`, `sd_ratio`, `welch_p`,
    `correlation`, ...) of a field that no `validate` statement before it in
    the `analyze` block compares with real data, or a metric of the other
    kind: `correlation` and `mae` compare group margins (`validate F by G
    against "margins.csv"`), the others real answers (`validate F against
    "real.csv" column "C"`). Metrics take the field alone: no comparison
    inside and no `for`.""",
)
register(
    DATA_FILE,
    "data-file",
    """The real data a `validate` statement names cannot be used: the file
    cannot be read, is not a UTF-8 CSV with a header row, has no column of
    the name given (or no column named like the grouping and no `mean` or
    `share` column, for margins), holds values that are not answers to the
    field (numbers for `int`/`float`, true/false for `bool`, members for
    `enum`; empty cells are missing answers), or too few of them to compare.
    The file is read by `tts check`, and its contents are part of the plan.""",
)
register(
    BAD_EXTERNAL_AGENT,
    "bad-external-agent",
    """An `agent NAME external { ... }` block cannot be used to reach its
    system: the `url` is not an http(s) URL; a property does not apply to the
    `protocol` (`openai_chat` sends the conversation as chat messages and
    reads `choices[0].message.content`, so it takes no `request` or `reply`;
    `http_json` posts the `request` template, so it takes no `model`); the
    `request` is not JSON once its placeholders are filled in, or holds a
    placeholder other than `{session}`, `{message}`, `{turn}` and
    `{env.NAME}`; the `reply` is not a dotted path (`answer.text`,
    `choices.0.text`); or a `header` is not a header name and a string.""",
)
register(
    UNKNOWN_PARAM,
    "unknown-param",
    """`--set NAME=VALUE` names a parameter the scenario does not declare.
    Declare it at the top level, `param NAME "default"`, or correct the
    name (the help line suggests close ones and lists the declared params).""",
)
register(
    PARAM_CYCLE,
    "param-cycle",
    """Parameters use each other in a cycle (`param a "{b}"`, `param b
    "{a}"`), so none of their values can be worked out. A param may use
    others, in any order, as long as no chain leads back to itself; write one
    of the values out.""",
)
register(
    PARAM_LIKE_TEXT,
    "param-like-text",
    """A string holds `{word}` where `word` is not a declared param but is
    close to one. Only `{NAME}` with NAME a declared param is replaced;
    everything else in braces stays as written (so JSON and `{env.X}` are
    safe). Correct the spelling if you meant the param.""",
)
