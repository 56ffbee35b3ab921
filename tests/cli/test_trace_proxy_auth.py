"""The trace proxy's credential check (`trace_proxy_auth`); the proxy-level behaviour is in test_trace_host.py."""

from __future__ import annotations

import base64
import hmac

import pytest

from ac7_cli.runner import trace_proxy_auth
from ac7_cli.runner.trace_proxy_auth import credentials_match, new_proxy_password

EXPECTED = b"ac7:s3cret-PASSWORD_0123456789"


def _basic(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(raw).decode()}"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (_basic(EXPECTED), True),
        (_basic(EXPECTED, "basic"), True),  # the scheme is case-insensitive (RFC 9110)
        ("  " + _basic(EXPECTED) + " ", True),
        ("", False),
        ("Basic", False),
        ("Basic ", False),
        (_basic(EXPECTED[:-1]), False),
        (_basic(EXPECTED + b"x"), False),
        (_basic(EXPECTED.upper()), False),
        (_basic(EXPECTED, "Bearer"), False),
        ("Bearer " + EXPECTED.decode(), False),
        ("Basic " + base64.b64encode(b"ac7:pw").decode().rstrip("="), False),  # unpadded
        ("Basic " + base64.b64encode(EXPECTED).decode()[:8] + " " + base64.b64encode(EXPECTED).decode()[8:], False),
        ("Basic " + base64.urlsafe_b64encode(b"\xfb\xff" + EXPECTED).decode(), False),
        ("Basic not*base64", False),
        (_basic(EXPECTED) + ", " + _basic(EXPECTED), False),
    ],
)
def test_credentials_match(value: str, ok: bool) -> None:
    assert credentials_match(value, EXPECTED) is ok


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(trace_proxy_auth.hmac, "compare_digest", spy)
    assert not credentials_match(_basic(b"ac7:guess"), EXPECTED)
    assert credentials_match(_basic(EXPECTED), EXPECTED)
    assert calls == [(b"ac7:guess", EXPECTED), (EXPECTED, EXPECTED)]


def test_passwords_are_fresh_and_url_safe() -> None:
    passwords = {new_proxy_password() for _ in range(100)}
    assert len(passwords) == 100
    for password in passwords:
        assert len(password) == 43  # 256 bits
        assert set(password) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
