"""People and demographics from files: `persona NAME from "f" { ... }`, `population NAME
from "path"` (folders, lists, persona databases) and `demographics NAME from "file.json"`
on TinyTroupe's own demography files; located diagnostics in the JSON files; plans and
runs of loaded members on the built-in engine (TinyTroupe: tests/test_tinytroupe_engine.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.test_runtime import run, scripted_client, sent
from tests.test_tinytroupe_engine import HashProvider, needs_tinytroupe
from tests.test_tinytroupe_engine import run as run_on_tinytroupe
from tiny_dsl.checks import CheckResult, check_file, codes
from tiny_dsl.checks import model as m
from tiny_dsl.diagnostics import Severity, render_text
from tiny_dsl.plan import compile_plan
from tiny_dsl.plan.model import GenerateStep, Plan
from tiny_dsl.plan.render import render_plan
from tiny_dsl.source import SourceFile
from tiny_dsl.syntax.formatter import format_source

CASES = ROOT / "tests" / "cases"
POPULATIONS = CASES / "tinytroupe_populations"
WORLD = 'world room { mode survey; agents %s }\ntimeline { ask room "Hello?" }\n'


def _write(directory: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content, indent=2)
        path.write_text(text, encoding="utf-8")


def _scenario(body: str, agents: str) -> str:
    return 'scenario s { title "S" }\n' + body + "\n" + WORLD % agents


def _check(directory: Path, body: str, agents: str) -> CheckResult:
    (directory / "main.tts").write_text(_scenario(body, agents), encoding="utf-8")
    return check_file(directory / "main.tts")


def _plan(directory: Path, body: str, agents: str) -> Plan:
    result = _check(directory, body, agents)
    assert result.ok, render_text(result.diagnostics, result.sources)
    return compile_plan(result.require_program())


def _agent(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "TinyPerson", "persona": {"name": name, **fields}}


def _problems(result: CheckResult) -> list[tuple[str, int, int, str]]:
    return [
        (Path(d.primary.span.file).name, d.primary.span.line, d.primary.span.column, d.code)
        for d in result.diagnostics
        if d.primary is not None and d.severity is not Severity.NOTE
    ]


# ------------------------------------------------------------ the persona database


def test_persona_database_with_twenty_mistakes_reports_all_twenty_where_they_are() -> None:
    result = check_file(CASES / "people" / "database.tts")
    name = "persona_database_20_mistakes.json"
    expected = [
        (4, 10, "E345"),  # id with a space
        (5, 10, "E345"),  # id starting with `-`
        (6, 10, "E345"),  # id of 65 characters
        (7, 10, "E346"),  # duplicate id
        (8, 27, "E346"),  # duplicate name, another case
        (9, 51, "E304"),  # temperature 2.5
        (10, 52, "E304"),  # temperature -0.1
        (11, 52, "E303"),  # temperature "hot"
        (12, 3, "E306"),  # no name
        (13, 3, "E306"),  # no id
        (14, 25, "E303"),  # name 42
        (15, 47, "E303"),  # model 7
        (16, 43, "W110"),  # age "forty"
        (17, 49, "W110"),  # skills "cooking"
        (18, 83, "W110"),  # personality.goals a string (TinyTroupe's long_term_goals)
        (19, 10, "E303"),  # id true
        (20, 52, "E303"),  # temperature null
        (21, 3, "E303"),  # a string, not a person
        (22, 3, "E212"),  # an agent specification of type Fragment
        (23, 10, "E346"),  # a third `ana`
    ]
    assert _problems(result) == [(name, *item) for item in expected]
    # The JSON file is a source: each problem is shown with its line and a caret.
    text = render_text(result.diagnostics, result.sources)
    assert '9 |   {"id": "dan", "name": "Dan Hot", "temperature": 2.5},' in text
    assert "  |                                                   ^^^ out of range" in text
    duplicate = next(d for d in result.diagnostics if d.primary and d.primary.span.line == 7)
    assert duplicate.secondary[0].span.line == 3 and "first used here" in text
    assert result.program is None


def test_a_persona_database_maps_onto_tinytroupe_fields_with_model_and_temperature(
    tmp_path: Path,
) -> None:
    record = {
        "id": "ana",
        "name": "Ana Lima",
        "role": "Nurse",
        "description": "Night shifts at a city hospital.",
        "personality": {"traits": ["calm"], "goals": ["buy a house"], "style": "brief"},
        "model": "gpt-4o-mini",
        "temperature": 0.3,
        "hobby": "chess",
    }
    other = {"id": "ben", "name": "Ben Okafor", "role": "Teacher"}
    _write(tmp_path, {"db.json": [record, other]})
    plan = _plan(tmp_path, 'population staff from "db.json"', "staff")
    ana, ben = plan.agents
    assert (ana.id, ana.kind, ana.population, ana.segment) == (
        "staff/ana",
        "member",
        "staff",
        "general",
    )
    assert ana.persona == {
        "name": "Ana Lima",
        "occupation": {"title": "Nurse", "description": "Night shifts at a city hospital."},
        "personality": {"traits": ["calm"]},
        "long_term_goals": ["buy a house"],
        "style": "brief",
        "hobby": "chess",
    }
    assert (ana.model, ana.temperature) == ("gpt-4o-mini", 0.3)
    assert (ben.model, ben.temperature) == (None, None)
    # Loaded members are whole: no generate step, no calls to make them.
    assert not any(isinstance(step, GenerateStep) for step in plan.steps)
    assert plan.populations[0].source_path == "db.json"  # as written, whatever the cwd
    assert "population staff: 2 members from db.json" in render_plan(plan)
    assert [step.calls for step in plan.steps] == [2]  # the two members' answers, nothing else


def test_population_model_and_temperature_override_the_members(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {"db.json": [{"id": "a", "name": "A", "temperature": 0.1}, {"name": "B", "id": "b"}]},
    )
    body = 'population staff from "db.json" { model "m-2"; temperature 1.5 }'
    plan = _plan(tmp_path, body, "staff")
    assert [(a.model, a.temperature) for a in plan.agents] == [("m-2", 1.5), ("m-2", 1.5)]


# ------------------------------------------------------------------- folders, lists


def test_a_folder_of_agent_files_in_file_name_order_with_ids_from_the_stems(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "people/b_oscar.agent.json": _agent("Oscar", age=30),
            "people/a_lisa.agent.json": _agent("Lisa", age=28),
            "people/notes.txt": "not a person",
        },
    )
    plan = _plan(tmp_path, 'population team from "people"', "team")
    assert [a.id for a in plan.agents] == ["team/a_lisa", "team/b_oscar"]
    assert plan.agents[0].persona == {"name": "Lisa", "age": 28}


def test_a_list_of_agent_specifications_or_personas_numbers_members_by_position(
    tmp_path: Path,
) -> None:
    _write(
        tmp_path, {"specs.json": [_agent("Lisa"), _agent("Oscar")], "bare.json": [{"name": "Ana"}]}
    )
    plan = _plan(tmp_path, 'population a from "specs.json"\npopulation b from "bare.json"', "a, b")
    assert [a.id for a in plan.agents] == ["a/001", "a/002", "b/001"]
    assert plan.agents[2].persona == {"name": "Ana"}


def test_size_is_a_seeded_sample_in_file_order(tmp_path: Path) -> None:
    people = [{"id": f"p{i:02d}", "name": f"Person {i}"} for i in range(30)]
    _write(tmp_path, {"db.json": people})
    first = _plan(tmp_path, 'population p from "db.json" { size 10 }', "p")
    again = _plan(tmp_path, 'population p from "db.json" { size 10 }', "p")
    ids = [a.id for a in first.agents]
    assert ids == [a.id for a in again.agents] and len(ids) == 10
    assert ids == sorted(ids)  # file order
    assert ids != [f"p/p{i:02d}" for i in range(10)]  # a sample, not the first ten
    reseeded = tmp_path / "main.tts"
    reseeded.write_text(reseeded.read_text().replace('title "S"', 'title "S"; seed 7'))
    other = compile_plan(check_file(reseeded).require_program())
    assert [a.id for a in other.agents] != ids


def test_a_runs_personas_folder_loads_back_as_the_same_people(tmp_path: Path) -> None:
    """A generated population's `personas/<population>/` is a `population ... from` folder."""
    _write(tmp_path, {"main.tts": ""})
    body = "demographics town { age { 20..60 100% } }\npopulation crowd { from town; size 3 }"
    generated = _plan(tmp_path, body, "crowd")
    outcome = run(generated, scripted_client(), tmp_path / "first")
    saved = outcome.run_dir / "personas" / "crowd"
    shutil.copytree(saved, tmp_path / "crowd")
    reloaded = _plan(tmp_path, 'population again from "crowd"', "again")
    personas = {
        path.stem.removesuffix(".agent"): json.loads(path.read_text())["persona"]
        for path in saved.iterdir()
    }
    assert [a.id for a in reloaded.agents] == [f"again/{key}" for key in sorted(personas)]
    assert [a.persona for a in reloaded.agents] == [personas[key] for key in sorted(personas)]


