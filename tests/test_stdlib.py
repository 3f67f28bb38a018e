"""The bundled standard library: fragments, demographics and archetypes.

These tests read the stdlib through the parser and the syntax tree only, so
they state what the library promises to scenario authors independently of the
semantic checker: every file parses cleanly and documents itself, fragments
merge with anything (they set no scalar field), demographic distributions add
up to 100% with contiguous age brackets, and the archetype personas that the
normative examples use exist, with unique full names.

The sampling tests at the end go through the checker and the plan compiler:
populations drawn from each demographics file match its declared shares
(chi-square goodness of fit over 10,000 seeded members, at the 1% level), and
segment constraints hold for every member.
"""

from __future__ import annotations

import functools
import json
import re
import tempfile
from collections import Counter
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.chi_square import chi_square_p
from tests.conftest import ROOT
from tiny_dsl.checks import check_file
from tiny_dsl.checks.model import Demographics, Distribution
from tiny_dsl.diagnostics import render_text
from tiny_dsl.plan import Plan, compile_plan
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax import ast, parse

STDLIB = ROOT / "stdlib"
ALL_FILES = sorted(STDLIB.glob("**/*.tts"))

REQUIRED_FRAGMENTS = {
    "health_conscious",
    "tech_savvy",
    "price_sensitive",
    "environmental_aware",
    "loving_parent",
    "budget_conscious",
    "time_constrained",
}
# Fragments that scenarios combine: they must merge without a scalar conflict.
COMBINED_FRAGMENTS = [
    ("health_conscious", "time_constrained"),
    ("loving_parent", "budget_conscious"),
]
# A fragment may only add to lists (and personality traits, a list in a map).
FRAGMENT_LIST_FIELDS = {
    "interests",
    "likes",
    "dislikes",
    "beliefs",
    "skills",
    "other_facts",
    "long_term_goals",
    "behaviors",
}

DEMOGRAPHICS = ["usa", "eu", "uk", "brazil", "india", "japan"]
DISTRIBUTIONS = ["age", "gender", "region", "income", "education", "occupation"]
TOLERANCE = 0.5

ARCHETYPE_FILES = ["traders", "patients", "shoppers", "voters"]
REQUIRED_TRADERS = {"hodler", "day_trader", "fud_spreader", "institutional_analyst"}


def load(path: Path) -> ast.Module:
    source = SourceFile(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
    module, diagnostics = parse(source)
    assert not diagnostics, render_text(diagnostics, {source.path: source})
    assert module.complete
    return module


def entries(block: ast.Block) -> dict[str, ast.Property | ast.SubBlock | ast.NamedBlock]:
    result: dict[str, ast.Property | ast.SubBlock | ast.NamedBlock] = {}
    for entry in block.entries:
        key = ast.key_text(entry.kind if isinstance(entry, ast.NamedBlock) else entry.key)
        assert key not in result, f"`{key}` appears twice"
        result[key] = entry
    return result


def declarations(path: Path, kind: type) -> dict[str, ast.Declaration]:
    return {d.name.name: d for d in load(path).declarations if isinstance(d, kind)}


def all_personas() -> list[tuple[str, str, ast.PersonaInline]]:
    found = []
    for path in ALL_FILES:
        for declaration in load(path).declarations:
            if isinstance(declaration, ast.PersonaInline):
                found.append((path.name, declaration.name.name, declaration))
    return found


# ------------------------------------------------------------------ every file


def test_the_expected_files_exist() -> None:
    expected = {
        "fragments.tts",
        *(f"demographics/{name}.tts" for name in DEMOGRAPHICS),
        *(f"archetypes/{name}.tts" for name in ARCHETYPE_FILES),
    }
    present = {path.relative_to(STDLIB).as_posix() for path in ALL_FILES}
    assert expected <= present


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.relative_to(STDLIB).as_posix())
def test_file_parses_cleanly_and_is_documented(path: Path) -> None:
    module = load(path)
    assert module.declarations
    text = path.read_text(encoding="utf-8")
    header = re.match(r"(#[^\n]*\n)+", text)
    assert header is not None, "the file must start with a documentation comment"
    documentation = header.group(0)
    assert documentation.count("\n") >= 5, "the documentation comment is too short"
    assert "import" in documentation, "the documentation must show how to import the module"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.relative_to(STDLIB).as_posix())
