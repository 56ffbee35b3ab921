"""The per-session MITM certificate authority: generated in memory, its private key never written anywhere.

An EC P-256 CA valid for at most 24 hours (backdated a few minutes for clock skew) that, by default, carries X.509
name constraints limited to the traced hosts: even a leaked CA cannot mint a certificate any client would accept
for another name. Leaves are minted per host (SAN, SKI+AKI, EKU serverAuth) and cached for the session.

Only the public certificate reaches the disk: `write_public_cert()` puts it (0600) in a fresh 0700 directory named
`ac7-ca-<pid>-…`, `cleanup()` deletes that directory, and `clean_stale()` removes the ones left by a runner that was
killed (its pid is dead).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ac7_cli.runner.trace_scope import normalize_host, parse_ip

log = logging.getLogger("ac7.runner.ca")

CA_DIR_PREFIX = "ac7-ca-"
CA_CERT_FILENAME = "session-ca.pem"
CA_VALIDITY = datetime.timedelta(hours=24)
CLOCK_SKEW = datetime.timedelta(minutes=5)
LEAF_CACHE_SIZE = 256
_PEM_CERT = re.compile(rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----\r?\n.+?-----END (?:TRUSTED )?CERTIFICATE-----", re.S)


def pem_certificates(data: bytes) -> list[bytes]:
    """The certificate blocks of a PEM bundle, and nothing else (a stray private key in a bundle is dropped)."""
    return [m.group(0).replace(b"\r\n", b"\n") for m in _PEM_CERT.finditer(data)]


def _write_new_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _general_name(host: str) -> x509.GeneralName:
    ip = parse_ip(host)
    return x509.IPAddress(ip) if ip is not None else x509.DNSName(host)


def _name_constraints(hosts: Iterable[str]) -> x509.NameConstraints:
    dns = [h for h in hosts if parse_ip(h) is None]
    ips = [ip for h in hosts if (ip := parse_ip(h)) is not None]
    permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    permitted += [x509.IPAddress(ipaddress.ip_network(ip)) for ip in ips]
    # RFC 5280 constrains only the name forms that appear, so a form we do not permit must be excluded outright
    # (the CA/Browser Forum's rule for technically constrained CAs): no traced IP → every IP excluded.
    excluded: list[x509.GeneralName] = []
    if not ips:
        excluded += [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")), x509.IPAddress(ipaddress.ip_network("::/0"))]
    if not dns:
        excluded.append(x509.DNSName(""))
    return x509.NameConstraints(permitted_subtrees=permitted or None, excluded_subtrees=excluded or None)


class SessionCA:
    """One session's CA. Build it with `SessionCA.generate(...)`; the private key stays in this object."""

    def __init__(
        self,
        cert: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        traced_hosts: tuple[str, ...],
        name_constrained: bool,
    ) -> None:
        self.cert = cert
        self._key: ec.EllipticCurvePrivateKey | None = key
        self.traced_hosts = traced_hosts
        self.name_constrained = name_constrained
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
        self.directory: Path | None = None
        self.cert_path: Path | None = None
        self._ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        # One key for every leaf, distinct from the CA key (leaves are all equally trusted, so per-host keys buy
        # nothing); generated once so a new host costs a signature, not a key generation.
        self._leaf_key: ec.EllipticCurvePrivateKey | None = ec.generate_private_key(ec.SECP256R1())
        self._leaves: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}

    @classmethod
    def generate(
        cls,
        traced_hosts: Iterable[str],
        *,
        name_constraints: bool = True,
        validity: datetime.timedelta = CA_VALIDITY,
    ) -> SessionCA:
        if validity > CA_VALIDITY or validity <= datetime.timedelta(0):
            raise ValueError("a session CA is valid for at most 24 hours")
        hosts = tuple(dict.fromkeys(normalize_host(h) for h in traced_hosts))
        if name_constraints and not hosts:
            raise ValueError("a name-constrained CA needs at least one traced host")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"ac7 session CA {secrets.token_hex(4)}"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ac7"),
            ]
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now - CLOCK_SKEW + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if name_constraints:
            builder = builder.add_extension(_name_constraints(hosts), critical=True)
        cert = builder.sign(key, hashes.SHA256())
        return cls(cert, key, hosts, name_constraints)

    @property
    def not_valid_after(self) -> datetime.datetime:
        return self.cert.not_valid_after_utc

    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    def leaf(self, hostname: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A server certificate for `hostname` (cached per host). Scope is the caller's business: with name
        constraints on, a leaf for an untraced name is minted but no client will accept it."""
        host = normalize_host(hostname)
        cached = self._leaves.get(host)
        if cached is not None:
            return cached
        ca_key, leaf_key = self._key, self._leaf_key
        if ca_key is None or leaf_key is None:
            raise RuntimeError("this session CA's keys were discarded")
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ac7 trace")]
        if parse_ip(host) is None:
            # No CN for an IP leaf: OpenSSL checks a CN against DNS name constraints when there is no DNS SAN.
            subject.insert(0, x509.NameAttribute(NameOID.COMMON_NAME, host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self.cert.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.cert.not_valid_before_utc)
            .not_valid_after(self.cert.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_general_name(host)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        if len(self._leaves) >= LEAF_CACHE_SIZE:
            self._leaves.pop(next(iter(self._leaves)))
        self._leaves[host] = (cert, leaf_key)
        return cert, leaf_key

    # --- the public certificate on disk -------------------------------------------------------------------------

    def write_public_cert(self, tmp_root: Path | None = None) -> Path:
        """Write the CA certificate (public only, 0600) into a fresh 0700 directory under `tmp_root` (default: the
        system temp dir) and return its path. Idempotent: a second call returns the same file."""
        if self.cert_path is not None:
            return self.cert_path
        directory = Path(tempfile.mkdtemp(prefix=f"{CA_DIR_PREFIX}{os.getpid()}-", dir=tmp_root))
        directory.chmod(0o700)
        path = directory / CA_CERT_FILENAME
        _write_new_file(path, self.cert_pem)
        self.directory, self.cert_path = directory, path
        return path

    def write_bundle(self, filename: str, sources: Iterable[bytes]) -> Path:
        """Write a PEM bundle of the certificates found in `sources` (public certificates only, deduplicated, 0600)
        into this CA's directory. Used for the upstream trust bundle mitmproxy verifies servers against."""
        if self.directory is None:
            self.write_public_cert()
        assert self.directory is not None
        if "/" in filename or filename in ("", ".", ".."):
            raise ValueError(f"bad bundle name {filename!r}")
        blocks: dict[bytes, None] = {}
        for data in sources:
            for block in pem_certificates(data):
                blocks.setdefault(block, None)
        path = self.directory / filename
        _write_new_file(path, b"\n".join(blocks) + b"\n")
        return path

    def discard_keys(self) -> None:
        """Drop the private keys (at teardown): from here on this CA can mint nothing. `leaf()` raises."""
        self._key = None
        self._leaf_key = None
        self._leaves.clear()

    def cleanup(self) -> None:
        """Delete the directory holding the public certificate (and any bundle). Safe to call twice."""
        directory, self.directory, self.cert_path = self.directory, None, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def clean_stale(tmp_root: Path | None = None) -> int:
        """Remove `ac7-ca-<pid>-…` directories (ours, by uid) whose runner process is gone. Returns how many."""
        root = Path(tmp_root or tempfile.gettempdir())
        removed = 0
        for entry in root.glob(f"{CA_DIR_PREFIX}*"):
            try:
                pid = int(entry.name[len(CA_DIR_PREFIX) :].split("-", 1)[0])
                st = entry.lstat()
            except (ValueError, OSError):
                continue
            if pid == os.getpid() or _alive(pid) or entry.is_symlink() or not entry.is_dir():
                continue
            if st.st_uid != os.getuid():
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        if removed:
            log.info("removed %d CA dir(s) left by ended ac7 runners", removed)
        return removed

    def __repr__(self) -> str:
        return f"SessionCA(hosts={list(self.traced_hosts)!r}, constrained={self.name_constrained})"


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never signal a process group; treat as unknown/alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
