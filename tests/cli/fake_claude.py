"""A fake `claude` for the `ac7 claude-code` runner tests, and the test-side world it runs in.

**The program.** `install(directory)` writes this file as an executable `claude` whose `#!` line names the test
interpreter; the tests point CLAUDE_PATH at it. Run by the runner, it does what its FAKE_CLAUDE_* environment says,
in this order, and then writes everything it saw to `$FAKE_CLAUDE_DIR/record.json` (atomically: once the file
exists, the fake is past its work and sleeping or exiting):

- always: its argv, environment, cwd and pid; the project's `.mcp.json` (text and mode); every `--mcp-config`
  file; NODE_EXTRA_CA_CERTS and SSL_CERT_FILE (existence, modes, text); the entries of $TMPDIR.
- FAKE_CLAUDE_MCP=1: start the `ac7` server named in the `--mcp-config` file exactly as Claude Code would (its
  command, args and env, stdio), initialize it, list its tools and call `roster`.
- FAKE_CLAUDE_REQUEST=<base URL>: POST an Anthropic Messages request (streamed) to `<base>/v1/messages` the way an
  ordinary client does: through the proxy in its environment (honouring NO_PROXY), trusting only
  NODE_EXTRA_CA_CERTS (or, with FAKE_CLAUDE_TRUST=bundle, the default trust store, i.e. SSL_CERT_FILE).
  FAKE_CLAUDE_MARKER is the user message's text.
- FAKE_CLAUDE_BROKER / FAKE_CLAUDE_TOKEN / FAKE_CLAUDE_AGENT: wait until the broker's roster shows the agent not
  busy, then report it busy itself (so only the runner's teardown can clear it).
- FAKE_CLAUDE_SLEEP=1: sleep until a signal arrives (at most FAKE_CLAUDE_MAX_SLEEP seconds, then exit 99).
- SIGTERM/SIGINT/SIGHUP at any time: appended to `$FAKE_CLAUDE_DIR/signals.jsonl`, then FAKE_CLAUDE_ON_SIGNAL says
  what to do: `die` (default: die by that very signal) or `exit:N`.
- FAKE_CLAUDE_RAISE=1: raise an exception (exit 1 with a traceback); FAKE_CLAUDE_DIE=<SIGNAME>: die by that signal;
  otherwise exit with FAKE_CLAUDE_EXIT (default 0).

Everything above the "test side" line uses the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

RECORD = "record.json"
SIGNALS = "signals.jsonl"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def flag_values(argv: list[str], flag: str) -> list[str]:
    """The values given to `flag`, as `flag VALUE` or `flag=VALUE` (the first value only for a variadic flag)."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1 :])
    return values


def _out_dir() -> Path | None:
    value = os.environ.get("FAKE_CLAUDE_DIR")
    return Path(value) if value else None


def _write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    tmp.replace(path)


