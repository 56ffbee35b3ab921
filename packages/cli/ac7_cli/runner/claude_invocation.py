"""The command line and environment the runner gives Claude Code. Pure functions, so they are easy to pin."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from ac7_core.atomic_file import write_atomic

# (flag, value or None). Injected only when the user has not passed the flag themselves.
SKIP_PERMISSIONS = "--dangerously-skip-permissions"
APPEND_PROMPT = "--append-system-prompt"
MCP_CONFIG = "--mcp-config"


def claude_argv(
    claude: str,
    user_args: Sequence[str],
    instructions: str,
    *,
    skip_permissions: bool,
    mcp_config: Path | None = None,
) -> tuple[list[str], list[str]]:
    """The full argv, and a human description of each injected flag (for the start-up banner)."""
    injected: list[str] = []
    notes: list[str] = []
    if mcp_config is not None:
        # --mcp-config adds to the user's own servers. It takes several values, so the separate-argument form would
        # swallow a prompt that follows it; the `=` form takes exactly one.
        injected.append(f"{MCP_CONFIG}={mcp_config}")
        notes.append(f"{MCP_CONFIG} <ac7 MCP server>")
    if skip_permissions and SKIP_PERMISSIONS not in user_args:
        injected.append(SKIP_PERMISSIONS)
        notes.append(SKIP_PERMISSIONS)
    has_prompt = any(a == APPEND_PROMPT or a.startswith(APPEND_PROMPT + "=") for a in user_args)
    if instructions and not has_prompt:
        injected += [APPEND_PROMPT, instructions]
        notes.append(f"{APPEND_PROMPT} <ac7 briefing, {len(instructions)} chars>")
    # Ours first, the user's after: where Claude Code lets a later flag win, the user's choice wins.
    return [claude, *injected, *user_args], notes


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower() if host else None


def _bypasses_traced(entry: str, traced: Sequence[str]) -> bool:
    """Whether a NO_PROXY entry would send a traced host around the proxy (and its trace with it)."""
    if entry == "*":
        return True
    try:
        network = ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        name = entry.lstrip(".").lower().rsplit(":", 1)[0] if entry.count(":") == 1 else entry.lstrip(".").lower()
        # Either direction bypasses tracing: the entry covers a traced host, or names a host a traced domain covers.
        return any(name == t or t.endswith("." + name) or name.endswith("." + t) for t in traced)
    for host in traced:
        try:
            if ipaddress.ip_address(host.strip("[]")) in network:
                return True
        except ValueError:
            continue
    return False


def _without_traced(no_proxy: str, traced: Sequence[str]) -> str:
    # Clients split NO_PROXY on commas and on whitespace alike.
    entries = [e for e in re.split(r"[,\s]+", no_proxy) if e]
    return ",".join(e for e in entries if not _bypasses_traced(e, traced))


def system_roots(env: Mapping[str, str]) -> Path | None:
    """The trust bundle the child would have used: its SSL_CERT_FILE, else OpenSSL's default, else certifi's."""
    for candidate in (env.get("SSL_CERT_FILE"), ssl.get_default_verify_paths().cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi
    except ImportError:
        return None
    return Path(certifi.where())


def write_bundle(session_dir: Path, roots: Path | None, session_ca_pem: bytes) -> Path:
    """System roots plus the session CA, for the agent's Python/curl subprocesses (public certificates only)."""
    bundle = session_dir / "trust-bundle.pem"
    data = (roots.read_bytes().rstrip(b"\n") + b"\n" if roots else b"") + session_ca_pem
    write_atomic(bundle, data)
    return bundle


def child_env(
    parent: Mapping[str, str],
    *,
    proxy_url: str | None,
    ca_cert: Path | None,
    trust_bundle: Path | None,
    traced_hosts: Sequence[str],
    unsafe_tls: bool,
) -> dict[str, str]:
    """The parent's environment plus what routes the agent's LLM traffic through the trace host."""
    env = dict(parent)
    if proxy_url is not None and ca_cert is not None:
        # The URL carries the session's proxy credentials; every client the agent runs sends them from here.
        env["HTTPS_PROXY"] = env["https_proxy"] = proxy_url
        env["NODE_EXTRA_CA_CERTS"] = str(ca_cert)
        if trust_bundle is not None:
            env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = str(trust_bundle)
        # A traced host in NO_PROXY would let the agent's traffic skip the proxy, and the trace with it.
        for var in ("NO_PROXY", "no_proxy"):
            if var in env:
                env[var] = _without_traced(env[var], traced_hosts)
    if unsafe_tls:
        env["NODE_TLS_REJECT_UNAUTHORIZED"] = "0"
    return env


UNSAFE_TLS_BANNER = """\
+--------------------------------------------------------------------------+
| ac7: --unsafe-tls: NODE_TLS_REJECT_UNAUTHORIZED=0 is set for the agent.   |
| Certificate checks are OFF for every TLS connection Claude Code makes,    |
| not only the traced ones. Use it only for a client that cannot honour     |
| NODE_EXTRA_CA_CERTS, and never on an untrusted network.                   |
+--------------------------------------------------------------------------+"""
