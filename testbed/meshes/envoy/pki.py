"""The local mesh's PKI: a root CA and one SPIFFE leaf per workload, as Istio's CA would issue them."""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from testbed.errors import UsageError

#: Leaves live for a day: long enough for any run, short enough that a leaked key is soon useless.
CERT_VALIDITY = datetime.timedelta(days=1)
# A SPIFFE path segment and a DNS label at once: the identity becomes both a URI path and an SNI label.
_IDENTITY_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# --- PKI -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Leaf:
    """One workload identity: its SPIFFE ID and the PEM files of its certificate and key."""

    identity: str
    spiffe_id: str
    cert: Path
    key: Path


@dataclass(frozen=True, kw_only=True)
class Pki:
    """A per-run CA and one leaf per identity, all as PEM files in `directory`."""

    directory: Path
    trust_domain: str
    namespace: str
    ca_cert: Path
    ca_key: Path
    leaves: tuple[Leaf, ...]

    def spiffe_id(self, identity: str) -> str:
        """The SPIFFE ID of an identity in this trust domain and namespace (whether or not it has a leaf)."""
        return spiffe_id(identity, trust_domain=self.trust_domain, namespace=self.namespace)

    def leaf(self, identity: str) -> Leaf:
        """The leaf of an identity; a UsageError names the identities that exist."""
        for leaf in self.leaves:
            if leaf.identity == identity:
                return leaf
        known = ", ".join(leaf.identity for leaf in self.leaves)
        raise UsageError(f"no certificate for identity {identity!r} in {self.directory} (have: {known})")


def spiffe_id(identity: str, *, trust_domain: str = "testbed.local", namespace: str = "demo") -> str:
    """Istio's SPIFFE ID layout: spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{identity}"


def make_pki(
    directory: Path,
    identities: Sequence[str],
    *,
    trust_domain: str = "testbed.local",
    namespace: str = "demo",
) -> Pki:
    """Create an ECDSA P-256 CA and one SPIFFE leaf per identity; keys are written with mode 0600."""
    names = list(identities)
    for name in names:
        if not _IDENTITY_RE.match(name):
            raise UsageError(f"identity {name!r} must be a lowercase DNS label (a-z, 0-9, '-')")
    if len(set(names)) != len(names):
        raise UsageError(f"identities are not unique: {names}")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    # Backdate a little so that a clock read a moment later in another process never sees "not yet valid".
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + CERT_VALIDITY

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "testbed"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} root CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_cert_path = directory / "ca.pem"
    ca_key_path = directory / "ca-key.pem"
    _write_cert(ca_cert_path, ca_cert)
    _write_key(ca_key_path, ca_key)

    leaves = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        uri = spiffe_id(name, trust_domain=trust_domain, namespace=namespace)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "testbed"),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            # An X.509-SVID: exactly one URI SAN, not a CA, digitalSignature, usable by both TLS ends.
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path = directory / f"{name}.pem"
        key_path = directory / f"{name}-key.pem"
        _write_cert(cert_path, cert)
        _write_key(key_path, key)
        leaves.append(Leaf(identity=name, spiffe_id=uri, cert=cert_path, key=key_path))
    return Pki(
        directory=directory,
        trust_domain=trust_domain,
        namespace=namespace,
        ca_cert=ca_cert_path,
        ca_key=ca_key_path,
        leaves=tuple(leaves),
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Create with 0600 so that the key is never readable by others, not even between write and chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