def _on_signal(signum: int, _frame: object) -> None:
    out = _out_dir()
    if out is not None:
        fd = os.open(out / SIGNALS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps({"signal": signum, "name": signal.Signals(signum).name}) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    action = os.environ.get("FAKE_CLAUDE_ON_SIGNAL", "die")
    if action.startswith("exit:"):
        os._exit(int(action[5:]))
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _file_info(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    path = Path(value)
    info: dict[str, Any] = {"path": value, "exists": path.exists()}
    if info["exists"]:
        st = path.stat()
        info["mode"] = stat.S_IMODE(st.st_mode)
        info["dir_mode"] = stat.S_IMODE(path.parent.stat().st_mode)
        info["is_socket"] = stat.S_ISSOCK(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            info["text"] = path.read_text(encoding="utf-8", errors="replace")
    return info


def _read_lines(stream: Any, buffer: bytearray, deadline: float) -> bytes | None:
    """One line from a pipe, or None at EOF or the deadline."""
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([stream], [], [], left)
        if not ready:
            return None
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return None
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def _talk_mcp(argv: list[str]) -> dict[str, Any]:
    """Start ac7's MCP server from the --mcp-config file, as Claude Code does, and use it once."""
    result: dict[str, Any] = {}
    configs = flag_values(argv, "--mcp-config")
    server = json.loads(Path(configs[0]).read_text(encoding="utf-8"))["mcpServers"]["ac7"]
    err_path = (_out_dir() or Path()) / "mcp-server.err"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [server["command"], *server.get("args", [])],
            env={**os.environ, **server.get("env", {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdin is not None and proc.stdout is not None
    buffer = bytearray()
    deadline = time.monotonic() + 60

    def send(obj: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps({"jsonrpc": "2.0", **obj}) + "\n").encode())
        proc.stdin.flush()

    def answer(request_id: int) -> dict[str, Any]:
        while True:
            line = _read_lines(proc.stdout, buffer, deadline)
            if line is None:
                raise RuntimeError(f"no answer to request {request_id} from the MCP server")
            message = json.loads(line)
            if message.get("id") == request_id:
                return dict(message)

    try:
        send(
            {
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "fake-claude", "version": "0.0.0"},
                },
            }
        )
        result["initialize"] = answer(1)
        send({"method": "notifications/initialized"})
        send({"id": 2, "method": "tools/list", "params": {}})
        result["tools"] = [t["name"] for t in answer(2)["result"]["tools"]]
        send({"id": 3, "method": "tools/call", "params": {"name": "roster", "arguments": {}}})
        call = answer(3)["result"]
        result["roster_error"] = bool(call.get("isError"))
        result["roster_text"] = "\n".join(c.get("text", "") for c in call.get("content", []))
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return result


def messages_request(
    base: str, marker: str, context: ssl.SSLContext, proxies: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST a streamed Anthropic Messages request to `<base>/v1/messages`; `proxies` None: from the environment
    (https_proxy, honouring no_proxy), as any ordinary client does."""
    body = {
        "model": "claude-fake-model",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": [{"type": "text", "text": marker}]}],
    }
    request = urllib.request.Request(  # noqa: S310 - an https URL from the test
        base.rstrip("/") + "/v1/messages",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "x-api-key": "sk-ant-fake", "anthropic-version": "2023-06-01"},
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=60) as response:
            data = response.read()
            return {"status": response.status, "bytes": len(data), "complete": b"message_stop" in data}
    except (urllib.error.URLError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _request(base: str) -> dict[str, Any]:
    if os.environ.get("FAKE_CLAUDE_TRUST") == "bundle":
        context = ssl.create_default_context()  # OpenSSL's default paths: SSL_CERT_FILE
    else:
        context = ssl.create_default_context(cafile=os.environ["NODE_EXTRA_CA_CERTS"])
    return messages_request(base, os.environ.get("FAKE_CLAUDE_MARKER", "hello from the fake claude"), context)


def _broker_call(method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - the loopback broker
        os.environ["FAKE_CLAUDE_BROKER"].rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {os.environ['FAKE_CLAUDE_TOKEN']}", "content-type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        data = response.read()
    return json.loads(data) if data else None


def _my_busy() -> bool:
    agent = os.environ["FAKE_CLAUDE_AGENT"]
    roster = _broker_call("GET", "/roster")
    return bool(next(t for t in roster["teammates"] if t["name"] == agent)["busy"])


def _claim_busy() -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while _my_busy() and time.monotonic() < deadline:  # the runner's own report for our request lands first
        time.sleep(0.05)
    _broker_call("POST", "/presence/busy", {"busy": True})
    return {"after": _my_busy()}


def main() -> int:
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, _on_signal)
    out = _out_dir()
    argv = list(sys.argv)
    cwd = Path.cwd()
    mcp_json = cwd / ".mcp.json"
    tmpdir = os.environ.get("TMPDIR")
    record: dict[str, Any] = {
        "argv": argv,
        "env": dict(os.environ),
        "cwd": str(cwd),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "mcp_json": _file_info(str(mcp_json)),
        "mcp_configs": [_file_info(p) for p in flag_values(argv, "--mcp-config")],
        "node_extra_ca_certs": _file_info(os.environ.get("NODE_EXTRA_CA_CERTS")),
        "ssl_cert_file": _file_info(os.environ.get("SSL_CERT_FILE")),
        "tmpdir": sorted(p.name for p in Path(tmpdir).iterdir()) if tmpdir and Path(tmpdir).is_dir() else None,
    }
    for config in record["mcp_configs"]:
        if config and config.get("text"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                socket_path = json.loads(config["text"])["mcpServers"]["ac7"]["env"]["AC7_RUNNER_SOCKET"]
                record["runner_socket"] = _file_info(socket_path)
    if os.environ.get("FAKE_CLAUDE_MCP") == "1":
        try:
            record["mcp"] = _talk_mcp(argv)
        except Exception as exc:
            record["mcp"] = {"error": f"{type(exc).__name__}: {exc}"}
    if os.environ.get("FAKE_CLAUDE_REQUEST"):
        record["request"] = _request(os.environ["FAKE_CLAUDE_REQUEST"])
    if os.environ.get("FAKE_CLAUDE_BROKER"):
        try:
            record["busy"] = _claim_busy()
        except Exception as exc:
            record["busy"] = {"error": f"{type(exc).__name__}: {exc}"}
    if out is not None:
        _write_json_atomic(out / RECORD, record)
    if os.environ.get("FAKE_CLAUDE_SLEEP") == "1":
        deadline = time.monotonic() + float(os.environ.get("FAKE_CLAUDE_MAX_SLEEP", "120"))
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return 99
    if os.environ.get("FAKE_CLAUDE_RAISE") == "1":
        raise RuntimeError("the fake claude raised, as asked")
    if os.environ.get("FAKE_CLAUDE_DIE"):
        sig = signal.Signals[os.environ["FAKE_CLAUDE_DIE"]]
        with contextlib.suppress(OSError):  # SIGKILL has no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    return int(os.environ.get("FAKE_CLAUDE_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------------------------
# test side: never runs in the fake
# ---------------------------------------------------------------------------------------------------------------

import asyncio  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402
from collections.abc import Coroutine, Iterator, Mapping  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS / "e2e") not in sys.path:  # the fake Anthropic API lives beside the end-to-end test that grew it
    sys.path.insert(0, str(_TESTS / "e2e"))

from fake_anthropic import FakeAnthropic, serve_fake_anthropic  # noqa: E402
from tls_fixtures import UpstreamPKI  # noqa: E402

from ac7_broker.server import RunningBroker, start_broker  # noqa: E402
from ac7_broker.settings import Settings  # noqa: E402
from ac7_core.config_file import create_config  # noqa: E402
from ac7_core.tokens import mint_token  # noqa: E402

AC7 = Path(sys.executable).parent / "ac7"
TIMEOUT = 120.0  # a small shared box: generous deadlines, never a timing assertion
# A hand-formatted project .mcp.json (odd indentation, key order, no trailing newline): restored byte for byte.
ORIGINAL_MCP = (
    b'{\n  "x-note"  : "keep me",\n    "mcpServers": {\n      "other": {"command": "true", "args": ["-x"]}\n  }\n}'
)
# name, role, authority
SLOTS = [
    ("alice", "lead", "director"),
    ("ivy", "engineer", "individual-contributor"),
    ("dan", "engineer", "individual-contributor"),
]


def install(directory: Path, name: str = "claude") -> Path:
    """This file as an executable program for the test interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\n" + Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
    path.chmod(0o755)
    return path


def write_team(directory: Path) -> tuple[Path, dict[str, str]]:
    tokens = {name: mint_token() for name, _, _ in SLOTS}
    doc = {
        "team": {"name": "acme", "directive": "Ship the billing service", "brief": "Billing is late."},
        "roles": {
            "lead": {"description": "Plans and reviews", "instructions": "Review every change."},
            "engineer": {"description": "Writes and tests code", "instructions": "Write tests first."},
        },
        "slots": [
            {"name": name, "role": role, "authority": authority, "token": tokens[name]}
            for name, role, authority in SLOTS
        ],
    }
    path = directory / "ac7.json"
    create_config(path, doc, env={})
    return path, tokens


class LoopThread:
    """An event loop on a thread of its own, so the in-process broker serves while a test blocks on a subprocess."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="runner-tests-loop", daemon=True)
        self._thread.start()

    def run[T](self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Run:
    """One `ac7 claude-code` subprocess (its own session, stdin from /dev/null, output to files)."""

    args: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    fake_dir: Path
    out_path: Path
    err_path: Path
    claude: Path
    code: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def out(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def __str__(self) -> str:
        extra = ""
        bridge_err = self.fake_dir / "mcp-server.err"
        if bridge_err.exists():
            extra = "--- mcp server stderr\n" + bridge_err.read_text(errors="replace")
        return (
            f"ac7 {' '.join(self.args)} -> exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"
            f"--- fake claude signals\n{self.signals()}\n{extra}"
        )

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            self.code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the runner did not exit within {timeout} s\n{self}") from None
        return self.code

    def running(self) -> bool:
        return self.proc.poll() is None

    def record(self) -> dict[str, Any] | None:
        path = self.fake_dir / RECORD
        if not path.exists():
            return None
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return doc

    def wait_record(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The fake claude's record, once it is written (it is then sleeping or exiting)."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.record()
            if record is not None:
                return record
            if self.proc.poll() is not None:
                self.code = self.proc.returncode
                record = self.record()
                if record is not None:
                    return record
                raise AssertionError(f"the runner exited before the fake claude wrote its record\n{self}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake claude wrote no record within {timeout} s\n{self}")
            time.sleep(0.05)

    def signals(self) -> list[dict[str, Any]]:
        path = self.fake_dir / SIGNALS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def send(self, sig: signal.Signals) -> None:
        """Signal the runner process alone (never its group)."""
        self.proc.send_signal(sig)

    def child_pid(self) -> int | None:
        record = self.record()
        return int(record["pid"]) if record else None

    def child_alive(self) -> bool:
        pid = self.child_pid()
        return pid is not None and str(self.claude) in _proc_cmdline(pid)

    def kill_child(self) -> None:
        """SIGKILL the fake claude this run started (by its recorded pid, checked against its command line)."""
        pid = self.child_pid()
        if pid is not None and str(self.claude) in _proc_cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while str(self.claude) in _proc_cmdline(pid) and time.monotonic() < deadline:
                # an orphan is reaped by init; a zombie's cmdline is empty
                time.sleep(0.02)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.kill_child()


@dataclass
class World:
    """A real broker (in process, on its own loop thread), the fake Anthropic API over TLS, a project with a
    hand-formatted .mcp.json, a private TMPDIR, and the fake claude, for running the real `ac7 claude-code`."""

    root: Path
    loop: LoopThread
    broker: RunningBroker
    tokens: dict[str, str]
    pki: UpstreamPKI
    api: FakeAnthropic
    claude: Path
    project: Path
    tmp_root: Path
    home: Path
    cache: Path
    runs: list[Run] = field(default_factory=list)
    broker_stopped: bool = False

    @classmethod
    @contextmanager
    def running(cls, root: Path) -> Iterator[World]:
        (root / "broker").mkdir(parents=True)
        world: World | None = None
        loop = LoopThread()
        try:
            config, tokens = write_team(root / "broker")
            settings = Settings(history_rate=1000.0, history_burst=1000.0)
            broker = loop.run(start_broker(config, "127.0.0.1", 0, settings))
            try:
                pki = UpstreamPKI.create(root / "pki")
                api_cm = serve_fake_anthropic(FakeAnthropic(), pki.server_context())
                api = loop.run(api_cm.__aenter__())
                try:
                    world = cls(
                        root=root,
                        loop=loop,
                        broker=broker,
                        tokens=tokens,
                        pki=pki,
                        api=api,
                        claude=install(root / "bin"),
                        project=root / "project",
                        # short: the runner's bridge socket lives under TMPDIR, and a Unix socket path is <= 107 bytes
                        tmp_root=Path(tempfile.mkdtemp(prefix="ac7t-", dir="/tmp")),
                        home=root / "home",
                        cache=root / "cache",
                    )
                    for d in (world.project, world.home, world.cache):
                        d.mkdir()
                    (world.project / ".mcp.json").write_bytes(ORIGINAL_MCP)
                    try:
                        yield world
                    finally:
                        for run in world.runs:
                            run.cleanup()
                        shutil.rmtree(world.tmp_root, ignore_errors=True)
                finally:
                    loop.run(api_cm.__aexit__(None, None, None))
            finally:
                if world is None or not world.broker_stopped:
                    loop.run(broker.stop())
        finally:
            loop.close()

    @property
    def url(self) -> str:
        return self.broker.url

    # --- the runner ------------------------------------------------------------------------------------------

    def env(self, agent: str | None = "ivy", extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """What a user's shell would hand the runner; `extra` values of None remove a variable."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp_root),
            "XDG_CACHE_HOME": str(self.cache),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "AC7_URL": self.url,
            "CLAUDE_PATH": str(self.claude),
            "ANTHROPIC_BASE_URL": self.api.url,
            "IS_SANDBOX": "1",  # the tests may run as root
        }
        if os.environ.get("PYTHONPATH"):  # the runner imports the code this test process imports
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        if agent is not None:
            env["AC7_TOKEN"] = self.tokens[agent]
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def request_vars(self, marker: str) -> dict[str, str]:
        return {"REQUEST": self.api.url, "MARKER": marker}

    def busy_vars(self, agent: str = "ivy") -> dict[str, str]:
        return {"BROKER": self.url, "TOKEN": self.tokens[agent], "AGENT": agent}

    def start(
        self,
        *args: str,
        agent: str | None = "ivy",
        fake: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str | None] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        upstream_ca: bool = True,
    ) -> Run:
        """Start `ac7 claude-code [--upstream-ca <test CA>] ARGS` in the project; FAKE_CLAUDE_<k>=<v> for `fake`."""
        n = len(self.runs) + 1
        fake_dir = self.root / "runs" / str(n)
        fake_dir.mkdir(parents=True)
        full_env = dict(env) if env is not None else self.env(agent, extra_env)
        full_env["FAKE_CLAUDE_DIR"] = str(fake_dir)
        full_env.update({f"FAKE_CLAUDE_{k}": v for k, v in (fake or {}).items()})
        argv = ["claude-code", *(["--upstream-ca", str(self.pki.ca_pem_path)] if upstream_ca else []), *args]
        out_path, err_path = fake_dir / "runner.out", fake_dir / "runner.err"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [str(AC7), *argv],
                cwd=cwd or self.project,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        run = Run(tuple(argv), proc, fake_dir, out_path, err_path, self.claude)
        self.runs.append(run)
        return run

    def run(self, *args: str, **kw: Any) -> Run:
        run = self.start(*args, **kw)
        run.wait()
        return run

    def leftovers(self) -> list[str]:
        """What ac7 left in TMPDIR (CA dirs, session dirs, doctor temp files)."""
        return sorted(p.name for p in self.tmp_root.glob("ac7-*"))

    def stop_broker(self) -> None:
        """Stop the broker for good (a runner then has nowhere to upload)."""
        if not self.broker_stopped:
            self.broker_stopped = True
            self.loop.run(self.broker.stop())

    def spooled(self) -> str:
        """Everything the runners' uploaders left in the spool (XDG_CACHE_HOME/ac7/spool)."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.cache.glob("ac7/spool/*.jsonl")))

    # --- the broker, as the director sees it -----------------------------------------------------------------

    def http(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - the loopback broker
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token or self.tokens['alice']}", "content-type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        return status, (json.loads(data) if data else None)

    def busy(self, agent: str = "ivy") -> bool:
        status, roster = self.http("GET", "/roster")
        assert status == 200, roster
        return bool(next(t for t in roster["teammates"] if t["name"] == agent)["busy"])

    def set_busy(self, agent: str = "ivy") -> None:
        status, payload = self.http("POST", "/presence/busy", token=self.tokens[agent], body={"busy": True})
        assert status == 204, payload
        assert self.busy(agent)

    def activity(self, agent: str = "ivy") -> list[dict[str, Any]]:
        status, payload = self.http("GET", f"/agents/{urllib.parse.quote(agent)}/activity?limit=1000")
        assert status == 200, payload
        return [row["event"] for row in payload["activity"]]

    def exchanges_with(self, marker: str, agent: str = "ivy") -> list[dict[str, Any]]:
        """The llm_exchange events whose request carries `marker`."""
        return [e for e in self.activity(agent) if e["kind"] == "llm_exchange" and marker in json.dumps(e["entry"])]

    def briefing(self, agent: str = "ivy") -> dict[str, Any]:
        status, payload = self.http("GET", "/briefing", token=self.tokens[agent])
        assert status == 200, payload
        return dict(payload)


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
