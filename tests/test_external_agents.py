"""Systems under test: `agent NAME external` on both engines, against real HTTP services.

The model is the deterministic `HashProvider` here (control flow); the bot is real:
`BotServer`, a stateful `http_json` service on loopback, and the llama.cpp server
for `openai_chat` (the normative `advisor_under_test` example, on the embedded model).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.bot_server import BotServer
from tests.conftest import ROOT
from tests.llama_server import embedded_model_server
from tests.test_tinytroupe_engine import HashProvider, needs_tinytroupe
from tiny_dsl.runtime.providers.base import ChatRequest, Message
from tiny_dsl.runtime.providers.external import fill_request, reply_at
from tiny_dsl.session import RunOptions, RunOutcome, Session

ENGINES = ["builtin", pytest.param("tinytroupe", marks=needs_tinytroupe)]

SCENARIO = """\
scenario helpdesk_test {{
  title "Customers push a helpdesk bot"
  seed 4
}}

persona ann {{
  name "Ann Lee"
  age 30
  occupation "Nurse"
}}

persona bob {{
  name "Bob Stone"
  age 40
  occupation "Baker"
}}

agent helpdesk external {{
  url "{url}"
  protocol http_json
  request \"\"\"{{"session": "{{session}}", "message": "{{message}}", "turn": {{turn}}}}\"\"\"
  reply "answer.text"
  header Authorization "Bearer {{env.HELPDESK_TOKEN}}"
  timeout {timeout}
}}

timeline {{
  converse ann, bob with helpdesk 3 turns "Get a refund for a broken phone."
  interview ann by helpdesk "What went wrong?", "Anything else?"
}}

extract from ann, bob {{
  refunded bool "Whether the helpdesk granted the refund"
}}

