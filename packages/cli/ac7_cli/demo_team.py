"""The demo team `make run` starts with, and the instructions printed for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ac7_cli.secrets_output import qr_text
from ac7_core.config_file import create_config
from ac7_core.tokens import mint_token
from ac7_core.totp import new_secret, provisioning_uri


def create_demo_team(config_path: Path, host: str, port: int) -> Callable[[str], None]:
    """Write a demo config (a human director and an agent slot); returns a callback that prints how to use it."""
    director_token, agent_token, secret = mint_token(), mint_token(), new_secret()
    doc = {
        "_comment": "Demo team created by `ac7 serve --demo`. See ac7.example.json for every option.",
        "team": {"name": "demo", "directive": "Try ac7 out", "brief": ""},
        "roles": {
            "lead": {"description": "Plans and reviews", "instructions": ""},
            "engineer": {"description": "Writes and tests code", "instructions": ""},
        },
        "slots": [
            {
                "name": "director",
                "role": "lead",
                "authority": "director",
                "token": director_token,
                "totpSecret": secret,
            },
            {"name": "builder", "role": "engineer", "authority": "individual-contributor", "token": agent_token},
        ],
        "https": {"mode": "off"},
    }
    create_config(config_path, doc)
    uri = provisioning_uri(secret, "director@demo", "ac7")

    def announce(url: str) -> None:
        click.echo(
            f"""
Created demo team in {config_path}. These secrets are shown once; the file keeps only hashes.

Web UI  {url}/login  as "director": add this to an authenticator app (secret {secret})
{qr_text(uri)}
Director token (CLI):  {director_token}
Agent "builder" token: {agent_token}

Try it:
  AC7_URL={url} AC7_TOKEN={director_token} ac7 roster
  AC7_URL={url} AC7_TOKEN={director_token} ac7 push --to builder "hello"
  AC7_URL={url} AC7_TOKEN={agent_token} ac7 history
""",
            err=True,
        )

    return announce
