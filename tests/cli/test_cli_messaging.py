"""`ac7 push`, `ac7 roster`, `ac7 history` against a real broker subprocess, and their failures."""

from __future__ import annotations

import http.server
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    BrokerProcess,
    Result,
    Team,
    add_slot,
    assert_error,
    clean_env,
    free_port,
    run_ac7,
    setup_team,
)

SENT_RE = re.compile(r"^sent (\S+) \(live on \d+ socket\(s\)\)\n$")


class Live:
    def __init__(self, team: Team, broker: BrokerProcess, work: Path) -> None:
        self.team = team
        self.broker = broker
        self.work = work  # an empty working directory: these verbs need no config file

    def ac7(self, who: str, *args: str, stdin: str | None = None) -> Result:
        """Run a verb as slot `who` against the live broker."""
        token = self.team.tokens[who]
        return run_ac7(
            *args, "--url", self.broker.url, "--token", token, cwd=self.work, env=clean_env(self.work), stdin=stdin
        )

    def history_json(self, who: str, *args: str) -> list[dict[str, object]]:
        result = self.ac7(who, "history", "--json", "--limit", "1000", *args)
        assert result.code == 0, str(result)
        messages: list[dict[str, object]] = json.loads(result.out)["messages"]
        return messages


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory = tmp_path_factory.mktemp("team")
    team = setup_team(directory)
    add_slot(team, "bob", "--role", "engineer", "--role-description", "Writes and tests code")
    add_slot(team, "carol", "--role", "engineer", "--authority", "manager")
    broker = BrokerProcess(team.config, team.dir, team.env).start()
    try:
        yield Live(team, broker, tmp_path_factory.mktemp("work"))
    finally:
        broker.stop()


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


# --- roster ----------------------------------------------------------------------------------------------------


def test_roster_lists_every_slot(live: Live) -> None:
    result = live.ac7("bob", "roster")
    assert result.code == 0, str(result)
    rows = {line.split()[0]: line.split() for line in result.out.splitlines()}
    assert rows == {
        "alice": ["alice", "lead", "director", "offline"],
        "bob": ["bob", "engineer", "individual-contributor", "offline"],
        "carol": ["carol", "engineer", "manager", "offline"],
    }


def test_roster_json(live: Live) -> None:
    result = live.ac7("alice", "roster", "--json")
    assert result.code == 0, str(result)
    mates = json.loads(result.out)
    assert {m["name"]: (m["role"], m["authority"]) for m in mates} == {
        "alice": ("lead", "director"),
        "bob": ("engineer", "individual-contributor"),
        "carol": ("engineer", "manager"),
    }
    assert all(not m["connected"] and m["busy"] is False for m in mates)  # nobody holds a socket


def test_url_and_token_come_from_the_environment(live: Live) -> None:
    env = clean_env(live.work, {"AC7_URL": live.broker.url, "AC7_TOKEN": live.team.tokens["carol"]})
    result = run_ac7("roster", "--json", cwd=live.work, env=env)
    assert result.code == 0, str(result)
    assert {m["name"] for m in json.loads(result.out)} == {"alice", "bob", "carol"}
    # ...and the flags win over the environment.
    bad_env = clean_env(live.work, {"AC7_URL": "http://127.0.0.1:1", "AC7_TOKEN": "ac7_" + "x" * 43})
    flagged = run_ac7(
        "roster", "--url", live.broker.url, "--token", live.team.tokens["carol"], cwd=live.work, env=bad_env
    )
    assert flagged.code == 0, str(flagged)


# --- push and history -----------------------------------------------------------------------------------------


def test_a_direct_message_reaches_the_recipients_history_only(live: Live) -> None:
    body = unique("review my branch")
    sent = live.ac7("alice", "push", "--to", "bob", "--title", "PR", "--level", "warning", body)
    assert sent.code == 0, str(sent)
    match = SENT_RE.match(sent.out)
    assert match is not None, sent.out
    message_id = match.group(1)

    bob_view = [m for m in live.history_json("bob") if m["body"] == body]
    assert len(bob_view) == 1
    message = bob_view[0]
    assert message["id"] == message_id
    assert (message["from"], message["to"], message["title"], message["level"]) == ("alice", "bob", "PR", "warning")
    assert [m["id"] for m in live.history_json("alice") if m["body"] == body] == [message_id]
    assert [m for m in live.history_json("carol") if m["body"] == body] == []

    text = live.ac7("bob", "history")
    assert text.code == 0, str(text)
    line = next(ln for ln in text.out.splitlines() if body in ln)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  alice -> bob  warning: \[PR\] ", line), line
    assert body not in live.ac7("carol", "history").out


def test_a_broadcast_reaches_everyone(live: Live) -> None:
    body = unique("standup in 5")
    sent = live.ac7("bob", "push", body)
    assert sent.code == 0, str(sent)
    for who in ("alice", "bob", "carol"):
        found = [m for m in live.history_json(who) if m["body"] == body]
        assert len(found) == 1, who
        assert found[0]["from"] == "bob"
        assert found[0]["to"] is None
        assert found[0]["level"] == "info"
    text = live.ac7("carol", "history")
    assert any(body in ln and "bob (all)" in ln for ln in text.out.splitlines()), text.out


