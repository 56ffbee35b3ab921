"""Helpers for the CLI tests: run the real `ac7` console script, drive a pseudo-terminal, run a real broker.

Every test runs `ac7` as a subprocess with a clean environment (no AC7_* variables, HOME in a temp dir) and its
working directory in the test's tmp_path, exactly as a user would run it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import segno
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

AC7 = Path(sys.executable).parent / "ac7"
RUN_TIMEOUT = 120.0  # the box is small and shared: generous, and never a timing assertion
TOKEN_RE = re.compile(r"^ac7_[A-Za-z0-9_-]{43}$")
TOKEN_ANYWHERE_RE = re.compile(r"ac7_[A-Za-z0-9_-]{43}")
SEALED_RE = re.compile(r"^enc-v1:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]{22}:[A-Za-z0-9_-]+$")
SECRET_LINE_RE = re.compile(r"^secret: ([A-Z2-7]{16,128}=*)$", re.MULTILINE)
URI_LINE_RE = re.compile(r"^uri:\s+(otpauth://\S+)$", re.MULTILINE)
QR_CHARS = frozenset("█▀▄ ")


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent environment without any AC7_* variable, HOME pointed at a temp dir, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AC7_")}
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONWARNINGS", None)
    if extra:
        env.update(extra)
    return env


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"ac7 {' '.join(self.args)} -> exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def run_ac7(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    stdin: str | None = None,
    timeout: float = RUN_TIMEOUT,
) -> Result:
    """Run the real console script. stdin is empty (never a TTY) unless text is given."""
    full_env = dict(env) if env is not None else clean_env(home or cwd)
    proc = subprocess.run(
        [str(AC7), *args],
        cwd=cwd,
        env=full_env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.out, str(result)
    assert "Traceback" not in result.err, str(result)


def assert_error(result: Result, *fragments: str, code: int = 1) -> str:
    """An expected failure: exit `code`, exactly one stderr line starting `ac7:`, no traceback. Returns the line."""
    assert_no_traceback(result)
    assert result.code == code, str(result)
    lines = result.err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line\n{result}"
    line = lines[0]
    assert line.startswith("ac7: "), str(result)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def assert_usage_error(result: Result, *fragments: str) -> None:
    """A click usage error: exit 2, click's short usage text and an `Error:` line, never a traceback."""
    assert_no_traceback(result)
    assert result.code == 2, str(result)
    assert "Error:" in result.err, str(result)
    assert result.out == "", str(result)
    for fragment in fragments:
        assert fragment in result.err, f"{fragment!r} not in stderr\n{result}"


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def open_sealed(key: bytes, value: str, field: str) -> str:
    """Decrypt an enc-v1 value independently of ac7_core: AES-256-GCM, the field identity as associated data."""
    prefix, iv, tag, ciphertext = value.split(":")
    assert prefix == "enc-v1"
    assert len(_b64url(iv)) == 12
    assert len(_b64url(tag)) == 16
    return AESGCM(key).decrypt(_b64url(iv), _b64url(ciphertext) + _b64url(tag), field.encode()).decode()


