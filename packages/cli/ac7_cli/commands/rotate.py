"""`ac7 rotate --slot NAME`: replace one slot's bearer token in the config file."""

from __future__ import annotations

from pathlib import Path

import click

from ac7_cli.options import config_option
from ac7_cli.secrets_output import show_token
from ac7_core.config_edit import rotate_token
from ac7_core.config_file import update_config


@click.command()
@click.option("--slot", "slot_name", required=True, help="The slot whose token to replace.")
@config_option
def rotate(slot_name: str, config_path: Path) -> None:
    """Mint a new bearer token for one slot; the old one stops working.

    Only that slot's entry in the config changes. A running broker notices within a second, with no restart.
    The token is printed once on stdout (so `TOKEN=$(ac7 rotate --slot x)` works); nothing keeps a copy.
    """
    _, token = update_config(config_path, lambda doc, _key: rotate_token(doc, slot_name))
    show_token(slot_name, token, context="rotated; the previous token no longer works")