def test_loaded_members_answer_as_themselves_on_the_builtin_engine(tmp_path: Path) -> None:
    _write(tmp_path, {"db.json": [{"id": "ana", "name": "Ana Lima", "role": "Nurse"}]})
    plan = _plan(tmp_path, 'population staff from "db.json"', "staff")
    client = scripted_client()
    outcome = run(plan, client, tmp_path)
    purposes = [request.purpose for request in sent(client)]
    assert purposes == ["act staff/ana"]  # no generation call
    prompt = "\n".join(message.content for message in sent(client)[0].messages)
    assert "Ana Lima" in prompt and "Nurse" in prompt
    saved = outcome.run_dir / "personas" / "staff" / "ana.agent.json"
    assert json.loads(saved.read_text())["persona"]["occupation"]["title"] == "Nurse"


# ---------------------------------------------------------------------- problems


def test_invalid_json_in_a_folder_is_shown_where_it_broke(tmp_path: Path) -> None:
    _write(tmp_path, {"people/a.agent.json": '{"type": "TinyPerson",\n "persona": {"name": "A",}}'})
    result = _check(tmp_path, 'population p from "people"', "p")
    assert _problems(result) == [("a.agent.json", 2, 26, codes.INVALID_JSON)]
    assert result.diagnostics[0].secondary[0].span.file.endswith("main.tts")


