"""`ac7 mcp-bridge`: the stdio MCP server that `ac7 claude-code` registers in `.mcp.json` for Claude Code to start."""

from __future__ import annotations

import os
import signal

import click


def _exit_quietly_on_signals() -> None:
    def leave(_signum: int, _frame: object) -> None:
        os._exit(0)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)


@click.command("mcp-bridge")
def mcp_bridge() -> None:
    """Serve the team's tools (roster, send, broadcast, recent) to Claude Code over stdio.

    `ac7 claude-code` starts this for you through `.mcp.json`, with AC7_RUNNER_SOCKET and AC7_RUNNER_KEY set so it
    can reach the runner. Started any other way it still serves MCP, but every tool explains that it is unavailable.
    """
    _exit_quietly_on_signals()  # before the slow import below: Claude Code may stop us while we load
    # Imported here so that `ac7 --help` and the other verbs do not pay for loading the MCP SDK.
    from ac7_cli.runner.bridge_server import main

    main(os.environ)
