"""What Claude Code gets from `ac7 claude-code`: its command line and environment (DESIGN §6 "Child environment").

First the pure functions of `claude_invocation`, then the real runner with the fake claude recording what it got.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import stat
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import certifi
import pytest
from cryptography import x509
from fake_claude import World, flag_values

from ac7_cli.runner.claude_invocation import (
    APPEND_PROMPT,
    MCP_CONFIG,
    SKIP_PERMISSIONS,
    UNSAFE_TLS_BANNER,
    child_env,
    claude_argv,
    host_of,
    system_roots,
    write_bundle,
)
from ac7_cli.runner.session_ca import SessionCA, pem_certificates

MCP_FILE = Path("/run/ac7-runner-1-x/mcp-ac7.json")
TRACED = ("anthropic.com", "localhost")


def _count(argv: list[str], flag: str) -> int:
    return sum(1 for a in argv if a == flag or a.startswith(flag + "="))


# --- claude_argv ------------------------------------------------------------------------------------------------


def test_argv_injects_all_three_before_the_users_args() -> None:
    argv, notes = claude_argv("claude", ["-p", "say hi"], "BRIEF", skip_permissions=True, mcp_config=MCP_FILE)
    assert argv[0] == "claude"
    assert argv[-2:] == ["-p", "say hi"]
    assert flag_values(argv, MCP_CONFIG) == [str(MCP_FILE)]
    assert flag_values(argv, APPEND_PROMPT) == ["BRIEF"]
    assert _count(argv, SKIP_PERMISSIONS) == 1
    assert len(argv) in (1 + 5 + 2, 1 + 4 + 2)  # nothing else: `--mcp-config F` or `--mcp-config=F`
    assert len(notes) == 3
    assert any(SKIP_PERMISSIONS in n for n in notes)
    assert any(MCP_CONFIG in n for n in notes)
    (brief_note,) = [n for n in notes if APPEND_PROMPT in n]
    assert "BRIEF" not in brief_note and "5 chars" in brief_note  # the banner summarises, never prints the prompt


@pytest.mark.parametrize(
    "user",
    [
        ["--dangerously-skip-permissions", "-p", "hi"],
        ["-p", "hi", "--append-system-prompt", "mine"],
        ["--append-system-prompt=mine", "-p", "hi"],
        ["--model", "haiku", "--dangerously-skip-permissions", "--append-system-prompt", "mine", "-p", "hi"],
    ],
)
def test_a_flag_the_user_passed_is_not_injected_again(user: list[str]) -> None:
    argv, _ = claude_argv("claude", user, "BRIEF", skip_permissions=True, mcp_config=MCP_FILE)
    assert argv[-len(user) :] == user, "the user's arguments, verbatim and in order, last"
    assert _count(argv, SKIP_PERMISSIONS) == 1
    assert _count(argv, APPEND_PROMPT) == 1
    if any(a.startswith(APPEND_PROMPT) for a in user):
        assert "BRIEF" not in argv


def test_keep_permissions_and_an_empty_briefing_inject_only_the_mcp_config() -> None:
    argv, notes = claude_argv("claude", ["-p", "hi"], "", skip_permissions=False, mcp_config=MCP_FILE)
    assert SKIP_PERMISSIONS not in argv
    assert _count(argv, APPEND_PROMPT) == 0
    assert flag_values(argv, MCP_CONFIG) == [str(MCP_FILE)]
    assert len(notes) == 1


def test_without_an_mcp_config_none_is_passed() -> None:
    argv, _ = claude_argv("claude", [], "BRIEF", skip_permissions=True, mcp_config=None)
    assert _count(argv, MCP_CONFIG) == 0


def _positionals_as_claude_parses_them(argv: list[str]) -> list[str]:
    """Claude Code's parser (commander): `--mcp-config <configs...>` is variadic, so after `--mcp-config X` every
    following argument up to the next option is another config file. `--mcp-config=X` takes exactly one."""
    takes_one = {"--append-system-prompt", "--model", "-p", "--print"}
    positionals: list[str] = []
    variadic = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        if variadic and not arg.startswith("-"):
            i += 1
            continue
        variadic = False
        if arg == MCP_CONFIG:
            variadic = True
            i += 2
            continue
        if arg in takes_one - {"-p", "--print"}:
            i += 2
            continue
        if not arg.startswith("-"):
            positionals.append(arg)
        i += 1
    return positionals


@pytest.mark.parametrize(
    ("user", "instructions", "skip"),
    [
        (["fix the build", "--dangerously-skip-permissions", "--append-system-prompt", "be brief"], "BRIEF", True),
        (["fix the build", "--append-system-prompt", "be brief"], "BRIEF", False),
        (["fix the build"], "", False),
    ],
    ids=["user-passed-both", "keep-permissions-own-prompt", "keep-permissions-empty-briefing"],
)
def test_the_injected_mcp_config_never_swallows_the_users_prompt(
    user: list[str], instructions: str, skip: bool
) -> None:
    # Checked against the real Claude Code 2.1.328: `claude --mcp-config F "fix the build"` fails with
    # 'MCP config file not found: .../fix the build'; `claude --mcp-config=F "fix the build"` runs the prompt.
    argv, _ = claude_argv("claude", user, instructions, skip_permissions=skip, mcp_config=MCP_FILE)
    assert _positionals_as_claude_parses_them(argv) == ["fix the build"], argv


def test_the_commander_model_matches_the_default_injection() -> None:
    # The model above must accept what the runner does by default (a flag always follows `--mcp-config F`).
    argv, _ = claude_argv("claude", ["fix the build"], "BRIEF", skip_permissions=True, mcp_config=MCP_FILE)
    assert _positionals_as_claude_parses_them(argv) == ["fix the build"]


# --- host_of ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://API.Example.com:8443/v1", "api.example.com"),
        ("https://localhost:1234", "localhost"),
        ("http://[::1]:80/x", "::1"),
        ("", None),
        ("not a url", None),
        ("http://[::1", None),
    ],
)
def test_host_of(url: str, host: str | None) -> None:
    assert host_of(url) == host


# --- child_env ----------------------------------------------------------------------------------------------------


def _traced_env(parent: Mapping[str, str], hosts: tuple[str, ...] = TRACED, **kw: Any) -> dict[str, str]:
    return child_env(
        parent,
        proxy_url="http://ac7:pw@127.0.0.1:4321",
        ca_cert=Path("/t/ca.pem"),
        trust_bundle=Path("/t/bundle.pem"),
        traced_hosts=hosts,
        unsafe_tls=kw.get("unsafe_tls", False),
    )


def test_child_env_routes_through_the_proxy_and_keeps_the_rest() -> None:
    parent = {"PATH": "/bin", "HOME": "/h", "NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca-certificates.crt"}
    env = _traced_env(parent)
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://ac7:pw@127.0.0.1:4321"
    assert env["NODE_EXTRA_CA_CERTS"] == "/t/ca.pem"  # overrides an inherited one
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == "/t/bundle.pem"
    assert env["PATH"] == "/bin" and env["HOME"] == "/h"
    assert "NODE_TLS_REJECT_UNAUTHORIZED" not in env
    assert "NO_PROXY" not in env and "no_proxy" not in env  # never invented
    assert parent == {"PATH": "/bin", "HOME": "/h", "NODE_EXTRA_CA_CERTS": "/etc/ssl/certs/ca-certificates.crt"}


def test_child_env_unsafe_tls_only_when_asked() -> None:
    assert _traced_env({}, unsafe_tls=True)["NODE_TLS_REJECT_UNAUTHORIZED"] == "0"
    assert "NODE_TLS_REJECT_UNAUTHORIZED" not in _traced_env({})


def test_child_env_without_tracing_adds_nothing() -> None:
    parent = {"PATH": "/bin", "NO_PROXY": "localhost", "HTTPS_PROXY": "http://corp:3128"}
    env = child_env(parent, proxy_url=None, ca_cert=None, trust_bundle=None, traced_hosts=[], unsafe_tls=False)
    assert env == parent
    env = child_env(parent, proxy_url=None, ca_cert=None, trust_bundle=None, traced_hosts=[], unsafe_tls=True)
    assert env == {**parent, "NODE_TLS_REJECT_UNAUTHORIZED": "0"}


@pytest.mark.parametrize("var", ["NO_PROXY", "no_proxy"])
def test_traced_hosts_are_taken_out_of_no_proxy(var: str) -> None:
    parent = {var: "localhost, example.org,.anthropic.com,API.anthropic.com:443,10.0.0.1,,sub.localhost"}
    env = _traced_env(parent)
    assert [e.strip() for e in env[var].split(",")] == ["example.org", "10.0.0.1"]


def _bypasses(no_proxy: str, host: str) -> bool:
    """Whether a client honouring NO_PROXY as Claude Code does sends `host` direct, skipping the proxy. Observed
    with the real Claude Code 2.1.328 (HTTPS_PROXY set, base URL https://127.0.0.1:9): `*`, space-separated
    entries (`localhost 127.0.0.1`) and CIDR ranges (`127.0.0.0/8`) all bypass the proxy."""
    for entry in re.split(r"[,\s]+", no_proxy.strip()):
        entry = entry.lower().lstrip(".").split(":")[0] if entry.count(":") <= 1 else entry.lower()
        if not entry:
            continue
        if entry == "*" or host == entry or host.endswith("." + entry):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            pass
    return False


@pytest.mark.parametrize(
    ("no_proxy", "hosts", "host"),
    [
        ("localhost,127.0.0.1", TRACED, "localhost"),  # the model agrees with the case the runner handles
        ("*", TRACED, "api.anthropic.com"),
        (".anthropic.com localhost example.org", TRACED, "api.anthropic.com"),
        ("127.0.0.0/8", ("anthropic.com", "127.0.0.1"), "127.0.0.1"),
    ],
    ids=["comma-list", "star", "space-separated", "cidr"],
)
def test_no_no_proxy_form_lets_a_traced_host_skip_the_proxy(no_proxy: str, hosts: tuple[str, ...], host: str) -> None:
    assert _bypasses(no_proxy, host), "the NO_PROXY model itself is wrong"
    env = _traced_env({"NO_PROXY": no_proxy, "no_proxy": no_proxy}, hosts)
    for var in ("NO_PROXY", "no_proxy"):
        assert not _bypasses(env[var], host), f"{var}={env[var]!r} sends traced {host} around the trace host"


# --- trust bundle -------------------------------------------------------------------------------------------------


def test_system_roots_prefers_ssl_cert_file_then_the_default(tmp_path: Path) -> None:
    mine = tmp_path / "corp.pem"
    mine.write_bytes(b"corp roots")
    assert system_roots({"SSL_CERT_FILE": str(mine)}) == mine
    fallback = system_roots({"SSL_CERT_FILE": str(tmp_path / "missing.pem")})
    assert fallback is not None and fallback.is_file() and fallback != tmp_path / "missing.pem"
    assert system_roots({}) == fallback


def test_write_bundle_is_roots_plus_the_session_ca_and_private(tmp_path: Path) -> None:
    ca = SessionCA.generate(["anthropic.com"])
    roots = tmp_path / "roots.pem"
    roots.write_bytes(Path(certifi.where()).read_bytes().rstrip(b"\n"))  # no trailing newline
    bundle = write_bundle(tmp_path, roots, ca.cert_pem)
    data = bundle.read_bytes()
    blocks = pem_certificates(data)
    assert data.endswith(ca.cert_pem)
    assert set(pem_certificates(roots.read_bytes())) <= set(blocks)
    assert len(blocks) == len(pem_certificates(roots.read_bytes())) + 1
    assert b"PRIVATE KEY" not in data
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    other = tmp_path / "other"
    other.mkdir()
    assert write_bundle(other, None, ca.cert_pem).read_bytes() == ca.cert_pem


# --- the real runner ----------------------------------------------------------------------------------------------

pytest_slow = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with World.running(tmp_path) as w:
        yield w


def _default_roots() -> Path:
    """The roots the runner's child would have trusted (the runner runs without SSL_CERT_FILE)."""
    cafile = ssl.get_default_verify_paths().openssl_cafile
    return Path(cafile) if cafile and Path(cafile).is_file() else Path(certifi.where())


def _proxy_port(run_err: str) -> int:
    match = re.search(r"through 127\.0\.0\.1:(\d+)", run_err)
    assert match, run_err
    return int(match.group(1))


@pytest_slow
def test_what_claude_gets(world: World) -> None:
    marker = f"invocation-{uuid.uuid4().hex}"
    user = ["-p", "say hi", "--model", "haiku"]
    run = world.run("--", *user, fake={**world.request_vars(marker), "MCP": "1", "EXIT": "0"})
    assert run.code == 0, str(run)
    record = run.record()
    assert record is not None
    argv, env = record["argv"], record["env"]

    # The command line: ours first, the user's after, verbatim.
    assert argv[0] == str(world.claude)
    assert argv[-len(user) :] == user
    assert _count(argv, SKIP_PERMISSIONS) == 1
    assert flag_values(argv, APPEND_PROMPT) == [world.briefing("ivy")["instructions"]]
    assert all(
        i < len(argv) - len(user) for i, a in enumerate(argv) if a.startswith((MCP_CONFIG, APPEND_PROMPT, "--dang"))
    )
    (config_path,) = flag_values(argv, MCP_CONFIG)
    assert record["cwd"] == str(world.project)

    # The private --mcp-config file: only ac7's server, 0600 in the 0700 session dir.
    (private,) = record["mcp_configs"]
    assert private["path"] == config_path
    assert private["mode"] == 0o600 and private["dir_mode"] == 0o700
    assert Path(config_path).parent.name.startswith("ac7-runner-")
    servers = json.loads(private["text"])["mcpServers"]
    assert list(servers) == ["ac7"]
    entry = servers["ac7"]
    assert Path(entry["command"]).name == "ac7" and os.access(entry["command"], os.X_OK)
    assert entry["args"] == ["mcp-bridge"]
    assert set(entry["env"]) == {"AC7_RUNNER_SOCKET", "AC7_RUNNER_KEY"}
    assert len(entry["env"]["AC7_RUNNER_KEY"]) >= 32
    assert record["runner_socket"]["is_socket"] and record["runner_socket"]["mode"] == 0o600
    assert Path(entry["env"]["AC7_RUNNER_SOCKET"]).parent == Path(config_path).parent

    # The project's .mcp.json during the session: the user's content plus the same ac7 entry, 0600 (it holds
    # the key).
    merged = json.loads(record["mcp_json"]["text"])
    assert merged["x-note"] == "keep me"
    assert merged["mcpServers"]["other"] == {"command": "true", "args": ["-x"]}
    assert merged["mcpServers"]["ac7"] == entry
    assert record["mcp_json"]["mode"] == 0o600

    # That entry really runs ac7's MCP server, connected to this runner.
    mcp = record["mcp"]
    assert "error" not in mcp, f"{mcp}\n{run}"
    assert set(mcp["tools"]) == {"roster", "send", "broadcast", "recent"}
    assert not mcp["roster_error"] and "alice" in mcp["roster_text"] and "ivy" in mcp["roster_text"]

    # The environment: the proxy, the session CA, the bundle.
    # The proxy URL carries per-session credentials (the fake's request below proves they are accepted), and
    # they appear nowhere in what the runner printed.
    port = _proxy_port(run.err)
    assert env["HTTPS_PROXY"] == env["https_proxy"]
    proxy = re.fullmatch(rf"http://ac7:([A-Za-z0-9_-]{{43}})@127\.0\.0\.1:{port}", env["HTTPS_PROXY"])
    assert proxy, env["HTTPS_PROXY"]
    assert proxy.group(1) not in run.err + run.out
    ca = record["node_extra_ca_certs"]
    assert ca["exists"] and ca["mode"] == 0o600 and ca["dir_mode"] == 0o700
    assert Path(ca["path"]).parent.name.startswith("ac7-ca-")
    assert Path(ca["path"]).parent.parent == world.tmp_root
    assert "BEGIN CERTIFICATE" in ca["text"] and "PRIVATE KEY" not in ca["text"]
    cert = x509.load_pem_x509_certificate(ca["text"].encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    bundle = record["ssl_cert_file"]
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == bundle["path"]
    assert bundle["mode"] == 0o600
    blocks = set(pem_certificates(bundle["text"].encode()))
    assert set(pem_certificates(ca["text"].encode())) <= blocks
    assert set(pem_certificates(_default_roots().read_bytes())) <= blocks
    assert "PRIVATE KEY" not in bundle["text"]
    assert "NODE_TLS_REJECT_UNAUTHORIZED" not in env
    assert UNSAFE_TLS_BANNER not in run.err

    # The fake claude, trusting only NODE_EXTRA_CA_CERTS, reached the fake API through the proxy, traced.
    assert record["request"].get("status") == 200, record["request"]
    assert len(world.exchanges_with(marker)) == 1

    # Nothing of it outlives the session.
    for path in (ca["path"], bundle["path"], config_path, entry["env"]["AC7_RUNNER_SOCKET"]):
        assert not Path(path).exists(), path
    assert world.leftovers() == []


@pytest_slow
@pytest.mark.parametrize(
    ("args", "skip", "prompt"),
    [
        ((), 1, "brief"),
        (("--", "--dangerously-skip-permissions", "-p", "x"), 1, "brief"),
        (("--keep-permissions", "--", "-p", "x"), 0, "brief"),
        (("--", "--append-system-prompt", "mine", "-p", "x"), 1, "mine"),
    ],
    ids=["default", "user-skip", "keep-permissions", "user-prompt"],
)
def test_injected_flags_in_the_real_runner(world: World, args: tuple[str, ...], skip: int, prompt: str) -> None:
    run = world.run(*args, fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    argv = run.record()["argv"]  # type: ignore[index]
    assert _count(argv, SKIP_PERMISSIONS) == skip
    expected = world.briefing()["instructions"] if prompt == "brief" else prompt
    assert flag_values(argv, APPEND_PROMPT) == [expected]
    assert len(flag_values(argv, MCP_CONFIG)) == 1
    user = list(args[args.index("--") + 1 :]) if "--" in args else []
    assert argv[len(argv) - len(user) :] == user


@pytest_slow
def test_no_proxy_is_trimmed_so_the_agent_is_still_traced(world: World) -> None:
    marker = f"no-proxy-{uuid.uuid4().hex}"
    no_proxy = "localhost,example.org,.anthropic.com,api.anthropic.com:443,10.0.0.1"
    run = world.run(
        extra_env={"NO_PROXY": no_proxy, "no_proxy": no_proxy}, fake={**world.request_vars(marker), "EXIT": "0"}
    )
    assert run.code == 0, str(run)
    env = run.record()["env"]  # type: ignore[index]
    assert env["NO_PROXY"] == env["no_proxy"] == "example.org,10.0.0.1"
    # The fake claude honours no_proxy as any client does; localhost (the fake API) went through the proxy.
    assert len(world.exchanges_with(marker)) == 1, str(run)


@pytest_slow
def test_unsafe_tls(world: World) -> None:
    run = world.run("--unsafe-tls", fake={"EXIT": "0"})
    assert run.code == 0, str(run)
    assert run.record()["env"]["NODE_TLS_REJECT_UNAUTHORIZED"] == "0"  # type: ignore[index]
    assert UNSAFE_TLS_BANNER in run.err, str(run)
    assert all(line[0] in "+|" for line in UNSAFE_TLS_BANNER.splitlines())


@pytest_slow
def test_no_trace(world: World) -> None:
    mine = "/etc/ssl/certs/ca-certificates.crt"
    run = world.run("--no-trace", extra_env={"NODE_EXTRA_CA_CERTS": mine}, fake={"MCP": "1", "EXIT": "0"})
    assert run.code == 0, str(run)
    record = run.record()
    assert record is not None
    env = record["env"]
    for var in ("HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_TLS_REJECT_UNAUTHORIZED"):
        assert var not in env, var
    assert env["NODE_EXTRA_CA_CERTS"] == mine  # the user's own, untouched
    assert not [n for n in record["tmpdir"] if n.startswith("ac7-ca-")], record["tmpdir"]
    assert "tracing" not in run.err
    # Messaging still works: the MCP entry, the bridge and the system prompt are all there.
    assert set(record["mcp"]["tools"]) == {"roster", "send", "broadcast", "recent"}, record["mcp"]
    assert "ac7" in json.loads(record["mcp_json"]["text"])["mcpServers"]
    assert flag_values(record["argv"], APPEND_PROMPT)
    assert world.leftovers() == []


@pytest_slow
def test_the_trust_bundle_serves_python_clients_and_ssl_cert_file_verifies_upstream(world: World) -> None:
    # The user's SSL_CERT_FILE (a corporate bundle that happens to hold the fake API's CA) is what the runner
    # verifies upstream with (no --upstream-ca), and the child's SSL_CERT_FILE bundle holds it plus the session
    # CA: a Python client using the default trust store gets through the trace host.
    corp = world.root / "corp-bundle.pem"
    corp.write_bytes(Path(certifi.where()).read_bytes() + world.pki.ca_pem_path.read_bytes())
    marker = f"bundle-{uuid.uuid4().hex}"
    run = world.run(
        extra_env={"SSL_CERT_FILE": str(corp)},
        fake={**world.request_vars(marker), "TRUST": "bundle", "EXIT": "0"},
        upstream_ca=False,
    )
    assert run.code == 0, str(run)
    record = run.record()
    assert record is not None
    assert record["request"].get("status") == 200, record["request"]
    blocks = set(pem_certificates(record["ssl_cert_file"]["text"].encode()))
    assert set(pem_certificates(corp.read_bytes())) <= blocks
    assert set(pem_certificates(record["node_extra_ca_certs"]["text"].encode())) <= blocks
    assert record["env"]["SSL_CERT_FILE"] != str(corp)
    assert len(world.exchanges_with(marker)) == 1
