"""`ac7 serve`: run the broker."""

from __future__ import annotations

from pathlib import Path

import click

from ac7_cli.options import config_option
from ac7_core.config_file import load_config


@click.command()
@config_option
def serve(config_path: Path) -> None:
    """Run the broker (until it lands: load, migrate and validate the config, and print a summary)."""
    loaded = load_config(config_path)
    config = loaded.config
    click.echo(
        f"config {config_path}: team {config.team.name!r}, {len(config.slots)} slot(s), KEK from {loaded.kek.source}"
    )
    for change in loaded.migrated:
        click.echo(f"  migrated: {change}")