def test_a_file_stem_that_cannot_be_an_id_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, {"people/Ana Lima.agent.json": _agent("Ana")})
    result = _check(tmp_path, 'population p from "people"', "p")
    assert [d.code for d in result.diagnostics] == [codes.BAD_MEMBER_ID]
    assert "file name" in result.diagnostics[0].help[0]


def test_segments_vary_empty_sources_and_oversized_samples_are_errors(tmp_path: Path) -> None:
    _write(tmp_path, {"db.json": [{"name": "A"}], "empty.json": []})
    body = (
        'population p from "db.json" {\n  size 5\n  segment young { size 1 }\n'
        '  vary hobby "their hobby"\n}\npopulation q from "empty.json"'
    )
    result = _check(tmp_path, body, "p, q")
    assert [(d.code, d.primary.span.line) for d in result.diagnostics if d.primary] == [
        (codes.OUT_OF_RANGE, 3),
        (codes.NOT_FOR_LOADED_POPULATION, 4),
        (codes.NOT_FOR_LOADED_POPULATION, 5),
        (codes.NO_MEMBERS, 7),
    ]
    assert "holds 1 people" in result.diagnostics[0].message


def test_fragment_conflicts_in_a_loaded_population_are_located(tmp_path: Path) -> None:
    _write(tmp_path, {"db.json": [{"name": "A", "style": "terse"}, {"name": "B"}]})
    body = 'fragment chatty { style "chatty" }\npopulation p from "db.json" { fragments [chatty] }'
    result = _check(tmp_path, body, "p")
    conflicts = [d for d in result.diagnostics if d.code == codes.MERGE_CONFLICT]
    assert len(conflicts) == 1 and conflicts[0].primary is not None
    assert conflicts[0].primary.span.line == 3  # the `fragments [chatty]` of the population


# ------------------------------------------------------------- persona from { ... }


