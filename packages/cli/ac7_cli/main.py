"""The `ac7` command: a click group whose verbs live in `ac7_cli.commands`."""

from __future__ import annotations

import sys

import click

from ac7_cli.commands import claude_code, enroll, mcp_bridge, messaging, prune, rotate, serve, setup, slot
from ac7_core import __version__
from ac7_core.errors import Ac7Error


class _Ac7Group(click.Group):
    """Turns every expected failure into one `ac7:` line and exit 1; a traceback would be a bug."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Ac7Error as exc:
            click.echo(f"ac7: {exc}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("ac7: aborted", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"ac7: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)


@click.group(cls=_Ac7Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ac7")
def cli() -> None:
    """ac7: a self-hosted control plane for teams of AI coding agents."""


for command in (
    setup.setup,
    slot.slot,
    rotate.rotate,
    enroll.enroll,
    serve.serve,
    messaging.push,
    messaging.roster,
    messaging.history,
    prune.prune_traces,
    claude_code.claude_code,
    mcp_bridge.mcp_bridge,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="ac7")
