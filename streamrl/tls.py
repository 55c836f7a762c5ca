"""A local development CA and certificates, made with ``cryptography`` (no OpenSSL shell-outs).

``streamrl tls dev-ca --out DIR`` writes, into ``DIR``:

- ``ca.pem`` / ``ca.key``: a self-signed CA (``security.ca_file``, Kafka's ``ssl_ca_location``);
- ``server.pem`` / ``server.key``: a server certificate signed by it for the given hosts (DNS names
  and IP addresses in its subjectAltName), for StreamRL's HTTPS servers (``*.tls.cert_file`` /
  ``key_file``) and the local Kafka broker;
- ``server.p12`` + ``server.p12.password``: the same key and chain as a PKCS#12 keystore (what a
  Java service such as a Kafka broker reads; Kafka 4 also reads the PEM files).

Private keys are written with mode 0600. For development and tests only: a deployment uses
certificates from its own CA (cert-manager, a corporate PKI).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_HOSTS", "DevCA", "make_dev_ca"]

DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevCA:
    """The files :func:`make_dev_ca` wrote (absolute paths)."""

    dir: Path
    ca_file: Path
    ca_key_file: Path
    cert_file: Path
    key_file: Path
    keystore_file: Path
    keystore_password: str

    @property
    def keystore_password_file(self) -> Path:
        """File holding the PKCS#12 keystore's password."""
        return self.keystore_file.with_name(self.keystore_file.name + ".password")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StreamRL development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def make_dev_ca(
    out_dir: Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 825, common_name: str | None = None
) -> DevCA:
    """Make a CA and a server certificate for ``hosts`` in ``out_dir`` (created; files replaced).

    Args:
        out_dir: directory for the files (see the module docstring).
        hosts: DNS names and IP addresses the server certificate is valid for.
        common_name: the certificate's subject CN (default: the first host); a TLS client checks
            the hosts, a Kafka broker maps a client certificate to the principal ``User:<CN>``.
        days: validity of both certificates, in days.

    Returns:
        The paths written and the keystore password.

    Raises:
        ValueError: ``hosts`` is empty.
        OSError: ``out_dir`` cannot be written.
    """
    if not hosts:
        raise ValueError("at least one host name or address is needed")
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate small clock skew
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("StreamRL development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name or hosts[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    files = DevCA(
        dir=out,
        ca_file=out / "ca.pem",
        ca_key_file=out / "ca.key",
        cert_file=out / "server.pem",
        key_file=out / "server.key",
        keystore_file=out / "server.p12",
        keystore_password=secrets.token_urlsafe(18),
    )
    _write(files.ca_file, ca.public_bytes(pem))
    _write(files.ca_key_file, ca_key.private_bytes(pem, pkcs8, plain), private=True)
    _write(files.cert_file, cert.public_bytes(pem) + ca.public_bytes(pem))
    _write(files.key_file, key.private_bytes(pem, pkcs8, plain), private=True)
    p12 = pkcs12.serialize_key_and_certificates(
        b"server",
        key,
        cert,
        [ca],
        serialization.BestAvailableEncryption(files.keystore_password.encode()),
    )
    _write(files.keystore_file, p12, private=True)
    _write(files.keystore_password_file, files.keystore_password.encode() + b"\n", private=True)
    return files