def test_persona_from_with_overrides_and_fragments(tmp_path: Path) -> None:
    oscar = _agent(
        "Oscar",
        age=30,
        occupation={"title": "Architect", "organization": "Awesome Inc."},
        preferences={"interests": ["design"], "likes": ["coffee"]},
        other_facts=["Oscar grew up in Lisbon."],
    )
    _write(tmp_path, {"oscar.agent.json": oscar})
    body = (
        'fragment calm { beliefs ["Slow is smooth."] }\n'
        'persona otto from "oscar.agent.json" {\n  name "Otto"\n'
        '  occupation { title "Engineer" }\n  interests ["bridges"]\n  fragments [calm]\n}'
    )
    plan = _plan(tmp_path, body, "otto")
    spec = plan.agents[0].persona
    assert spec is not None
    assert spec["name"] == "Otto" and spec["age"] == 30
    assert spec["occupation"] == {"title": "Engineer"}  # replaced whole, not merged
    assert spec["preferences"] == {"interests": ["bridges"], "likes": ["coffee"]}
    assert spec["beliefs"] == ["Slow is smooth."]
    assert spec["other_facts"] == ["Oscar grew up in Lisbon."]  # mentions the old name: kept
    assert plan.agents[0].fragment_names == ["calm"]


def test_persona_from_override_conflicting_with_a_fragment_is_located(tmp_path: Path) -> None:
    _write(tmp_path, {"oscar.agent.json": _agent("Oscar")})
    body = (
        'fragment f { style "loud" }\n'
        'persona otto from "oscar.agent.json" {\n  style "quiet"\n  fragments [f]\n}'
    )
    result = _check(tmp_path, body, "otto")
    conflict = next(d for d in result.diagnostics if d.code == codes.MERGE_CONFLICT)
    lines = {label.span.line for label in conflict.secondary} | {conflict.primary.span.line}
    assert {4, 5} <= lines  # the override and the fragments list


def test_file_forms_are_formatted_canonically_and_idempotently() -> None:
    text = (
        'demographics usa   from "usa.json"\n'
        'population panel from "people/" {}\n'
        'population db from "db.json" {size 20   # a sample\n context "x"}\n'
        'persona otto from "oscar.agent.json" { name "Otto"; fragments [calm] }\n'
    )
    formatted, problems = format_source(SourceFile("a.tts", text))
    assert problems == []
    assert formatted == (
        'demographics usa from "usa.json"\n'
        'population panel from "people/"\n'
        "\n"
        'population db from "db.json" {\n  size 20  # a sample\n  context "x"\n}\n'
        "\n"
        'persona otto from "oscar.agent.json" {\n  name "Otto"\n  fragments [calm]\n}\n'
    )
    assert format_source(SourceFile("a.tts", formatted))[0] == formatted


# ------------------------------------------------------------- demography files


def _demographics(tmp_path: Path, country: str, population: str = "") -> CheckResult:
    shutil.copy(POPULATIONS / f"{country}.json", tmp_path / f"{country}.json")
    body = f'demographics {country} from "{country}.json"\n' + (
        population or f"population people {{ from {country}; size 50 }}"
    )
    return _check(tmp_path, body, "people")


def _distributions(result: CheckResult, name: str) -> dict[str, m.Distribution]:
    program = result.require_program()
    return {d.attribute: d for d in program.demographics[name].distributions}


SHARED = [
    "age",
    "gender",
    "racial_and_ethnic_composition",
    "household_income",
    "regions",
    "marital_status",
]


