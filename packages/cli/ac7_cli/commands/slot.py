"""`ac7 slot add|list|remove`: manage the team's slots in the config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import click

from ac7_cli.options import config_option
from ac7_cli.secrets_output import show_enrolment, show_token
from ac7_core.config_edit import add_slot, enroll_totp, remove_slot
from ac7_core.config_file import load_config, update_config
from ac7_core.config_schema import AUTHORITIES, Authority
from ac7_core.totp import provisioning_uri


@click.group()
def slot() -> None:
    """Add, list and remove the team's slots (named identities with a role and an authority tier)."""


@slot.command("add")
@click.argument("name")
@click.option("--role", required=True, help="The slot's role (must exist unless --role-description is given).")
@click.option(
    "--authority",
    type=click.Choice(AUTHORITIES),
    default="individual-contributor",
    show_default=True,
    help="Authority tier.",
)
@click.option("--role-description", default=None, help="Create the role with this description if it is new.")
@click.option("--human", is_flag=True, help="Web login only: no bearer token, TOTP enrolment instead.")
@click.option("--totp", is_flag=True, help="Also enrol TOTP for web login.")
@click.option("--qr/--no-qr", default=True, show_default=True, help="Draw the TOTP enrolment as a QR code.")
@config_option
def add(
    name: str,
    role: str,
    authority: str,
    role_description: str | None,
    human: bool,
    totp: bool,
    qr: bool,
    config_path: Path,
) -> None:
    """Add slot NAME. Prints its bearer token (and TOTP enrolment, with --totp or --human) once."""

    def edit(doc: dict[str, Any], key: bytes) -> tuple[str | None, str | None]:
        token = add_slot(
            doc,
            name,
            role,
            cast(Authority, authority),
            bearer=not human,
            role_description=role_description,
        )
        secret = enroll_totp(doc, key, name) if (human or totp) else None
        return token, secret

    loaded, (token, secret) = update_config(config_path, edit)
    click.echo(f"Added slot {name!r} ({role}, {authority}).", err=True)
    if token is not None:
        show_token(name, token, context="new slot")
    if secret is not None:
        show_enrolment(name, secret, provisioning_uri(secret, f"{name}@{loaded.config.team.name}", "ac7"), qr=qr)


@slot.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_option
def list_(as_json: bool, config_path: Path) -> None:
    """List slots: name, role, authority and which credentials each has (never the credentials)."""
    config = load_config(config_path).config
    rows = [
        {
            "name": s.name,
            "role": s.role,
            "authority": s.authority,
            "bearer": s.token_hash is not None,
            "totp": s.totp_secret is not None,
        }
        for s in config.slots
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    headers = ("NAME", "ROLE", "AUTHORITY", "BEARER", "TOTP")
    table = [headers] + [
        (
            str(r["name"]),
            str(r["role"]),
            str(r["authority"]),
            "yes" if r["bearer"] else "-",
            "yes" if r["totp"] else "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@slot.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@config_option
def remove(name: str, yes: bool, config_path: Path) -> None:
    """Remove slot NAME; its token and TOTP secret stop working. The last director cannot be removed."""
    if not yes:
        click.confirm(f"Remove slot {name!r}? Its credentials stop working at once", abort=True)
    update_config(config_path, lambda doc, _key: remove_slot(doc, name))
    click.echo(f"Removed slot {name!r}.", err=True)
