"""TLS for the embedded mitmproxy: leaves from the in-memory SessionCA, and the upstream trust bundle.

`SessionTlsConfig` replaces mitmproxy's stock `TlsConfig` (same addon name). The stock one builds its CertStore from
`confdir`, which *writes* `mitmproxy-ca.pem` (private key included) and friends; it does that at registration and
again from its `running` hook. This one never touches `confdir`, mints each client-facing leaf from the SessionCA
for the validated traced host only (never from names in the upstream certificate, which a name-constrained CA could
not vouch for anyway), and answers no magic CRL path.

mitmproxy verifies upstream servers against one PEM file (it falls back to certifi only when no file is given), so
`upstream_trust_sources()` gathers certifi, the system store, the runner's own `SSL_CERT_FILE` and `--upstream-ca`
for `SessionCA.write_bundle()`; the system's hashed certificate directory is passed alongside.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path

import certifi
from cryptography import x509
from mitmproxy import certs, http
from mitmproxy.addons import tlsconfig
from mitmproxy.proxy import context as mcontext

from ac7_cli.runner.session_ca import SessionCA, pem_certificates

log = logging.getLogger("ac7.runner.trace")

_CONFDIR_OPTIONS = frozenset({"certs", "confdir", "key_size", "cert_passphrase"})


class SessionTlsConfig(tlsconfig.TlsConfig):
    """mitmproxy's TlsConfig with an in-memory CertStore and leaves minted by the SessionCA."""

    name = "tlsconfig"

    def __init__(self, ca: SessionCA, leaf_host: Callable[[mcontext.Context], str | None]) -> None:
        self._ca = ca
        self._leaf_host = leaf_host
        # The stock tls_start_client reads only `dhparams` from the store (and the stock `request` hook the CA
        # serial, which `request` below no longer needs). No DH parameters: the leaves are EC, so DHE-RSA suites
        # could not be used anyway, and ECDHE is unaffected.
        self.certstore = certs.CertStore(
            default_privatekey=None,  # type: ignore[arg-type]  # never used: get_cert below never calls the store
            default_ca=certs.Cert(ca.cert),
            default_chain_file=None,
            default_crl=b"",
            dhparams=certs.DHParams(b""),
        )

    def configure(self, updated: set[str]) -> None:
        super().configure(set(updated) - _CONFDIR_OPTIONS)  # type: ignore[no-untyped-call]  # untyped in mitmproxy

    def running(self) -> None:
        # The stock hook calls configure("confdir") unconditionally, which would build a store on disk.
        return None

    def request(self, flow: http.HTTPFlow) -> None:
        # The stock hook answers `/mitmproxy-<serial>.crl` on every host; a traced API must see every request.
        return None

    def get_cert(self, conn_context: mcontext.Context) -> certs.CertStoreEntry:
        host = self._leaf_host(conn_context)
        if host is None:
            # Only a traced tunnel whose SNI matched its CONNECT host ever reaches client TLS (see trace_layers);
            # anything else is a bug, and failing the handshake is the safe outcome.
            raise ValueError("refusing to mint a certificate outside the trace scope")
        cert, key = self._ca.leaf(host)
        return certs.CertStoreEntry(
            cert=certs.Cert(cert),
            privatekey=key,  # type: ignore[arg-type]  # mitmproxy annotates RSA; its code is key-type agnostic
            chain_file=None,
            chain_certs=[],
        )


def system_trust_paths() -> tuple[Path | None, Path | None]:
    """OpenSSL's compiled-in CA file and hashed directory (not the environment's overrides), if they exist."""
    paths = ssl.get_default_verify_paths()
    cafile = Path(paths.openssl_cafile) if paths.openssl_cafile else None
    capath = Path(paths.openssl_capath) if paths.openssl_capath else None
    return (
        cafile if cafile is not None and cafile.is_file() else None,
        capath if capath is not None and capath.is_dir() else None,
    )


def upstream_trust_sources(env: Mapping[str, str], upstream_ca: Path | None) -> list[bytes]:
    """PEM data to verify upstream servers against: certifi, the system CA file, `SSL_CERT_FILE` from `env`, and
    `upstream_ca`. A named `upstream_ca` that holds no certificate is an error; an unreadable SSL_CERT_FILE is
    skipped with a warning (the runner's own environment may be stale)."""
    sources: list[bytes] = [Path(certifi.where()).read_bytes()]
    cafile, _ = system_trust_paths()
    if cafile is not None:
        sources.append(cafile.read_bytes())
    env_file = env.get("SSL_CERT_FILE")
    if env_file:
        try:
            sources.append(Path(env_file).read_bytes())
        except OSError as e:
            log.warning("SSL_CERT_FILE %s is not readable (%s); not adding it to the upstream trust", env_file, e)
    if upstream_ca is not None:
        try:
            data = Path(upstream_ca).read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read the upstream CA file {upstream_ca}: {e.strerror or e}") from e
        blocks = pem_certificates(data)
        if not blocks:
            raise ValueError(f"no PEM certificate found in the upstream CA file {upstream_ca}")
        for block in blocks:
            try:
                x509.load_pem_x509_certificate(block)
            except ValueError as e:
                raise ValueError(f"the upstream CA file {upstream_ca} holds an unreadable certificate: {e}") from e
        sources.append(data)
    return sources