def test_push_reads_the_body_from_stdin(live: Live) -> None:
    body = unique("from a pipe") + "\nsecond line\n"
    sent = live.ac7("carol", "push", "--to", "alice", "-", stdin=body)
    assert sent.code == 0, str(sent)
    assert [m["body"] for m in live.history_json("alice", "--with", "carol") if m["body"] == body] == [body]


def test_push_attaches_data(live: Live) -> None:
    body = unique("with data")
    sent = live.ac7("alice", "push", "--to", "carol", "--data", '{"pr": 42, "tags": ["x"]}', body)
    assert sent.code == 0, str(sent)
    found = [m for m in live.history_json("carol") if m["body"] == body]
    assert found[0]["data"] == {"pr": 42, "tags": ["x"]}


def test_push_with_invalid_data_json_sends_nothing(live: Live) -> None:
    body = unique("never sent")
    result = live.ac7("alice", "push", "--data", "{not json", body)
    assert_error(result, "--data")
    assert [m for m in live.history_json("alice") if m["body"] == body] == []


def test_push_to_an_unknown_slot_is_the_brokers_404(live: Live) -> None:
    assert_error(live.ac7("alice", "push", "--to", "nobody", unique("lost")), "broker answered 404")


def test_history_with_a_slot_shows_only_that_thread(live: Live) -> None:
    dm = unique("just for carol")
    other = unique("just for bob")
    assert live.ac7("alice", "push", "--to", "carol", dm).code == 0
    assert live.ac7("alice", "push", "--to", "bob", other).code == 0
    thread = live.history_json("alice", "--with", "carol")
    bodies = [m["body"] for m in thread]
    assert dm in bodies
    assert other not in bodies
    assert all({m["from"], m["to"]} == {"alice", "carol"} for m in thread)


def test_history_pages_with_before(live: Live) -> None:
    first, second = unique("older"), unique("newer")
    assert live.ac7("bob", "push", "--to", "carol", first).code == 0
    assert live.ac7("bob", "push", "--to", "carol", second).code == 0
    page = live.ac7("carol", "history", "--with", "bob", "--limit", "1")
    assert page.code == 0, str(page)
    assert second in page.out
    assert first not in page.out
    cursor = re.search(r"--before (\S+)\)", page.err)
    assert cursor is not None, page.err
    older = live.ac7("carol", "history", "--with", "bob", "--limit", "1", "--before", cursor.group(1))
    assert older.code == 0, str(older)
    assert first in older.out


# --- failures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("roster",), ("history",), ("push", "hello")], ids=" ".join)
def test_a_wrong_token_is_the_brokers_401(live: Live, args: tuple[str, ...]) -> None:
    wrong = "ac7_" + "A" * 43
    result = run_ac7(*args, "--url", live.broker.url, "--token", wrong, cwd=live.work, env=clean_env(live.work))
    line = assert_error(result, "ac7: broker answered 401: ")
    assert len(line) > len("ac7: broker answered 401: ")
    assert wrong not in line


@pytest.mark.parametrize("args", [("roster",), ("history",), ("push", "hello")], ids=" ".join)
def test_a_broker_that_is_not_running_is_one_line(tmp_path: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_ac7(*args, "--url", url, "--token", "ac7_" + "x" * 43, cwd=tmp_path, env=env)
    assert_error(result, "cannot reach the broker", url)


@pytest.mark.parametrize(
    "args",
    [("history", "--before", "not-a-cursor"), ("history", "--with", "not a name!"), ("push", "")],
    ids=" ".join,
)
def test_requests_the_broker_rejects_are_its_400_in_one_line(live: Live, args: tuple[str, ...]) -> None:
    assert_error(live.ac7("alice", *args), "broker answered 400: ")


def test_url_flag_is_checked(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("roster", "--url", "127.0.0.1:8717", "--token", "ac7_x", cwd=tmp_path, env=env)
    assert_error(result, "--url")


def test_default_url_is_the_local_broker_port(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_ac7("roster", "--help", cwd=tmp_path, env=env)
    assert "http://127.0.0.1:8717" in result.out


def test_a_non_numeric_port_in_the_url_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    """A typo in --url (`:87l7`) must read as an ac7 error, not a Python traceback."""
    result = run_ac7("roster", "--url", "http://127.0.0.1:87l7", "--token", "ac7_x", cwd=tmp_path, env=env)
    assert_error(result)


def test_a_token_with_a_line_break_is_one_line(live: Live) -> None:
    """A token pasted with a line break (or other control characters) cannot be sent as a header: say so plainly."""
    token = live.team.tokens["alice"] + "\nsecond-line"
    result = run_ac7("roster", "--url", live.broker.url, "--token", token, cwd=live.work, env=clean_env(live.work))
    assert_error(result)
    assert live.team.tokens["alice"] not in result.err


class _NotABroker(http.server.BaseHTTPRequestHandler):
    """Some other web server on the port --url names: 200 with an HTML page for everything."""

    def _page(self) -> None:
        body = b"<!doctype html><title>not ac7</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _page
    do_POST = _page

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def not_a_broker() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotABroker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("args", [("roster",), ("history",), ("push", "hello")], ids=" ".join)
def test_a_url_that_is_not_an_ac7_broker_is_one_line(
    tmp_path: Path, env: dict[str, str], not_a_broker: str, args: tuple[str, ...]
) -> None:
    result = run_ac7(*args, "--url", not_a_broker, "--token", "ac7_" + "x" * 43, cwd=tmp_path, env=env)
    assert_error(result)
