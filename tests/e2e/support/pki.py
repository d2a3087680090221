"""Test certificates made with `cryptography`: a CA (ECDSA P-256) issuing server and client certificates, and the
session's set of them (server, SPIFFE client, expired, unmapped, rogue)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SPIFFE_ID = "spiffe://mlflow.test/ns/ml-platform/sa/ci-trainer"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key on disk; `combined` holds both (what MLFLOW_TRACKING_CLIENT_CERT_PATH takes)."""

    cert: Path
    key: Path
    combined: Path
    serial: int

    @property
    def pair(self) -> tuple[str, str]:
        return str(self.cert), str(self.key)


def pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Authority:
    """A CA (ECDSA P-256) that issues server and client certificates into a directory."""

    def __init__(self, directory: Path, name: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / f"{name}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, cn: str, server: bool = False, uris: tuple[str, ...] = (),
              expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        start_, end = ((now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired
                       else (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=7)))
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(start_).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        if server:
            names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_pem, key_pem = cert.public_bytes(serialization.Encoding.PEM), pem_key(key)
        issued = Issued(self.dir / f"{name}.crt", self.dir / f"{name}.key", self.dir / f"{name}.both.pem", serial)
        issued.cert.write_bytes(cert_pem)
        issued.key.write_bytes(key_pem)
        issued.combined.write_bytes(cert_pem + key_pem)
        return issued


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Issued
    spiffe: Issued        # SPIFFE URI SAN, mapped to mlflow-ci in [[auth.client_certs]]
    expired: Issued       # from the trusted CA, expired
    stranger: Issued      # from the trusted CA, valid, identity not mapped
    rogue: Issued         # same SPIFFE ID, signed by a CA the gate does not trust


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority(directory, "gate-test-ca")
    rogue_ca = Authority(directory / "rogue", "rogue-ca")
    return Pki(
        ca=ca,
        server=ca.issue("server", cn="mlflow-gate", server=True),
        spiffe=ca.issue("spiffe", cn="ci-trainer", uris=(SPIFFE_ID,)),
        expired=ca.issue("expired", cn="old-trainer", uris=(SPIFFE_ID,), expired=True),
        stranger=ca.issue("stranger", cn="stranger"),
        rogue=rogue_ca.issue("rogue", cn="ci-trainer", uris=(SPIFFE_ID,)),
    )


def replace_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
