"""`enc-v1` sealed fields: format, round trip, AAD binding, tamper and malformed-value errors."""

from __future__ import annotations

import base64
import re
import secrets

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ac7_core import sealed
from ac7_core.errors import Ac7Error
from ac7_core.sealed import SealError

ALICE = "slots/alice/totpSecret"
BOB = "slots/bob/totpSecret"
FORMAT = re.compile(r"^enc-v1:([A-Za-z0-9_-]+):([A-Za-z0-9_-]+):([A-Za-z0-9_-]*)$")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


def _one_line_naming(exc: pytest.ExceptionInfo[SealError], field: str) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(field + ":"), message
    return message


@pytest.mark.parametrize("plaintext", ["JBSWY3DPEHPK3PXP", "", "ünïcödé ✓", "x" * 5000])
def test_round_trip(key: bytes, plaintext: str) -> None:
    value = sealed.seal(key, plaintext, ALICE)
    assert sealed.is_sealed(value)
    assert sealed.unseal(key, value, ALICE) == plaintext


def test_format_and_layout(key: bytes) -> None:
    value = sealed.seal(key, "JBSWY3DPEHPK3PXP", ALICE)
    m = FORMAT.match(value)
    assert m, value
    assert sealed.SEALED_RE.match(value)
    iv, tag, ct = (_b64d(p) for p in m.groups())
    assert len(iv) == 12
    assert len(tag) == 16
    assert len(ct) == len(b"JBSWY3DPEHPK3PXP")
    assert "=" not in value  # unpadded base64url
    # Independently decryptable: AES-256-GCM, iv:tag:ciphertext order, field identity as AAD.
    assert AESGCM(key).decrypt(iv, ct + tag, ALICE.encode()) == b"JBSWY3DPEHPK3PXP"


def test_fresh_iv_each_call(key: bytes) -> None:
    values = [sealed.seal(key, "same", ALICE) for _ in range(50)]
    ivs = {v.split(":")[1] for v in values}
    assert len(ivs) == 50
    assert len(set(values)) == 50


def test_is_sealed() -> None:
    assert sealed.is_sealed("enc-v1:a:b:c")
    assert not sealed.is_sealed("JBSWY3DPEHPK3PXP")
    assert not sealed.is_sealed("enc-v2:a:b:c")


def test_aad_binding_rejects_a_value_copied_to_another_field(key: bytes) -> None:
    value = sealed.seal(key, "JBSWY3DPEHPK3PXP", ALICE)
    with pytest.raises(SealError) as exc:
        sealed.unseal(key, value, BOB)
    message = _one_line_naming(exc, BOB)
    assert "JBSWY3DPEHPK3PXP" not in message
    assert "another field" in message
    assert sealed.unseal(key, value, ALICE) == "JBSWY3DPEHPK3PXP"


def test_wrong_key_fails_naming_the_field(key: bytes) -> None:
    value = sealed.seal(key, "secret-value", ALICE)
    with pytest.raises(SealError) as exc:
        sealed.unseal(secrets.token_bytes(32), value, ALICE)
    message = _one_line_naming(exc, ALICE)
    assert "key" in message
    assert "secret-value" not in message


def test_seal_error_is_an_ac7_error() -> None:
    assert issubclass(SealError, Ac7Error)


def _flip(text: str, index: int = 0) -> str:
    # Replace one character with another base64url character; index 0 always carries six full bits.
    replacement = "B" if text[index] != "B" else "C"
    return text[:index] + replacement + text[index + 1 :]


@pytest.mark.parametrize("part", [1, 2, 3], ids=["iv", "tag", "ciphertext"])
@pytest.mark.parametrize("index", [0, 5])
def test_tampered_parts_fail(key: bytes, part: int, index: int) -> None:
    value = sealed.seal(key, "JBSWY3DPEHPK3PXPJBSWY3DP", ALICE)
    parts = value.split(":")
    parts[part] = _flip(parts[part], index)
    tampered = ":".join(parts)
    assert tampered != value
    with pytest.raises(SealError) as exc:
        sealed.unseal(key, tampered, ALICE)
    _one_line_naming(exc, ALICE)


def test_tampered_plaintext_length_fails(key: bytes) -> None:
    value = sealed.seal(key, "JBSWY3DPEHPK3PXP", ALICE)
    parts = value.split(":")
    parts[3] = _b64e(_b64d(parts[3])[:-1])  # truncated ciphertext
    with pytest.raises(SealError) as exc:
        sealed.unseal(key, ":".join(parts), ALICE)
    _one_line_naming(exc, ALICE)


def _valid_parts(key: bytes) -> list[str]:
    return sealed.seal(key, "JBSWY3DPEHPK3PXP", ALICE).split(":")


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda p: ":".join(p[:3]), "malformed"),  # three parts
        (lambda p: ":".join([*p, "extra"]), "malformed"),  # five parts
        (lambda p: "enc-v2:" + ":".join(p[1:]), "malformed"),  # wrong version
        (lambda p: ":".join(p[1:]), "malformed"),  # no prefix
        (lambda p: "", "malformed"),
        (lambda p: "JBSWY3DPEHPK3PXP", "malformed"),  # a plaintext where a sealed value belongs
        (lambda p: f"enc-v1:{p[1][:-1]}+:{p[2]}:{p[3]}", "malformed"),  # standard-base64 character
        (lambda p: f"enc-v1:{p[1]}:{p[2]}:{p[3]}=", "malformed"),  # padding
        (lambda p: f"enc-v1::{p[2]}:{p[3]}", "malformed"),  # empty iv
        (lambda p: f"enc-v1:{p[1]}A:{p[2]}:{p[3]}", "base64"),  # 17 chars: impossible base64 length
        (lambda p: f"enc-v1:{p[1]}:{p[2]}:{p[3]}AAA", "base64"),  # 25 chars
        (lambda p: f"enc-v1:{_b64e(b'x' * 8)}:{p[2]}:{p[3]}", "12 bytes"),  # short iv
        (lambda p: f"enc-v1:{_b64e(b'x' * 16)}:{p[2]}:{p[3]}", "12 bytes"),  # long iv
        (lambda p: f"enc-v1:{p[1]}:{_b64e(b'x' * 8)}:{p[3]}", "tag 16"),  # short tag
    ],
)
def test_malformed_values_fail_with_one_line_naming_the_field(key: bytes, build, fragment: str) -> None:  # type: ignore[no-untyped-def]
    value = build(_valid_parts(key))
    with pytest.raises(SealError) as exc:
        sealed.unseal(key, value, BOB)
    message = _one_line_naming(exc, BOB)
    assert fragment in message


def test_non_utf8_plaintext_is_reported(key: bytes) -> None:
    iv = secrets.token_bytes(12)
    out = AESGCM(key).encrypt(iv, b"\xff\xfe", ALICE.encode())
    value = f"enc-v1:{_b64e(iv)}:{_b64e(out[-16:])}:{_b64e(out[:-16])}"
    with pytest.raises(SealError) as exc:
        sealed.unseal(key, value, ALICE)
    assert "UTF-8" in _one_line_naming(exc, ALICE)


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_wrong_length_key_rejected(length: int) -> None:
    bad = secrets.token_bytes(length)
    with pytest.raises(SealError, match="32 bytes"):
        sealed.seal(bad, "x", ALICE)
    good = sealed.seal(secrets.token_bytes(32), "x", ALICE)
    with pytest.raises(SealError, match="32 bytes"):
        sealed.unseal(bad, good, ALICE)
