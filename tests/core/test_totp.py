"""TOTP: RFC 4226 / RFC 6238 known answers, the ±1 step window, the replay guard and enrolment URIs."""

from __future__ import annotations

import base64
import time
import urllib.parse

import pyotp
import pytest

from ac7_core import totp

# RFC 4226 Appendix D / RFC 6238 Appendix B: the ASCII secret "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode("ascii")

RFC4226_HOTP = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]

RFC6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_700_000_015.0  # 15 s into a step
STEP = int(NOW // 30)


def test_rfc_secret_matches_the_base32_in_the_rfc() -> None:
    assert RFC_SECRET == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226_HOTP)))
def test_hotp_rfc4226_appendix_d(counter: int, expected: str) -> None:
    assert totp.hotp(RFC_SECRET, counter) == expected


@pytest.mark.parametrize(("unix_time", "expected"), RFC6238_SHA1)
def test_totp_rfc6238_appendix_b_sha1_8_digits(unix_time: int, expected: str) -> None:
    assert totp.code_at(RFC_SECRET, unix_time, digits=8) == expected


def test_code_defaults_to_six_digits_and_30_second_steps() -> None:
    # 59 s is step 1 (RFC 6238 T0 = 0, X = 30); the 6-digit code is the HOTP truncation of that step.
    assert totp.step_at(59) == 1
    assert totp.step_at(60) == 2
    assert totp.step_at(29.999) == 0
    assert totp.code_at(RFC_SECRET, 59) == RFC4226_HOTP[1]
    assert totp.code_at(RFC_SECRET, 60) == RFC4226_HOTP[2]


def _code(step: int) -> str:
    return totp.hotp(SECRET, step)


def test_window_codes_are_distinct_for_the_chosen_secret() -> None:
    # Guard for the tests below: a coincidental collision between nearby steps would make them meaningless.
    codes = [_code(STEP + d) for d in range(-2, 3)]
    assert len(set(codes)) == 5


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_match_step_accepts_current_and_adjacent_steps(delta: int) -> None:
    assert totp.match_step(SECRET, _code(STEP + delta), now=NOW) == STEP + delta


@pytest.mark.parametrize("delta", [-3, -2, 2, 3])
def test_match_step_rejects_steps_outside_the_window(delta: int) -> None:
    assert totp.match_step(SECRET, _code(STEP + delta), now=NOW) is None


def test_match_step_uses_the_clock_when_now_is_omitted() -> None:
    assert totp.match_step(SECRET, totp.code_at(SECRET, time.time())) is not None


def test_match_step_rejects_a_wrong_code() -> None:
    wrong = f"{(int(_code(STEP)) + 1) % 1_000_000:06d}"
    window = {_code(STEP + d) for d in (-1, 0, 1)}
    assert wrong not in window
    assert totp.match_step(SECRET, wrong, now=NOW) is None


@pytest.mark.parametrize(
    "code",
    [
        "12345",
        "1234567",
        "abcdef",
        "",
        " 12345 6",
        "12 3456",
        "+12345",
        "-12345",
        "１２３４５６",  # fullwidth digits  # noqa: RUF001
        "١٢٣٤٥٦",  # Arabic-Indic digits
        "12345\x00",
    ],
)
def test_match_step_rejects_malformed_codes(code: str) -> None:
    assert totp.match_step(SECRET, code, now=NOW) is None


def test_match_step_rejects_current_code_with_an_extra_digit() -> None:
    code = _code(STEP)
    assert totp.match_step(SECRET, code + "0", now=NOW) is None
    assert totp.match_step(SECRET, code[:-1], now=NOW) is None


def test_after_step_is_the_replay_guard() -> None:
    code = _code(STEP)
    assert totp.match_step(SECRET, code, now=NOW, after_step=STEP) is None
    assert totp.match_step(SECRET, code, now=NOW, after_step=STEP + 1) is None
    assert totp.match_step(SECRET, code, now=NOW, after_step=STEP - 1) == STEP
    assert totp.match_step(SECRET, code, now=NOW, after_step=None) == STEP


def test_after_step_rejects_an_older_code_once_a_newer_one_was_accepted() -> None:
    # The next step's code was used (clock skew); the current step's code must not work any more.
    assert totp.match_step(SECRET, _code(STEP + 1), now=NOW, after_step=STEP - 1) == STEP + 1
    assert totp.match_step(SECRET, _code(STEP), now=NOW, after_step=STEP + 1) is None
    assert totp.match_step(SECRET, _code(STEP - 1), now=NOW, after_step=STEP + 1) is None


def test_provisioning_uri_parses_to_an_otpauth_totp_uri() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "alice smith", "ac7 acme")
    parsed = urllib.parse.urlparse(uri)
    assert parsed.scheme == "otpauth"
    assert parsed.netloc == "totp"
    assert urllib.parse.unquote(parsed.path) == "/ac7 acme:alice smith"
    query = urllib.parse.parse_qs(parsed.query, strict_parsing=True)
    assert query == {
        "secret": [secret],
        "issuer": ["ac7 acme"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }


def test_provisioning_uri_is_importable_by_an_authenticator_library() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "alice", "ac7")
    imported = pyotp.parse_uri(uri)
    assert isinstance(imported, pyotp.TOTP)
    assert imported.secret == secret
    assert imported.issuer == "ac7"
    assert imported.name == "alice"
    assert imported.at(NOW) == totp.code_at(secret, NOW)


def test_new_secret_is_base32_with_at_least_160_bits() -> None:
    secret = totp.new_secret()
    assert totp.SECRET_RE.match(secret)
    raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert len(raw) * 8 >= 160


def test_new_secret_is_random() -> None:
    assert len({totp.new_secret() for _ in range(20)}) == 20
