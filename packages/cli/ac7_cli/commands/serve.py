"""`ac7 serve`: run the broker."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from ac7_cli.demo_team import create_demo_team
from ac7_cli.options import config_option


@click.command()
@config_option
@click.option(
    "--host", envvar="AC7_HOST", default="127.0.0.1", show_default=True, help="Address to bind (env AC7_HOST)."
)
@click.option(
    "--port",
    envvar="AC7_PORT",
    default=8717,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (env AC7_PORT; 0 picks a free one).",
)
@click.option(
    "--demo", is_flag=True, help="If the config does not exist, create a demo team first and print its credentials."
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def serve(config_path: Path, host: str, port: int, demo: bool, verbose: bool) -> None:
    """Run the broker: HTTP API, WebSockets and storage beside the config file.

    Data lives next to the config (ac7.db, ac7-activity.db). Edits to the config file (for example by
    `ac7 rotate`) take effect within a second, without a restart. Stops cleanly on Ctrl-C or SIGTERM.
    """
    from ac7_broker.server import run_broker  # the broker stack is only imported by the verb that needs it

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ready = None
    if demo and not config_path.exists():
        ready = create_demo_team(config_path, host, port)
    asyncio.run(run_broker(config_path, host, port, on_ready=ready))
