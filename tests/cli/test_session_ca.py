"""The per-session CA: extensions, name constraints (checked by two verifiers), the public-only file, stale dirs."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from ac7_cli.runner.session_ca import CA_DIR_PREFIX, SessionCA, pem_certificates
from ac7_cli.runner.trace_scope import TraceScope, normalize_host


def _verify(ca: SessionCA, name: str) -> None:
    leaf, _ = ca.leaf(name)
    try:
        subject: verification.Subject = verification.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = verification.DNSName(name)
    store = verification.Store([ca.cert])
    verification.PolicyBuilder().store(store).build_server_verifier(subject).verify(leaf, [])


def test_ca_extensions_and_validity() -> None:
    before = datetime.datetime.now(datetime.UTC)
    ca = SessionCA.generate(["anthropic.com", "localhost"])
    cert = ca.cert
    assert isinstance(cert.public_key(), type(ca.leaf("localhost")[1].public_key()))  # EC, like its leaves
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.DNSName("anthropic.com"), x509.DNSName("localhost")]
    # No traced IP → every IP is excluded (otherwise IP SANs would be unconstrained).
    assert nc.value.excluded_subtrees == [
        x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
        x509.IPAddress(ipaddress.ip_network("::/0")),
    ]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(hours=24)
    assert cert.not_valid_before_utc < before - datetime.timedelta(minutes=1)  # backdated for clock skew
    assert cert.not_valid_after_utc > before + datetime.timedelta(hours=23)


def test_leaf_extensions_and_cache() -> None:
    ca = SessionCA.generate(["localhost", "127.0.0.1"])
    leaf, key = ca.leaf("LocalHost.")
    assert ca.leaf("localhost")[0] is leaf  # cached per normalised host
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.issuer == ca.cert.subject
    assert key.public_key().public_numbers() != ca.cert.public_key().public_numbers()  # type: ignore[union-attr]
    ip_leaf, _ = ca.leaf("127.0.0.1")
    ip_san = ip_leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ip_san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize("name", ["api.anthropic.com", "anthropic.com", "localhost", "127.0.0.1"])
def test_name_constraints_accept_traced_names(name: str) -> None:
    _verify(SessionCA.generate(["anthropic.com", "localhost", "127.0.0.1"]), name)


@pytest.mark.parametrize(
    "name", ["evil.example", "anthropic.com.evil.example", "evil-anthropic.com", "10.0.0.1", "::1"]
)
def test_name_constraints_reject_untraced_names(name: str) -> None:
    ca = SessionCA.generate(["anthropic.com", "localhost", "127.0.0.1"])
    with pytest.raises(verification.VerificationError):
        _verify(ca, name)


def test_no_traced_ip_means_no_ip_leaf_verifies() -> None:
    with pytest.raises(verification.VerificationError):
        _verify(SessionCA.generate(["anthropic.com"]), "127.0.0.1")


def test_without_name_constraints_any_name_verifies() -> None:
    ca = SessionCA.generate(["anthropic.com"], name_constraints=False)
    assert not any(isinstance(e.value, x509.NameConstraints) for e in ca.cert.extensions)
    _verify(ca, "evil.example")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_enforces_the_constraints_too(tmp_path: Path) -> None:
    """OpenSSL is what Node (Claude Code) verifies with."""
    ca = SessionCA.generate(["anthropic.com", "localhost"])
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    results = {}
    for name in ("api.anthropic.com", "evil.example", "127.0.0.1"):
        leaf_pem = ca.leaf(name)[0].public_bytes(serialization.Encoding.PEM)
        (tmp_path / "leaf.pem").write_bytes(leaf_pem)
        proc = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "leaf.pem")],
            capture_output=True,
            text=True,
            check=False,
        )
        results[name] = (proc.returncode, proc.stdout + proc.stderr)
    assert results["api.anthropic.com"][0] == 0, results
    assert results["evil.example"][0] != 0 and "subtree" in results["evil.example"][1], results
    assert results["127.0.0.1"][0] != 0 and "subtree" in results["127.0.0.1"][1], results


def test_validity_is_capped_at_24_hours() -> None:
    with pytest.raises(ValueError, match="24 hours"):
        SessionCA.generate(["anthropic.com"], validity=datetime.timedelta(hours=25))


def test_public_cert_file_is_public_0600_in_0700_dir_and_deleted(tmp_path: Path) -> None:
    ca = SessionCA.generate(["anthropic.com"])
    path = ca.write_public_cert(tmp_path)
    assert ca.write_public_cert(tmp_path) == path  # idempotent
    assert path.parent.parent == tmp_path
    assert path.parent.name.startswith(f"{CA_DIR_PREFIX}{os.getpid()}-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = path.read_bytes()
    assert data == ca.cert_pem and b"PRIVATE" not in data
    assert x509.load_pem_x509_certificate(data) == ca.cert
    bundle = ca.write_bundle(
        "b.pem", [ca.cert_pem, b"junk\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"]
    )
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert bundle.read_bytes().count(b"BEGIN CERTIFICATE") == 1 and b"PRIVATE" not in bundle.read_bytes()
    ca.cleanup()
    assert not path.parent.exists()
    ca.cleanup()  # twice is fine


def test_clean_stale_removes_only_dead_runners_dirs(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f"{CA_DIR_PREFIX}{dead_pid}-abc"
    mine = tmp_path / f"{CA_DIR_PREFIX}{os.getpid()}-def"
    alive = tmp_path / f"{CA_DIR_PREFIX}1-ghi"  # pid 1 always runs
    junk = tmp_path / f"{CA_DIR_PREFIX}notapid"
    for d in (stale, mine, alive, junk):
        d.mkdir()
        (d / "session-ca.pem").write_text("x")
    link = tmp_path / f"{CA_DIR_PREFIX}{dead_pid}-link"
    link.symlink_to(mine)
    assert SessionCA.clean_stale(tmp_path) == 1
    assert not stale.exists()
    assert mine.exists() and alive.exists() and junk.exists() and (mine / "session-ca.pem").exists()


def test_pem_certificates_extracts_only_certificates() -> None:
    ca = SessionCA.generate(["anthropic.com"])
    mixed = b"-----BEGIN EC PRIVATE KEY-----\nAA\n-----END EC PRIVATE KEY-----\n" + ca.cert_pem.replace(b"\n", b"\r\n")
    assert pem_certificates(mixed) == [ca.cert_pem.rstrip(b"\n")]


# --- scope (pure) ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("API.Anthropic.COM.", "api.anthropic.com"),
        ("https://gateway.corp:8443/v1", "gateway.corp"),
        ("gateway.corp:8443", "gateway.corp"),
        ("[::1]:443", "::1"),
        ("0:0::1", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_normalize_host(value: str, expected: str) -> None:
    assert normalize_host(value) == expected


@pytest.mark.parametrize("value", ["", "*.anthropic.com", "a b", "-bad.com", "https://", "x" * 64 + ".com"])
def test_normalize_host_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(value)


def test_scope_matching() -> None:
    scope = TraceScope(["gateway.corp", "127.0.0.1"])
    assert scope.hosts == ("anthropic.com", "gateway.corp", "127.0.0.1")
    for host in ("anthropic.com", "API.ANTHROPIC.COM", "api.anthropic.com.", "a.b.gateway.corp", "127.0.0.1"):
        assert scope.matches(host), host
    for host in (
        "anthropic.com.evil.com",
        "evil-anthropic.com",
        "xanthropic.com",
        "corp",
        "127.0.0.2",
        "::1",
        "",
        "*.anthropic.com",
    ):
        assert not scope.matches(host), host
