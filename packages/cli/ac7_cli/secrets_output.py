"""Showing a secret exactly once: the value on stdout (scriptable), the framing on stderr."""

from __future__ import annotations

import io

import click
import segno


def show_token(slot: str, token: str, *, context: str) -> None:
    click.echo(f'Bearer token for slot "{slot}" ({context}). Save it now: it is shown only this once.', err=True)
    click.echo(token)


def qr_text(uri: str) -> str:
    out = io.StringIO()
    # compact: half-height block characters, so the code fits a normal terminal. Dark-on-light via reverse video.
    segno.make(uri, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def show_enrolment(slot: str, secret: str, uri: str, *, qr: bool) -> None:
    click.echo(
        f'TOTP enrolment for slot "{slot}": scan the code or add the secret to an authenticator app.',
        err=True,
    )
    if qr:
        click.echo(qr_text(uri), err=True)
    click.echo(f"secret: {secret}")
    click.echo(f"uri:    {uri}")