def test_file_layout(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\t" not in text and "\r" not in text
    for number, line in enumerate(text.split("\n"), start=1):
        assert line == line.rstrip(), f"line {number}: trailing spaces"
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"line {number}: indentation is not a multiple of 2"
    assert "\n\n\n" not in text, "at most one blank line between declarations"


def test_declaration_names_are_unique_across_the_stdlib() -> None:
    seen: dict[tuple[str, str], str] = {}
    for path in ALL_FILES:
        for declaration in load(path).declarations:
            name = getattr(declaration, "name", None)
            if name is None:
                continue
            key = (type(declaration).__name__, name.name)
            assert key not in seen, f"{key} declared in {seen[key]} and {path.name}"
            seen[key] = path.name


# ------------------------------------------------------------------- fragments


def fragments() -> dict[str, ast.FragmentInline]:
    return declarations(STDLIB / "fragments.tts", ast.FragmentInline)  # type: ignore[return-value]


def test_fragments_count_and_required_names() -> None:
    found = fragments()
    assert len(found) >= 16
    assert set(found) >= REQUIRED_FRAGMENTS, REQUIRED_FRAGMENTS - set(found)


def fragment_lists(fragment: ast.FragmentInline) -> dict[str, ast.ListValue]:
    """Every list a fragment adds, by field; fails on anything that is not a list."""
    lists: dict[str, ast.ListValue] = {}
    for key, entry in entries(fragment.body).items():
        if key == "personality":
            assert isinstance(entry, ast.SubBlock), "`personality` must be a block"
            inner = entries(entry.body)
            assert set(inner) == {"traits"}, "a fragment's personality may only add traits"
            traits = inner["traits"]
            assert isinstance(traits, ast.Property) and isinstance(traits.value, ast.ListValue)
            lists["personality.traits"] = traits.value
            continue
        assert key in FRAGMENT_LIST_FIELDS, f"`{key}` is not a list field a fragment may set"
        assert isinstance(entry, ast.Property) and isinstance(entry.value, ast.ListValue), key
        lists[key] = entry.value
    return lists


@pytest.mark.parametrize("name", sorted(fragments()))
def test_fragment_sets_only_non_empty_lists_of_strings(name: str) -> None:
    lists = fragment_lists(fragments()[name])
    assert len(lists) >= 4, "a fragment should describe a person from several angles"
    assert "behaviors" in lists
    for key, listed in lists.items():
        assert listed.items, f"`{key}` is empty"
        for item in listed.items:
            assert isinstance(item, ast.Str) and item.value.strip(), f"`{key}`: {item}"


def test_fragment_items_are_distinct() -> None:
    seen: dict[str, str] = {}
    for name, fragment in fragments().items():
        for key, listed in fragment_lists(fragment).items():
            for item in listed.items:
                assert isinstance(item, ast.Str)
                text = item.value.lower()
                assert text not in seen, f"{name}.{key} repeats {seen[text]}: {item.value!r}"
                seen[text] = f"{name}.{key}"


def as_data(node: ast.Value | ast.Block) -> object:
    """A fragment body as the JSON-like object TinyTroupe merges."""
    if isinstance(node, ast.Block):
        return {
            ast.key_text(e.key): as_data(e.body if isinstance(e, ast.SubBlock) else e.value)
            for e in node.entries
            if not isinstance(e, ast.NamedBlock)
        }
    if isinstance(node, ast.ListValue):
        return [as_data(item) for item in node.items]
    if isinstance(node, ast.Str | ast.Number):
        return node.value
    return repr(node)


def merge(base: object, extra: object, path: str = "") -> object:
    """TinyTroupe fragment semantics: lists append, maps merge, scalars must agree."""
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = merge(base[key], value, f"{path}.{key}") if key in base else value
        return merged
    if isinstance(base, list) and isinstance(extra, list):
        return [*base, *extra]
    assert base == extra, f"conflicting values for `{path.lstrip('.')}`"
    return base


@pytest.mark.parametrize("pair", COMBINED_FRAGMENTS, ids="+".join)
def test_commonly_combined_fragments_merge(pair: tuple[str, str]) -> None:
    found = fragments()
    first, second = (as_data(found[name].body) for name in pair)
    merged = merge(first, second)
    assert isinstance(merged, dict) and isinstance(first, dict) and isinstance(second, dict)
    for key in set(first) & set(second) - {"personality"}:
        assert len(merged[key]) == len(first[key]) + len(second[key])


def _lists(spec: dict[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """Every list in a persona spec, by dotted path (`personality.traits`)."""
    found: dict[str, list[Any]] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            found.update(_lists(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            found[f"{prefix}{key}"] = value
    return found


def test_every_pair_of_fragments_merges(tmp_path: Path) -> None:
    """Any two stdlib fragments can be given to one persona: the checker merges them
    without a conflict, and the persona gets every item of both."""
    names = sorted(fragments())
    pairs = list(combinations(names, 2))
    personas = "\n".join(
        f'persona p{index} {{ name "P {index}"; age 40; occupation "Clerk"; '
        f"fragments [{first}, {second}] }}"
        for index, (first, second) in enumerate(pairs)
    )
    path = tmp_path / "pairs.tts"
    path.write_text(
        f'scenario pairs {{ }}\nimport "stdlib/fragments.tts"\n{personas}\n', encoding="utf-8"
    )
    result = check_file(path)
    assert [d for d in result.diagnostics if d.is_error] == []
    program = result.require_program()
    added = {name: _lists(program.fragments[name].spec) for name in names}
    for index, (first, second) in enumerate(pairs):
        merged = _lists(program.personas[f"p{index}"].spec)
        for key in added[first].keys() | added[second].keys():
            both = added[first].get(key, []) + added[second].get(key, [])
            assert merged[key] == both, (first, second, key)


# ---------------------------------------------------------------- demographics


def demographics(name: str) -> ast.Demographics:
    found = declarations(STDLIB / "demographics" / f"{name}.tts", ast.Demographics)
    assert list(found) == [name]
    return found[name]  # type: ignore[return-value]


def distribution(block: ast.SubBlock) -> list[tuple[ast.Key, float]]:
    shares = []
    for entry in block.body.entries:
        assert isinstance(entry, ast.Property), f"{entry} is not `outcome share`"
        assert isinstance(entry.value, ast.Percent), ast.key_text(entry.key)
        assert entry.value.value > 0
        shares.append((entry.key, entry.value.value))
    return shares


@pytest.mark.parametrize("name", DEMOGRAPHICS)
def test_demographics_descriptive_fields(name: str) -> None:
    fields = entries(demographics(name).body)
    for key in ("title", "description", "source"):
        entry = fields.get(key)
        assert isinstance(entry, ast.Property) and isinstance(entry.value, ast.Str), key
        assert entry.value.value.strip()


@pytest.mark.parametrize("name", DEMOGRAPHICS)
@pytest.mark.parametrize("attribute", DISTRIBUTIONS)
def test_distribution_adds_up_to_100(name: str, attribute: str) -> None:
    block = entries(demographics(name).body).get(attribute)
    assert isinstance(block, ast.SubBlock), f"no `{attribute}` distribution"
    shares = distribution(block)
    assert len(shares) >= 2
    assert sum(share for _, share in shares) == pytest.approx(100, abs=TOLERANCE)
    labels = [ast.key_text(key) for key, _ in shares]
    assert len(labels) == len(set(labels)), "duplicate outcome"
    if attribute != "age":
        assert all(isinstance(key, ast.Ident | ast.Str) for key, _ in shares)


@pytest.mark.parametrize("name", DEMOGRAPHICS)
def test_age_brackets_are_adult_contiguous_and_ordered(name: str) -> None:
    block = entries(demographics(name).body)["age"]
    assert isinstance(block, ast.SubBlock)
    brackets = []
    for key, _ in distribution(block):
        assert isinstance(key, ast.Range), ast.key_text(key)
        low, high = key.low.value, key.high.value
        assert isinstance(low, int) and isinstance(high, int)
        assert low <= high
        brackets.append((low, high))
    assert brackets[0][0] == 18
    assert 85 <= brackets[-1][1] <= 110
    for (_, previous_high), (low, _) in pairwise(brackets):
        assert low == previous_high + 1, f"gap or overlap before {low}"


@pytest.mark.parametrize("name", DEMOGRAPHICS)
def test_occupation_has_about_a_dozen_groups(name: str) -> None:
    block = entries(demographics(name).body)["occupation"]
    assert isinstance(block, ast.SubBlock)
    assert 9 <= len(distribution(block)) <= 16


# ------------------------------------------------------------------ archetypes


def test_archetype_files_define_four_to_six_personas() -> None:
    for name in ARCHETYPE_FILES:
        found = declarations(STDLIB / "archetypes" / f"{name}.tts", ast.PersonaInline)
        assert 4 <= len(found) <= 6, name


def test_required_traders_exist() -> None:
    found = declarations(STDLIB / "archetypes" / "traders.tts", ast.PersonaInline)
    assert set(found) >= REQUIRED_TRADERS, REQUIRED_TRADERS - set(found)


def test_archetypes_are_self_contained() -> None:
    for file, name, persona in all_personas():
        assert "fragments" not in entries(persona.body), f"{file}: {name} uses fragments"


@pytest.mark.parametrize(
    "persona", [p for _, _, p in all_personas()], ids=[n for _, n, _ in all_personas()]
)
def test_persona_is_complete(persona: ast.PersonaInline) -> None:
    fields = entries(persona.body)
    name = fields.get("name")
    assert isinstance(name, ast.Property) and isinstance(name.value, ast.Str)
    assert len(name.value.value.split()) >= 2, "a full name"
    age = fields.get("age")
    assert isinstance(age, ast.Property) and isinstance(age.value, ast.Number)
    assert isinstance(age.value.value, int) and 18 <= age.value.value <= 100
    occupation = fields.get("occupation")
    assert isinstance(occupation, ast.SubBlock)
    assert {"title", "organization", "description"} <= set(entries(occupation.body))
    personality = fields.get("personality")
    assert isinstance(personality, ast.SubBlock)
    big_five = entries(personality.body).get("big_five")
    assert isinstance(big_five, ast.SubBlock)
    assert set(entries(big_five.body)) == {
        "openness",
        "conscientiousness",
        "extraversion",
        "agreeableness",
        "neuroticism",
    }
    for key in (
        "interests",
        "likes",
        "dislikes",
        "beliefs",
        "skills",
        "behaviors",
        "relationships",
        "other_facts",
        "long_term_goals",
    ):
        entry = fields.get(key)
        assert isinstance(entry, ast.Property) and isinstance(entry.value, ast.ListValue), key
        assert entry.value.items, key


def test_persona_full_names_are_unique_across_the_stdlib() -> None:
    seen: dict[str, str] = {}
    for file, name, persona in all_personas():
        entry = entries(persona.body)["name"]
        assert isinstance(entry, ast.Property) and isinstance(entry.value, ast.Str)
        full = entry.value.value
        assert full not in seen, f"{full!r}: {seen[full]} and {file}:{name}"
        seen[full] = f"{file}:{name}"
    assert len(seen) >= 16


# -------------------------------------------------------------------- sampling

DRAWS = 10_000
SIGNIFICANCE = 0.01
# Segment constraints, as the population below writes them: an age range, a
# single age, and the first two outcomes of every categorical distribution.
AGE_RANGE = (30, 45)
SINGLE_AGE = 40
SEGMENT_SIZE = 300


@functools.cache
def sampled(name: str) -> tuple[Demographics, Plan]:
    """The checked demographics `name` and the plan of a scenario sampling from it:
    `everyone` (DRAWS members, no segment) and `segmented` (constrained segments)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sampling.tts"
        path.write_text(sampling_scenario(name), encoding="utf-8")
        result = check_file(path)
        errors = [d for d in result.diagnostics if d.is_error]
        assert not errors, render_text(errors, result.sources)
        program = result.require_program()
    return program.demographics[name], compile_plan(program)


def sampling_scenario(name: str) -> str:
    labels = {
        attribute: [ast.key_text(key) for key, _ in distribution(block)[:2]]
        for attribute, block in entries(demographics(name).body).items()
        if isinstance(block, ast.SubBlock) and attribute != "age"
    }
    picked = "\n".join(
        f"    {attribute} [{', '.join(json.dumps(label) for label in two)}]"
        for attribute, two in labels.items()
    )
    low, high = AGE_RANGE
    return f"""scenario sampling_{name} {{
  title "Sampling from {name}"
  seed 11
}}

import "stdlib/demographics/{name}.tts"

population everyone {{
  from {name}
  size {DRAWS}
}}

population segmented {{
  from {name}
  size {3 * SEGMENT_SIZE}
  segment age_range {{
    size {SEGMENT_SIZE}
    age {low}..{high}
  }}
  segment single_age {{
    size {SEGMENT_SIZE}
    age {SINGLE_AGE}
  }}
  segment two_of_each {{
    size {SEGMENT_SIZE}
{picked}
  }}
}}

world market {{
  mode survey
  agents everyone, segmented
}}

timeline {{
  broadcast market "Hello."
}}
"""


def outcome(value: object, of: Distribution) -> str | None:
    """The declared outcome a sampled value belongs to (its bracket, or its label), or None."""
    if not of.is_numeric:
        return str(value) if any(share.label == value for share in of.shares) else None
    assert isinstance(value, int)
    return next(
        (
            share.label
            for share in of.shares
            if share.low is not None and share.high is not None and share.low <= value <= share.high
        ),
        None,
    )


@pytest.mark.parametrize("name", DEMOGRAPHICS)
@pytest.mark.parametrize("attribute", DISTRIBUTIONS)
def test_sampled_members_match_the_declared_shares(name: str, attribute: str) -> None:
    base, plan = sampled(name)
    of = next(d for d in base.distributions if d.attribute == attribute)
    members = [agent for agent in plan.agents if agent.population == "everyone"]
    assert len(members) == DRAWS
    observed = Counter(outcome(member.attributes[attribute], of) for member in members)
    p_value = chi_square_p(observed, {share.label: share.share for share in of.shares})
    assert p_value > SIGNIFICANCE, f"{name}.{attribute}: p = {p_value:.4f}, {observed}"


@pytest.mark.parametrize("name", DEMOGRAPHICS)
def test_segment_constraints_hold_for_every_member(name: str) -> None:
    base, plan = sampled(name)
    segmented = [agent for agent in plan.agents if agent.population == "segmented"]
    by_segment = Counter(agent.segment for agent in segmented)
    assert by_segment == dict.fromkeys(("age_range", "single_age", "two_of_each"), SEGMENT_SIZE)
    declared = {d.attribute: d for d in base.distributions}
    first_two = {
        attribute: {share.label for share in of.shares[:2]}
        for attribute, of in declared.items()
        if not of.is_numeric
    }
    for member in segmented:
        assert set(member.attributes) == set(declared)
        for attribute, value in member.attributes.items():
            assert outcome(value, declared[attribute]) is not None, (member.id, attribute, value)
        age = member.attributes["age"]
        if member.segment == "age_range":
            assert AGE_RANGE[0] <= age <= AGE_RANGE[1]
        elif member.segment == "single_age":
            assert age == SINGLE_AGE
        else:
            for attribute, allowed in first_two.items():
                assert member.attributes[attribute] in allowed, (member.id, attribute)
