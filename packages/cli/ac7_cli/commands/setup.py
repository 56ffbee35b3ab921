"""`ac7 setup`: create a team config, its key-encryption key and a first director slot."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from ac7_cli.options import config_option
from ac7_cli.secrets_output import show_enrolment, show_token
from ac7_core.config_file import create_config
from ac7_core.config_schema import NAME_RE
from ac7_core.errors import Ac7Error
from ac7_core.tokens import mint_token
from ac7_core.totp import match_step, new_secret, provisioning_uri

_CONFIRM_ATTEMPTS = 3


def _slot_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise click.BadParameter("must match ^[A-Za-z0-9._-]{1,64}$")
    return value


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _ask(value: str | None, prompt: str, default: str | None, wizard: bool, flag: str) -> str:
    if value is not None:
        return value
    if not wizard:
        if default is not None:
            return default
        raise Ac7Error(f"{flag} is required when not running in a terminal (or run ac7 setup in one)")
    answer: str = click.prompt(prompt, default=default)
    return answer


def build_team_doc(
    *, team: str, directive: str, brief: str, director: str, role: str, role_description: str
) -> tuple[dict[str, Any], str, str]:
    """A new team document with plaintext secrets (create_config hashes and seals them before writing)."""
    token, secret = mint_token(), new_secret()
    doc: dict[str, Any] = {
        "_comment": "ac7 team config. Tokens are stored as hashes and TOTP secrets encrypted; see ac7.example.json.",
        "team": {"name": team, "directive": directive, "brief": brief},
        "roles": {role: {"description": role_description, "instructions": ""}},
        "slots": [{"name": director, "role": role, "authority": "director", "token": token, "totpSecret": secret}],
        "https": {"mode": "off"},
    }
    return doc, token, secret


def _confirm_code(secret: str) -> int | None:
    """Ask for a code until one matches; returns its time-step (None if skipped or failed)."""
    for _ in range(_CONFIRM_ATTEMPTS):
        code: str = click.prompt("Enter the 6-digit code your authenticator shows (blank to skip)", default="")
        if not code.strip():
            return None
        step = match_step(secret, code)
        if step is not None:
            click.echo("Code accepted: the authenticator is set up.", err=True)
            return step
        click.echo("That code does not match; check the device clock and try again.", err=True)
    return None


def _burn_step(config_path: Path, slot: str, step: int) -> None:
    """Record the confirmation code's time-step as used, so nobody can log in with it afterwards."""
    from ac7_broker.store import Store

    directory = config_path.resolve().parent

    async def record() -> None:
        store = await Store.open(directory)
        try:
            await store.totp.accept_step(slot, step)
        finally:
            await store.close()

    asyncio.run(record())


@click.command()
@click.option("--team", "team_name", help="Team name.")
@click.option("--directive", help="One-line team directive, shown to every agent.")
@click.option("--brief", default=None, help="Longer team context for agents.")
@click.option("--director", callback=lambda _c, _p, v: None if v is None else _slot_name(v), help="First slot's name.")
@click.option("--role", "role_name", default=None, help="The director's role  [default: lead].")
@click.option("--role-description", default=None, help="What the role does  [default: Plans and reviews].")
@click.option("--qr/--no-qr", default=True, show_default=True, help="Draw the TOTP enrolment as a QR code.")
@click.option(
    "--non-interactive",
    is_flag=True,
    help="Never prompt; take everything from flags (implied without a terminal).",
)
@config_option
def setup(
    team_name: str | None,
    directive: str | None,
    brief: str | None,
    director: str | None,
    role_name: str | None,
    role_description: str | None,
    qr: bool,
    non_interactive: bool,
    config_path: Path,
) -> None:
    """Create a new team: config file, key-encryption key, and a first director slot.

    Run it in a terminal for a wizard, or pass --team and --director for a scripted setup. Prints the
    director's bearer token (for agents and the CLI) and TOTP enrolment (for the web UI) once. Refuses to
    overwrite an existing config.

    The key-encryption key comes from AC7_KEK, else AC7_KEK_PASSPHRASE, else a new ac7-kek.bin beside the config.
    """
    if config_path.exists():
        raise Ac7Error(f"{config_path}: a config already exists; refusing to overwrite it")
    if not config_path.resolve().parent.is_dir():
        raise Ac7Error(f"{config_path.parent}: no such directory; create it first")
    wizard = _interactive() and not non_interactive
    team = _ask(team_name, "Team name", None, wizard, "--team")
    directive_text = _ask(directive, "Team directive (one line)", "", wizard, "--directive")
    director_name = _slot_name(_ask(director, "Your slot name (the first director)", None, wizard, "--director"))
    role = _ask(role_name, "Your role", "lead", wizard, "--role")
    description = _ask(role_description, "What that role does", "Plans and reviews", wizard, "--role-description")
    doc, token, secret = build_team_doc(
        team=team,
        directive=directive_text,
        brief=brief or "",
        director=director_name,
        role=role,
        role_description=description,
    )
    loaded = create_config(config_path, doc)
    click.echo(f"Created {config_path} for team {team!r} (key-encryption key: {loaded.kek.source}).", err=True)
    show_token(director_name, token, context="director; for agents and the ac7 CLI")
    uri = provisioning_uri(secret, f"{director_name}@{team}", "ac7")
    show_enrolment(director_name, secret, uri, qr=qr)
    if wizard:
        step = _confirm_code(secret)
        if step is None:
            click.echo(f"Not confirmed. To start over with a new secret: ac7 enroll --slot {director_name}", err=True)
        else:
            _burn_step(config_path, director_name, step)
