"""Linkerd's identity trust anchor and issuer, made with `cryptography` as Linkerd's own CLI makes them.

Certificates follow linkerd/linkerd2 `pkg/tls/ca.go` at edge-26.8.3 (`CreateRootCA`, `GenerateCA`,
`createTemplate`, `Validity.Window`) as built by Go's `crypto/x509.CreateCertificate` with linkerd's
`go.mod` (`go 1.26.4`): ECDSA P-256 keys, ECDSA-SHA256 signatures, serials 1 and 2, a one-year window
with 10 s of clock skew either side, critical BasicConstraints and KeyUsage, SKI on both, AKI on the
issuer. Only `make_linkerd_pki` does I/O; the root key is never written (nothing needs it after signing
the issuer, and a run's cluster is deleted long before the issuer expires).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The trust anchor's common name (linkerd/website `tasks/generate-certificates.md`: `step certificate
#: create root.linkerd.cluster.local`).
ROOT_CN = "root.linkerd.cluster.local"
#: `identity.<control-plane namespace>.<trust domain>`: the issuer name `linkerd install` uses
#: (cli/cmd/options.go `issuerName`) and the identity controller's `expectedName`
#: (controller/cmd/identity/main.go), which it only reports in errors: the CN is not checked.
ISSUER_CN = "identity.linkerd.cluster.local"
#: pkg/tls/ca.go `DefaultLifetime`: `(24 * 365) * time.Hour`, used for CA certificates too.
LIFETIME = datetime.timedelta(days=365)
#: pkg/tls/ca.go `DefaultClockSkewAllowance`: `Window` starts this much before now and ends this much late.
CLOCK_SKEW = datetime.timedelta(seconds=10)
#: pkg/tls/ca.go: `CreateRootCA` uses serial 1, then `nextSerialNumber++` gives the issuer 2.
ROOT_SERIAL = 1
ISSUER_SERIAL = 2


@dataclass(frozen=True, kw_only=True)
class LinkerdPem:
    """The three PEM blobs that the linkerd-control-plane chart takes with `--set-file`."""

    ca_crt: bytes  # identityTrustAnchorsPEM
    issuer_crt: bytes  # identity.issuer.tls.crtPEM
    issuer_key: bytes  # identity.issuer.tls.keyPEM


@dataclass(frozen=True, kw_only=True)
class LinkerdPki:
    """Where `make_linkerd_pki` wrote the trust anchor, the issuer certificate and the issuer key."""

    ca_crt: Path
    issuer_crt: Path
    issuer_key: Path


def generate(*, now: datetime.datetime | None = None) -> LinkerdPem:
    """A fresh trust anchor and issuer valid from `now` (timezone-aware; default the current time)."""
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # Validity.Window: [now - skew, now + lifetime + skew]. GenerateCA clamps the issuer's NotAfter to
    # the root's (CA.createTemplate, firstCrtExpiration); both start from the same `now`, so they match.
    window = (now - CLOCK_SKEW, now + LIFETIME + CLOCK_SKEW)

    # GenerateKey: ecdsa.GenerateKey(elliptic.P256(), rand.Reader).
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(ROOT_CN)
    root_ski = _subject_key_identifier(root_key.public_key())
    root = (
        _builder(root_name, root_name, root_key.public_key(), serial=ROOT_SERIAL, window=window)
        # CreateRootCA: IsCA, MaxPathLen = -1 (no pathLenConstraint), BasicConstraintsValid.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(root_ski, critical=False)
        # Self-signed: CreateCertificate sets no AKI when issuer and subject are the same name.
        .sign(root_key, hashes.SHA256())
    )

    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = (
        _builder(_name(ISSUER_CN), root_name, issuer_key.public_key(), serial=ISSUER_SERIAL, window=window)
        # GenerateCA(name, maxPathLen) writes maxPathLen as given (MaxPathLenZero); 0, as `step --profile
        # intermediate-ca` in Linkerd's docs: the issuer signs workload leaves only, never another CA.
        # (`linkerd install` without certificates uses one root as issuer: cli/cmd/options.go
        # initializeIssuerCredentials; Linkerd's own tests call GenerateCA(name, -1), no constraint.)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_subject_key_identifier(issuer_key.public_key()), critical=False)
        # CreateCertificate: `authorityKeyId = parent.SubjectKeyId` when the parent is another name.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )

    return LinkerdPem(
        ca_crt=root.public_bytes(serialization.Encoding.PEM),
        issuer_crt=issuer.public_bytes(serialization.Encoding.PEM),
        # pkg/tls/cred.go EncodePrivateKeyPEM: x509.MarshalECPrivateKey in an "EC PRIVATE KEY" block (SEC 1);
        # pkg/tls/codec.go DecodePEMKey reads that or PKCS #8.
        issuer_key=issuer_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )


def make_linkerd_pki(directory: Path, *, now: datetime.datetime | None = None) -> LinkerdPki:
    """Write `ca.crt`, `issuer.crt` and `issuer.key` (mode 0600) into `directory`, created if missing."""
    pem = generate(now=now)
    directory.mkdir(parents=True, exist_ok=True)
    pki = LinkerdPki(
        ca_crt=directory / "ca.crt",
        issuer_crt=directory / "issuer.crt",
        issuer_key=directory / "issuer.key",
    )
    pki.ca_crt.write_bytes(pem.ca_crt)
    pki.issuer_crt.write_bytes(pem.issuer_crt)
    # Created with 0600 so that the key is never readable by others, not even between write and chmod.
    fd = os.open(pki.issuer_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem.issuer_key)
    os.chmod(pki.issuer_key, 0o600)  # an existing file keeps its old mode through O_CREAT
    return pki


def _name(common_name: str) -> x509.Name:
    # CreateRootCA and GenerateCA set `pkix.Name{CommonName: name}` and nothing else.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    serial: int,
    window: tuple[datetime.datetime, datetime.datetime],
) -> x509.CertificateBuilder:
    """ca.go `createTemplate` with the CA changes both callers make: KeyUsage certSign | cRLSign."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        # Go's marshalKeyUsage marks KeyUsage critical.
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
        # createTemplate's ExtKeyUsage (serverAuth, clientAuth) stays on CA certificates too. Keeping it
        # matters: verifiers (Go, rustls-webpki) require an intermediate's EKU, when present, to allow the
        # leaf's purpose, and the proxies' leaves are used both ways.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )


def _subject_key_identifier(public_key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    """What Go (>= 1.25) puts in a CA's empty SubjectKeyId: the leftmost 160 bits of the SHA-256 of the
    subjectPublicKey BIT STRING's contents (RFC 7093 section 2, method 1)."""
    point = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return x509.SubjectKeyIdentifier(hashlib.sha256(point).digest()[:20])