def sha256_of(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_doc(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def slot_entry(doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    for entry in doc["slots"]:
        if entry["name"] == name:
            assert isinstance(entry, dict)
            return entry
    raise AssertionError(f"no slot {name!r} in {doc['slots']!r}")


def only_token(stdout: str) -> str:
    """The single bearer token printed on stdout (asserting there is exactly one)."""
    found = TOKEN_ANYWHERE_RE.findall(stdout)
    assert len(found) == 1, f"expected one token on stdout, got {found!r}"
    token: str = found[0]
    return token


def printed_secret(stdout: str) -> str:
    match = SECRET_LINE_RE.search(stdout)
    assert match is not None, f"no 'secret:' line in {stdout!r}"
    return match.group(1)


def printed_uri(stdout: str) -> str:
    match = URI_LINE_RE.search(stdout)
    assert match is not None, f"no 'uri:' line in {stdout!r}"
    return match.group(1)


def otpauth_parts(uri: str) -> tuple[str, dict[str, str]]:
    """(label, query) of an otpauth://totp/ URI."""
    parsed = urllib.parse.urlsplit(uri)
    assert parsed.scheme == "otpauth", uri
    assert parsed.netloc == "totp", uri
    label = urllib.parse.unquote(parsed.path.lstrip("/"))
    query = dict(urllib.parse.parse_qsl(parsed.query, strict_parsing=True))
    return label, query


def qr_blocks(text: str) -> list[list[str]]:
    """Runs of at least 10 consecutive lines made only of QR half-block characters (a drawn QR code)."""
    blocks: list[list[str]] = []
    run: list[str] = []
    for line in [*text.splitlines(), ""]:
        body = line.rstrip("\r\n")
        if body.strip() and set(body) <= QR_CHARS and ("█" in body or "▀" in body or "▄" in body):
            run.append(body)
            continue
        if len(run) >= 10:
            blocks.append(run)
        run = []
    return blocks


def _decode_half_blocks(lines: list[str], dark_char: str) -> list[list[int]]:
    """Rows of modules (1 = dark) from a compact rendering where each character holds two vertical modules."""
    width = max(len(line) for line in lines)
    top_bottom = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}
    rows: list[list[int]] = []
    for line in lines:
        pairs = [top_bottom[c] for c in line.ljust(width)]
        for half in (0, 1):
            bits = [p[half] for p in pairs]
            rows.append(bits if dark_char == "█" else [1 - b for b in bits])
    return rows


def _trim_border(rows: list[list[int]]) -> list[list[int]]:
    """Drop the quiet zone, and a half-row of terminal background under an odd number of module rows."""
    rows = [r for r in rows if any(r) and not all(r)]
    if not rows:
        return rows
    cols = [i for i in range(len(rows[0])) if any(r[i] for r in rows)]
    return [r[cols[0] : cols[-1] + 1] for r in rows]


def qr_encodes(lines: list[str], content: str) -> bool:
    """Whether the drawn QR code is a QR encoding of `content` (any error level segno would pick)."""
    candidates = []
    for level in "lmqh":
        for boost in (True, False):
            qr = segno.make(content, error=level, boost_error=boost, micro=False)
            candidates.append([list(row) for row in qr.matrix])
    for dark in ("█", " "):
        decoded = _trim_border(_decode_half_blocks(lines, dark))
        if any(decoded == [[1 if v else 0 for v in row] for row in c] for c in candidates):
            return True
    return False


# --- a team created through the real CLI ----------------------------------------------------------------------


@dataclass
class Team:
    dir: Path
    config: Path
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> Result:
        return run_ac7(*args, cwd=self.dir, env=env or self.env, stdin=stdin)

    def text(self) -> str:
        return self.config.read_text(encoding="utf-8")


def setup_team(directory: Path, *, team: str = "acme", director: str = "alice", extra: list[str] | None = None) -> Team:
    """`ac7 setup` (non-interactive) in `directory`: a team with one director; returns its printed secrets."""
    env = clean_env(directory)
    result = run_ac7("setup", "--team", team, "--director", director, "--no-qr", *(extra or []), cwd=directory, env=env)
    assert result.code == 0, str(result)
    t = Team(directory, directory / "ac7.json", env)
    t.tokens[director] = only_token(result.out)
    t.secrets[director] = printed_secret(result.out)
    return t


def add_slot(team: Team, name: str, *args: str) -> Result:
    result = team.run("slot", "add", name, "--no-qr", *args)
    assert result.code == 0, str(result)
    if "--human" not in args:
        team.tokens[name] = only_token(result.out)
    if "--human" in args or "--totp" in args:
        team.secrets[name] = printed_secret(result.out)
    return result


def random_kek_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode("ascii")


# --- HTTP to a broker ------------------------------------------------------------------------------------------


def http(
    method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 30.0
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback http URLs only
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        status = exc.code
    return status, (json.loads(payload) if payload else None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BrokerProcess:
    """`ac7 serve` as a real subprocess; output goes to files so a full pipe can never stall it."""

    def __init__(
        self, config: Path | None, cwd: Path, env: Mapping[str, str], extra_args: tuple[str, ...] = ()
    ) -> None:
        """`config` None: pass no --config (the default ./ac7.json or AC7_CONFIG applies)."""
        self.config = config
        self.cwd = cwd
        self.env = dict(env)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.returncode: int | None = None
        self._n = 0
        self.out_path = cwd / "serve.out"
        self.err_path = cwd / "serve.err"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace") if self.err_path.exists() else ""

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace") if self.out_path.exists() else ""

    def start(self, timeout: float = 90.0) -> BrokerProcess:
        for _attempt in range(3):  # another test may grab the free port between our probe and the bind
            self._n += 1
            self.out_path = self.cwd / f"serve-{self._n}.out"
            self.err_path = self.cwd / f"serve-{self._n}.err"
            self.port = free_port()
            config_args = [] if self.config is None else ["--config", str(self.config)]
            args = [str(AC7), "serve", *config_args, "--port", str(self.port), *self.extra_args]
            with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
                self.proc = subprocess.Popen(args, cwd=self.cwd, env=self.env, stdout=out, stderr=err)
            if self._wait_healthy(timeout):
                return self
            if "cannot listen" not in self.stderr():
                break
        raise AssertionError(f"broker did not become healthy\n--- stdout\n{self.stdout()}--- stderr\n{self.stderr()}")

    def _wait_healthy(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                return False
            with contextlib.suppress(OSError, ValueError):
                status, body = http("GET", f"{self.url}/healthz", timeout=5)
                if status == 200 and body.get("status") == "ok":
                    return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL only if it never stops)."""
        if self.proc is None:
            return self.returncode if self.returncode is not None else 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode


@contextlib.contextmanager
def running_broker(team: Team, *extra_args: str) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(team.config, team.dir, team.env, extra_args).start()
    try:
        yield broker
    finally:
        broker.stop()


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def opaque_event(ts: int) -> dict[str, Any]:
    """A valid `opaque_http` activity event (DESIGN §5) at epoch-ms `ts`."""
    return {
        "kind": "opaque_http",
        "ts": ts,
        "duration": 15,
        "entry": {
            "kind": "opaque_http",
            "startedAt": ts - 15,
            "endedAt": ts,
            "host": "statsig.anthropic.com",
            "method": "POST",
            "path": f"/v1/rgstr?ts={ts}",
            "status": 202,
            "requestHeaders": {"content-type": "application/json"},
            "responseHeaders": {},
            "requestBodyPreview": '{"events":[]}',
            "responseBodyPreview": None,
        },
    }


# --- a pseudo-terminal session --------------------------------------------------------------------------------


class PtySession:
    """`ac7` running on a real pseudo-terminal (stdin and stdout are TTYs), driven by expect/send."""

    def __init__(self, args: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        argv = [str(AC7), *args]
        env_list = dict(env)
        env_list.setdefault("TERM", "xterm")
        env_list["COLUMNS"] = "200"
        pid, fd = pty.fork()
        if pid == 0:  # child: become ac7 on the terminal
            try:
                os.chdir(cwd)
                os.execve(argv[0], argv, env_list)  # noqa: S606 - the real console script, no shell
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.buffer = ""
        self._pos = 0
        self._raw = b""
        self.exit_code: int | None = None

    def _read_some(self, wait: float) -> bool:
        """Read what is available within `wait` seconds; False at end of output."""
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:  # Linux: the child closed the terminal
                return False
            raise
        if not data:
            return False
        self._raw += data
        self.buffer = self._raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait for `pattern` (a regex) in output after the previous match; move past it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.buffer, self._pos)
            if match is not None:
                self._pos = match.end()
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; output so far:\n{self.buffer}")
            if not self._read_some(0.2):
                match = regex.search(self.buffer, self._pos)
                if match is not None:
                    self._pos = match.end()
                    return match
                raise AssertionError(f"output ended before {pattern!r}; output:\n{self.buffer}")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode("utf-8"))

    def sendline(self, text: str) -> None:
        self.send(text + "\r")

    def wait(self, timeout: float = 60.0) -> int:
        """Drain output to the end and reap the child; returns its exit code."""
        deadline = time.monotonic() + timeout
        eof = False
        while time.monotonic() < deadline:
            if not eof:
                eof = not self._read_some(0.2)
            else:
                time.sleep(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while not eof and time.monotonic() < deadline:
                    eof = not self._read_some(0.2)
                self.exit_code = os.waitstatus_to_exitcode(status)
                return self.exit_code
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.exit_code = -9
        raise AssertionError(f"ac7 did not exit; output:\n{self.buffer}")

    def close(self) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ChildProcessError):
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
                if not pid:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.fd)
