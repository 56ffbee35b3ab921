"""`ac7 enroll --slot NAME`: give a slot a new TOTP secret for web login."""

from __future__ import annotations

from pathlib import Path

import click

from ac7_cli.options import config_option
from ac7_cli.secrets_output import show_enrolment
from ac7_core.config_edit import enroll_totp
from ac7_core.config_file import update_config
from ac7_core.totp import provisioning_uri


@click.command()
@click.option("--slot", "slot_name", required=True, help="The slot to (re-)enrol.")
@click.option("--qr/--no-qr", default=True, show_default=True, help="Draw the otpauth URI as a terminal QR code.")
@config_option
def enroll(slot_name: str, qr: bool, config_path: Path) -> None:
    """Enrol a slot for TOTP web login with a fresh secret; any previous authenticator stops working."""
    loaded, secret = update_config(config_path, lambda doc, key: enroll_totp(doc, key, slot_name))
    uri = provisioning_uri(secret, f"{slot_name}@{loaded.config.team.name}", "ac7")
    show_enrolment(slot_name, secret, uri, qr=qr)
