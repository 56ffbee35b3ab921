"""`ac7 claude-code --doctor`: the preflight checks, also run silently before every session."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ac7_cli.broker_client import BrokerClient
from ac7_core.errors import Ac7Error

Status = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    status: Status
    name: str
    detail: str

    def line(self) -> str:
        return f"[{self.status}] {self.name} — {self.detail}"


def find_claude(env: Mapping[str, str]) -> str | None:
    configured = env.get("CLAUDE_PATH")
    if configured:
        return configured if Path(configured).is_file() and os.access(configured, os.X_OK) else None
    return shutil.which("claude", path=env.get("PATH"))


def _claude(env: Mapping[str, str]) -> Check:
    found = find_claude(env)
    if found:
        return Check("PASS", "claude binary", found)
    if env.get("CLAUDE_PATH"):
        return Check("FAIL", "claude binary", f"CLAUDE_PATH={env['CLAUDE_PATH']} is not an executable file")
    return Check("FAIL", "claude binary", "not on PATH; install @anthropic-ai/claude-code or set CLAUDE_PATH")


def _tmp() -> Check:
    directory = tempfile.gettempdir()
    try:
        fd, name = tempfile.mkstemp(prefix="ac7-doctor-", dir=directory)
        os.close(fd)
        Path(name).unlink()
    except OSError as exc:
        return Check("FAIL", "temp dir writable", f"{directory}: {exc.strerror or exc}")
    return Check("PASS", "temp dir writable", directory)


def _loopback() -> Check:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    except OSError as exc:
        return Check("FAIL", "loopback bindable", str(exc.strerror or exc))
    return Check("PASS", "loopback bindable", f"127.0.0.1:{port}")


def _ca() -> Check:
    from ac7_cli.runner.session_ca import SessionCA

    try:
        ca = SessionCA.generate(["anthropic.com"])
        ca.leaf("api.anthropic.com")
    except Exception as exc:  # any failure here means tracing cannot work; report it, don't crash the doctor
        return Check("FAIL", "CA + leaf generation", f"{type(exc).__name__}: {exc}")
    return Check("PASS", "CA + leaf generation", "EC P-256 session CA and a leaf for api.anthropic.com")


def _broker(url: str, token: str | None) -> Check:
    if not token:
        return Check("FAIL", "broker reachable", "no token: pass --token or set AC7_TOKEN")
    try:
        briefing = BrokerClient(url, token).call("GET", "/briefing")
    except Ac7Error as exc:
        return Check("FAIL", "broker reachable", str(exc))
    return Check("PASS", "broker reachable", f"{url} accepts the token of slot {briefing.get('name')!r}")


def _tls(env: Mapping[str, str], unsafe_tls: bool) -> Check:
    if unsafe_tls:
        return Check("WARN", "TLS posture", "--unsafe-tls turns certificate checks off for the whole agent")
    if env.get("NODE_TLS_REJECT_UNAUTHORIZED") == "0":
        return Check("WARN", "TLS posture", "NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment: TLS checks are off")
    return Check("PASS", "TLS posture", "certificate verification on")


def _root(env: Mapping[str, str], geteuid: Callable[[], int]) -> Check:
    if geteuid() == 0 and env.get("IS_SANDBOX") != "1":
        return Check(
            "WARN",
            "user",
            "running as root without IS_SANDBOX=1: Claude Code refuses --dangerously-skip-permissions as root",
        )
    return Check("PASS", "user", "not root" if geteuid() != 0 else "root with IS_SANDBOX=1")


def run_checks(
    url: str,
    token: str | None,
    *,
    env: Mapping[str, str] | None = None,
    unsafe_tls: bool = False,
    geteuid: Callable[[], int] = os.geteuid,
) -> list[Check]:
    env = os.environ if env is None else env
    return [
        _claude(env),
        _tmp(),
        _loopback(),
        _ca(),
        _broker(url, token),
        _tls(env, unsafe_tls),
        _root(env, geteuid),
    ]


def report(checks: list[Check]) -> str:
    verdict = "FAIL" if any(c.status == "FAIL" for c in checks) else "OK"
    return "\n".join(c.line() for c in checks) + f"\n\ndoctor: {verdict}"
