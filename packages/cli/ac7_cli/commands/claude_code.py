"""`ac7 claude-code`: run Claude Code as a traced member of the team."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
from pathlib import Path

import click

from ac7_cli.broker_client import DEFAULT_URL
from ac7_core.errors import Ac7Error


def _check_trace_host(host: str, what: str = "--trace-host") -> None:
    """A traced domain covers its subdomains, so a bare top-level name would decrypt half the internet."""
    from ac7_cli.runner.trace_scope import normalize_host

    try:
        name = normalize_host(host)
    except ValueError as exc:
        raise Ac7Error(f"{what} {host!r} is not a host name or address ({exc})") from None
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        if name != "localhost" and "." not in name:
            raise Ac7Error(
                f"{what} {host!r} would decrypt every site under it; name a host or a domain like example.com"
            ) from None


@click.command("claude-code", context_settings={"ignore_unknown_options": False})
@click.option("--url", envvar="AC7_URL", default=DEFAULT_URL, show_default=True, help="Broker URL (env AC7_URL).")
@click.option("--token", envvar="AC7_TOKEN", default=None, help="This agent's bearer token (env AC7_TOKEN).")
@click.option("--no-trace", is_flag=True, help="Do not intercept or record LLM traffic (messaging still works).")
@click.option("--doctor", is_flag=True, help="Run the preflight checks, print them, and exit (1 on any FAIL).")
@click.option("--skip-doctor", is_flag=True, help="Do not run the preflight checks before starting.")
@click.option(
    "--unsafe-tls",
    is_flag=True,
    help="Set NODE_TLS_REJECT_UNAUTHORIZED=0 for claude (all certificate checks off). Last resort; prints a warning.",
)
@click.option(
    "--trace-host",
    "trace_hosts",
    multiple=True,
    metavar="HOST",
    help="Also trace this host (and its subdomains); anthropic.com and ANTHROPIC_BASE_URL's host always are.",
)
@click.option(
    "--upstream-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Extra CA (PEM) to trust for upstream servers, e.g. a corporate gateway (SSL_CERT_FILE also counts).",
)
@click.option(
    "--keep-permissions",
    is_flag=True,
    help="Do not add --dangerously-skip-permissions (Claude Code will then ask before using tools).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log runner detail to stderr.")
@click.argument("claude_args", nargs=-1, type=click.UNPROCESSED)
def claude_code(
    url: str,
    token: str | None,
    no_trace: bool,
    doctor: bool,
    skip_doctor: bool,
    unsafe_tls: bool,
    trace_hosts: tuple[str, ...],
    upstream_ca: Path | None,
    keep_permissions: bool,
    verbose: bool,
    claude_args: tuple[str, ...],
) -> None:
    """Run Claude Code with the team's MCP tools, presence, and every LLM call traced to the broker.

    Arguments after `--` go to claude unchanged, e.g. `ac7 claude-code -- -p "fix the build"`. The runner
    starts a per-session CA and a proxy on 127.0.0.1 (with per-session credentials that only claude gets), adds
    an `ac7` entry to ./.mcp.json for the session (the file is restored byte for byte afterwards), and exits
    with claude's exit code. claude comes from CLAUDE_PATH or PATH.
    """
    from ac7_cli.runner.doctor import find_claude, report, run_checks

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="ac7: %(levelname)s %(message)s")
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    if doctor:
        checks = run_checks(url, token, unsafe_tls=unsafe_tls)
        click.echo(report(checks))
        sys.exit(1 if any(c.status == "FAIL" for c in checks) else 0)
    if not skip_doctor:
        checks = run_checks(url, token, unsafe_tls=unsafe_tls)
        if any(c.status == "FAIL" for c in checks):
            click.echo(report(checks), err=True)
            raise Ac7Error("preflight failed: fix the above, or pass --skip-doctor to bypass")
    if not token:
        raise Ac7Error("no token: pass --token or set AC7_TOKEN")
    for host in trace_hosts:
        _check_trace_host(host)
    base_url = os.environ.get("ANTHROPIC_BASE_URL")
    if base_url and not no_trace:
        from ac7_cli.runner.claude_invocation import host_of

        _check_trace_host(host_of(base_url) or base_url, "ANTHROPIC_BASE_URL host")
    claude = find_claude(os.environ)
    if claude is None:
        raise Ac7Error("claude not found: install @anthropic-ai/claude-code or set CLAUDE_PATH")

    from ac7_cli.runner.session import RunnerOptions, run_session

    options = RunnerOptions(
        url=url,
        token=token,
        claude=claude,
        claude_args=list(claude_args),
        trace=not no_trace,
        unsafe_tls=unsafe_tls,
        trace_hosts=list(trace_hosts),
        upstream_ca=upstream_ca,
        skip_permissions=not keep_permissions,
    )
    sys.exit(asyncio.run(run_session(options)))
