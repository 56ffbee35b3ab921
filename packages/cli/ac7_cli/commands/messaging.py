"""`ac7 push`, `ac7 roster`, `ac7 history`: talk to a running broker."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ac7_cli.broker_client import BrokerClient, broker_options
from ac7_core.errors import Ac7Error

LEVELS = ("debug", "info", "notice", "warning", "error", "critical")


@click.command()
@click.argument("body")
@click.option("--to", "to", default=None, help="Send a direct message to this slot (default: broadcast).")
@click.option("--title", default=None, help="Optional title.")
@click.option("--level", type=click.Choice(LEVELS), default="info", show_default=True)
@click.option("--data", "data_json", default=None, help="Extra JSON object attached to the message.")
@broker_options
def push(body: str, to: str | None, title: str | None, level: str, data_json: str | None, url: str, token: str) -> None:
    """Send BODY to the team (or to one slot with --to). BODY "-" reads it from stdin."""
    if body == "-":
        body = sys.stdin.read()
    data = None
    if data_json is not None:
        try:
            data = json.loads(data_json)
        except json.JSONDecodeError as exc:
            raise Ac7Error(f"--data is not valid JSON: {exc.msg}") from None
    payload = {"to": to, "title": title, "body": body, "level": level, "data": data}
    result = _expect(
        BrokerClient(url, token).call("POST", "/push", {k: v for k, v in payload.items() if v is not None}),
        "message",
        url,
    )
    delivery = result.get("delivery") or {}
    click.echo(f"sent {result['message'].get('id')} (live on {delivery.get('live', 0)} socket(s))")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@broker_options
def roster(as_json: bool, url: str, token: str) -> None:
    """Show the team with live presence."""
    mates = _expect(BrokerClient(url, token).call("GET", "/roster"), "teammates", url)["teammates"]
    if as_json:
        click.echo(json.dumps(mates, indent=2))
        return
    for m in mates:
        state = "busy" if m["busy"] else ("online" if m["connected"] else "offline")
        click.echo(f"{m['name']:<20} {m['role']:<14} {m['authority']:<24} {state}")


def _expect(reply: Any, key: str, url: str) -> dict[str, Any]:
    if not isinstance(reply, dict) or key not in reply:
        raise Ac7Error(f"{url} did not answer like an ac7 broker (no {key!r} in the reply)")
    return reply


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts / 1000))


@click.command()
@click.option("--with", "with_slot", default=None, help="Only the direct-message thread with this slot.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--before", default=None, help="Continue from a previous page's cursor.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (includes nextBefore).")
@broker_options
def history(with_slot: str | None, limit: int, before: str | None, as_json: bool, url: str, token: str) -> None:
    """Show messages you can see (broadcasts and your own DMs), oldest of the page first."""
    page = _expect(
        BrokerClient(url, token).call("GET", "/history", query={"with": with_slot, "limit": limit, "before": before}),
        "messages",
        url,
    )
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    for m in reversed(page["messages"]):
        target = f"-> {m['to']}" if m["to"] else "(all)"
        title = f"[{m['title']}] " if m["title"] else ""
        click.echo(f"{_when(m['ts'])}  {m['from']} {target}  {m['level']}: {title}{m['body']}")
    if page["nextBefore"]:
        click.echo(f"(older: --before {page['nextBefore']})", err=True)