@pytest.mark.parametrize(
    ("country", "distributions", "as_text"),
    [
        (
            "usa",
            [*SHARED, "viewed_as_top_policy_priority"],
            [
                "Political Affiliation (shares add up to 124.1%",
                "Educational Attainment (shares",
                "Employment Status (shares add up to 65.9%: not one answer per person)",
            ],
        ),
        (
            "spain",
            [*SHARED, "political_affiliation"],
            ["Educational Attainment (shares add up to 121%", "Religion"],
        ),
        (
            "brazil",
            [
                *SHARED,
                "language_spoken_at_home",
                "housing_tenure",
                "political_affiliation",
            ],
            ["Educational Attainment (shares add up to 167%", "Political Demographics"],
        ),
    ],
)
def test_tinytroupe_demography_files(
    tmp_path: Path, country: str, distributions: list[str], as_text: list[str]
) -> None:
    result = _demographics(tmp_path, country)
    found = _distributions(result, country)
    assert list(found) == distributions
    age = found["age"]
    assert [(s.label, s.low, s.high) for s in age.shares][-1] == ("65+", 65.0, 99.0)
    assert (age.shares[0].low, age.shares[0].high) == (0.0, 14.0)
    assert sum(s.share for s in found["gender"].shares) == pytest.approx(1.0)
    # One note lists every key taken as text, at the `from` string.
    notes = [d for d in result.diagnostics if d.code == codes.DEMOGRAPHICS_TEXT]
    assert len(notes) == 1 and notes[0].primary is not None
    assert notes[0].primary.span.line == 2 and notes[0].severity is Severity.NOTE
    listed = notes[0].notes[1]
    for key in ["Demographics > Country", "Personality Traits", *as_text]:
        assert key in listed
    # The text is what the generation prompt shows as the demographics' description.
    description = result.require_program().demographics[country].description
    assert "Personality Traits:" in description and "Population Size:" in description
    assert "Age Distribution" not in description
    # The adults rule: every member from 18 up, and a note says so.
    plan = compile_plan(result.require_program())
    assert min(agent.attributes["age"] for agent in plan.agents) >= 18
    assert any(d.code == codes.ADULTS_ONLY for d in result.diagnostics)


def test_a_segment_that_asks_for_children_gets_children(tmp_path: Path) -> None:
    population = "population people { from usa; size 20; segment kids { size 20; age 0..14 } }"
    result = _demographics(tmp_path, "usa", population)
    plan = compile_plan(result.require_program())
    assert max(agent.attributes["age"] for agent in plan.agents) <= 14
    assert not any(d.code == codes.ADULTS_ONLY for d in result.diagnostics)


def test_usa_political_affiliation_at_124_percent_is_text_not_sampled(tmp_path: Path) -> None:
    result = _demographics(tmp_path, "usa")
    program = result.require_program()
    assert "political_affiliation" not in _distributions(result, "usa")
    assert "Political Affiliation:" in program.demographics["usa"].description
    assert "Democrat: 45.1%" in program.demographics["usa"].description


def test_two_keys_with_one_name_the_second_gets_its_path(tmp_path: Path) -> None:
    content = {
        "content": {
            "Christian": {"Yes": "60%", "No": "40%"},
            "Religion": {"Christian": {"Catholic": "50%", "Protestant": "50%"}, "Note": "x"},
        }
    }
    _write(tmp_path, {"d.json": content})
    result = _check(tmp_path, 'demographics d from "d.json"\npopulation p { from d; size 2 }', "p")
    assert list(_distributions(result, "d")) == ["christian", "religion_christian"]
    renamed = [d for d in result.diagnostics if d.code == codes.DISTRIBUTION_RENAMED]
    assert len(renamed) == 1 and renamed[0].secondary[0].span.file.endswith("d.json")
    assert renamed[0].secondary[0].span.line == 8  # the key `"Christian"` inside `Religion`


# ------------------------------------------------------------------ TinyTroupe


@needs_tinytroupe
def test_loaded_members_are_real_tinypersons_from_their_persona(tmp_path: Path) -> None:
    record = {"id": "ana", "name": "Ana Lima", "role": "Nurse", "personality": {"style": "brief"}}
    _write(tmp_path, {"db.json": [record, {"id": "ben", "name": "Ben Okafor"}]})
    plan = _plan(tmp_path, 'population staff from "db.json"', "staff")
    provider = HashProvider()
    result, _client = run_on_tinytroupe(plan, tmp_path / "tt", provider)
    assert result.manifest.engine == "tinytroupe"
    # No generation: each member acts once as the person read from the file.
    assert sorted(r.purpose for r in provider.requests) == ["act staff/ana", "act staff/ben"]
    ana = next(r for r in provider.requests if r.purpose == "act staff/ana")
    prompt = "\n".join(message.content for message in ana.messages)
    assert "Ana Lima" in prompt and "Nurse" in prompt
    saved = result.run_dir / "personas" / "staff" / "ana.agent.json"
    persona = json.loads(saved.read_text())["persona"]
    assert persona["name"] == "Ana Lima" and persona["occupation"] == {"title": "Nurse"}
    assert persona["style"] == "brief"
