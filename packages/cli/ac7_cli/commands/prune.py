"""`ac7 prune-traces --older-than 7d`: delete old activity from the broker's store."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import click

from ac7_cli.options import config_option
from ac7_core.errors import Ac7Error

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> int:
    """'7d', '12h', '30m', '90s', '2w' → seconds."""
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*([smhdw])\s*", text)
    if match is None:
        raise Ac7Error(f"--older-than must look like 7d, 12h, 30m, 90s or 2w, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


@click.command("prune-traces")
@click.option("--older-than", "older_than", required=True, help="Age cutoff, e.g. 7d, 12h, 30m.")
@config_option
def prune_traces(older_than: str, config_path: Path) -> None:
    """Delete stored activity (traces) older than the cutoff. Safe while the broker runs."""
    from ac7_broker.store import Store

    seconds = parse_age(older_than)
    directory = config_path.resolve().parent
    if not (directory / "ac7-activity.db").exists():
        raise Ac7Error(f"no activity store in {directory} (has the broker run there?)")
    cutoff = int(time.time() * 1000) - seconds * 1000

    async def run() -> int:
        store = await Store.open(directory)
        try:
            return await store.activity.prune(cutoff)
        finally:
            await store.close()

    removed = asyncio.run(run())
    click.echo(f"removed {removed} event(s) older than {older_than}")