output {{
  formats [json, messages]
}}
"""

TOKEN = "s3cret-token-value"


def _write(tmp_path: Path, url: str, timeout: int = 5) -> Path:
    path = tmp_path / "helpdesk.tts"
    path.write_text(SCENARIO.format(url=url, timeout=timeout), encoding="utf-8")
    return path


def _run(tmp_path: Path, path: Path, engine: str, **options: Any) -> RunOutcome:
    session = Session(
        root=tmp_path,
        state_dir=tmp_path / ".tts",
        provider_factory=lambda plan, options: HashProvider(),
    )
    run_options = RunOptions(
        engine=engine, quiet=True, output_dir=tmp_path / "outputs", backoff_base_s=0.01, **options
    )
    return session.run(path, run_options)


def _keep_only_the_record(state_dir: Path) -> None:
    """Drop the checkpoints, keep the cache: a replay must then run every step again,
    every answer coming from the record."""
    for path in state_dir.iterdir():
        if path.name != "cache.sqlite":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _files(outcome: RunOutcome) -> dict[str, str]:
    assert outcome.run_dir is not None
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(outcome.run_dir.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------------------- requests


def test_http_json_request_fills_placeholders_escaped_inside_strings() -> None:
    request = ChatRequest(
        messages=(
            Message("user", "first"),
            Message("assistant", "ok"),
            Message("user", 'He said "no"\nthen left'),
        ),
        temperature=0,
        max_tokens=0,
        session="s/1",
    )
    template = '{"session": "{session}", "message": "{message}", "turn": {turn}}'
    assert json.loads(fill_request(template, request)) == {
        "session": "s/1",
        "message": 'He said "no"\nthen left',
        "turn": 2,
    }


def test_reply_path_walks_objects_and_lists() -> None:
    body = {"choices": [{"text": "hi"}], "answer": {"text": "yo"}}
    assert reply_at(body, "choices.0.text") == "hi"
    assert reply_at(body, "answer.text") == "yo"
    assert reply_at(body, "answer.missing") is None
    assert reply_at(body, "choices.3.text") is None


# ------------------------------------------------------------------- conversations


@pytest.mark.parametrize("engine", ENGINES)
def test_each_conversation_has_its_own_session_and_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setenv("HELPDESK_TOKEN", TOKEN)
    with BotServer() as bot:
        path = _write(tmp_path, bot.url)
        outcome = _run(tmp_path, path, engine)
        assert outcome.exit_code == 0, outcome.diagnostics
        manifest = outcome.manifest
        assert manifest is not None
        # Every exchange reached the bot once: 2 people x 3 turns, then 2 interview answers.
        assert bot.served == manifest.external_calls == 8
        sessions = dict(bot.sessions)
    assert len(sessions) == 3  # two conversations and one interview, each its own session
    transcript = [json.loads(line) for line in _files(outcome)["transcript.jsonl"].splitlines()]
    said_by_bot = [e for e in transcript if e["agent"] == "helpdesk" and e["kind"] == "action"]
    # The bot's replies count the session's messages: each conversation's history reached it.
    converse = [e for e in said_by_bot if "converse" in e["step"]]
    assert [e["content"].split(";")[0] for e in converse] == [
        f"Message {n} of this session" for n in (1, 2, 3)
    ] * 2
    for event in converse:
        heard = [
            e
            for e in transcript
            if e["agent"] == event["target"]
            and e["kind"] == "stimulus"
            and e["content"] == event["content"]
        ]
        assert heard and heard[0]["source"] == "helpdesk"
    # What each person said is what its session received, in order.
    for person in ("ann", "bob"):
        said = [
            e["content"]
            for e in transcript
            if e["agent"] == person
            and e["kind"] == "action"
            and e["type"] == "TALK"
            and "converse" in e["step"]
        ]
        assert [s for s in sessions.values() if s[0] == said[0]] == [said]
    # The bot's lines (8 replies, and the interview's 2 questions, which it asks) are
    # rows of the messages dataset, next to the people's.
    rows = [json.loads(line) for line in _files(outcome)["messages.jsonl"].splitlines()]
    assert sum(row["agent"] == "helpdesk" for row in rows) == 10
    # The secret was sent, but is written nowhere.
    for name, text in _files(outcome).items():
        assert TOKEN not in text, name
    assert TOKEN not in (tmp_path / ".tts" / "cache.sqlite").read_bytes().decode("latin-1")
    assert "HELPDESK_TOKEN" in manifest.env_vars


@pytest.mark.parametrize("engine", ENGINES)
def test_replies_are_recorded_so_replay_needs_no_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setenv("HELPDESK_TOKEN", TOKEN)
    with BotServer() as bot:
        path = _write(tmp_path, bot.url)
        first = _run(tmp_path, path, engine)
        assert first.exit_code == 0, first.diagnostics
    # The bot is gone and so is the secret: replay reads every reply from the cache.
    monkeypatch.delenv("HELPDESK_TOKEN")
    _keep_only_the_record(tmp_path / ".tts")
    replayed = _run(tmp_path, path, engine, mode="replay")
    assert replayed.exit_code == 0, replayed.diagnostics
    assert replayed.manifest is not None
    assert replayed.manifest.model_calls == 0
    assert replayed.manifest.external_calls == 0
    assert replayed.manifest.external_cache_hits == 8
    before, after = _files(first), _files(replayed)
    for name in ("results.json", "transcript.jsonl", "messages.jsonl"):
        assert before[name] == after[name], name


def test_plan_lists_external_calls_apart(tmp_path: Path) -> None:
    planned = Session(root=tmp_path).plan(_write(tmp_path, "http://127.0.0.1:9/chat"))
    assert planned.plan is not None
    plan = planned.plan
    assert plan.estimate.external_calls == 8
    converse = next(step for step in plan.steps if step.kind == "converse")
    assert (converse.calls, converse.external_calls) == (6, 6)
    interview = next(step for step in plan.steps if step.kind == "interview")
    assert (interview.calls, interview.external_calls) == (2, 2)
    # The plan holds the template, never a secret.
    agent = plan.external_agents[0]
    assert agent.headers == {"Authorization": "Bearer {env.HELPDESK_TOKEN}"}


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("fault", ["500", "not_json", "close", "hang"])
def test_a_failing_bot_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    monkeypatch.setenv("HELPDESK_TOKEN", TOKEN)
    with BotServer(hang_s=2.5) as bot:
        bot.faults = [fault, fault]  # the first two attempts fail, the third is answered
        outcome = _run(tmp_path, _write(tmp_path, bot.url, timeout=1), "builtin")
        assert outcome.exit_code == 0, outcome.diagnostics
        assert outcome.manifest is not None
        assert outcome.manifest.external_retries == 2


@pytest.mark.parametrize("fault", ["500", "not_json", "close", "hang"])
def test_a_bot_that_keeps_failing_fails_the_step_at_its_statement_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    monkeypatch.setenv("HELPDESK_TOKEN", TOKEN)
    with BotServer(hang_s=2.5) as bot:
        path = _write(tmp_path, bot.url, timeout=1)
        # Three answers, then the bot fails every attempt of every request.
        bot.faults = ["", "", "", *[fault] * 20]
        failed = _run(tmp_path, path, "builtin")
        assert failed.exit_code == 3
        (diagnostic,) = failed.diagnostics
        assert diagnostic.primary is not None
        statement = path.read_text(encoding="utf-8").index("converse ann")
        assert diagnostic.primary.span.start == statement
        text = diagnostic.message
        assert "external agent `helpdesk`" in text and bot.url in text
        expected = {
            "500": "HTTP 500",
            "not_json": "not JSON",
            "close": "connection",
            "hang": "no reply within 1 s",
        }
        assert expected[fault] in text
        assert TOKEN not in text
        # The bot is back: the run resumes; the 3 exchanges it answered are not sent
        # again (a hung request the bot answered too late was never recorded).
        bot.faults = []
        resumed = _run(tmp_path, path, "builtin")
        assert resumed.exit_code == 0, resumed.diagnostics
        assert resumed.manifest is not None
        assert (resumed.manifest.external_calls, resumed.manifest.external_cache_hits) == (5, 3)


def test_a_missing_secret_stops_the_run_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HELPDESK_TOKEN", raising=False)
    with BotServer() as bot:
        outcome = _run(tmp_path, _write(tmp_path, bot.url), "builtin")
        assert bot.served == 0
    assert outcome.exit_code == 3
    message = outcome.diagnostics[0].message
    assert "HELPDESK_TOKEN" in message and "header `Authorization`" in message


# ------------------------------------------- the normative example, on a real llama.cpp server

ADVISOR = ROOT / "scenarios" / "v2" / "advisor_under_test.tts"


@pytest.mark.model
@pytest.mark.server
@pytest.mark.parametrize("engine", ENGINES)
def test_advisor_under_test_runs_against_llama_cpp_and_replays_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(ROOT / "scenarios", workdir / "scenarios")
    monkeypatch.chdir(workdir)
    session = Session(root=workdir, state_dir=Path(".tts"))
    example = Path("scenarios/v2/advisor_under_test.tts")
    with embedded_model_server(n_ctx=2048, log_path=tmp_path / "server.log") as base_url:
        options = RunOptions(
            engine=engine, quiet=True, params={"advisor_url": f"{base_url}/chat/completions"}
        )
        first = session.run(example, options)
    # The assistant's answers are weak; the expectation may fail (exit 1), the run may not.
    assert first.exit_code in (0, 1) and first.manifest is not None, first.diagnostics
    assert first.manifest.status != "failed"
    assert first.manifest.external_calls > 0
    plan = json.loads(_files(first)["plan.json"])
    assert plan["estimate"]["external_calls"] == 9
    # Every reply of the assistant is in the transcript, said to the trader who asked.
    transcript = [json.loads(line) for line in _files(first)["transcript.jsonl"].splitlines()]
    replies = [e for e in transcript if e["agent"] == "advisor"]
    assert len(replies) == first.manifest.external_calls
    assert {e["target"] for e in replies} <= {"hodler", "day_trader", "fud_spreader"}
    # The server is stopped: --replay answers everything from the record.
    _keep_only_the_record(workdir / ".tts")
    replayed = session.run(example, dataclasses.replace(options, mode="replay"))
    assert replayed.exit_code == first.exit_code, replayed.diagnostics
    assert replayed.manifest is not None
    assert (replayed.manifest.model_calls, replayed.manifest.external_calls) == (0, 0)
    before, after = _files(first), _files(replayed)
    for name in ("results.json", "transcript.jsonl", "messages.jsonl"):
        assert before[name] == after[name], name
