"""Linkerd's trust anchor and issuer pass Linkerd's own checks; the meshes' resources validate.

Sources (read at the pinned tags): linkerd/linkerd2 edge-26.8.3 `pkg/tls/ca.go`, `pkg/tls/cred.go`,
`pkg/tls/codec.go`, `pkg/issuercerts/issuercerts.go`, `pkg/identity/service.go`,
`pkg/healthcheck/healthcheck.go`, `cli/cmd/options.go`; istio/istio 1.30.3
`manifests/charts/base/files/crd-all.gen.yaml` (the CRDs in `tests/fixtures/crds/`).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import PolicyBuilder, Store

from testbed.errors import UsageError
from testbed.kube.manifests import APP_PORT, HEALTH_PATH, namespace_object
from testbed.meshes import ALL_MESHES
from testbed.meshes.kube_resources import (
    ISTIO_ROOT_NAMESPACE,
    istio_telemetry,
    mesh_resources,
    namespace_metadata,
    peer_authentication,
)
from testbed.meshes.linkerd.certs import (
    CLOCK_SKEW,
    ISSUER_CN,
    LIFETIME,
    ROOT_CN,
    LinkerdPem,
    generate,
    make_linkerd_pki,
)

NOW = datetime.datetime(2026, 9, 1, 12, 0, tzinfo=datetime.UTC)
KUBERNETES = "1.35.0"
CRDS = Path(__file__).parent / "fixtures" / "crds"
#: pkg/issuercerts/issuercerts.go:22 `expirationWarningThresholdInDays = 60`.
EXPIRY_WARNING = datetime.timedelta(days=60)


# --- Linkerd: the certificates ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pem() -> LinkerdPem:
    return generate(now=NOW)


def certs(pem: LinkerdPem) -> tuple[x509.Certificate, x509.Certificate]:
    return x509.load_pem_x509_certificate(pem.ca_crt), x509.load_pem_x509_certificate(pem.issuer_crt)


def issuer_key(pem: LinkerdPem) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.issuer_key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def test_p256_keys_and_ecdsa_sha256_signatures(pem: LinkerdPem) -> None:
    for cert in certs(pem):
        public_key = cert.public_key()
        # ca.go GenerateKey: ecdsa.GenerateKey(elliptic.P256(), ...); createTemplate: x509.ECDSAWithSHA256.
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP256R1)
        assert public_key.key_size == 256
        assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert cert.version == x509.Version.v3


def test_issuer_key_is_sec1_pem_of_the_issuer_certificate(pem: LinkerdPem) -> None:
    # cred.go EncodePrivateKeyPEM writes "EC PRIVATE KEY"; codec.go DecodePEMKey (lines 59-65) reads it.
    assert pem.issuer_key.startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    _, issuer = certs(pem)
    # cred.go ValidateAndCreateCreds (line 190): "tls: Public and private key do not match".
    assert issuer_key(pem).public_key() == issuer.public_key()


def test_names_and_serials(pem: LinkerdPem) -> None:
    root, issuer = certs(pem)
    # CreateRootCA / GenerateCA: `pkix.Name{CommonName: name}` and nothing else.
    assert root.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CN)])
    assert root.issuer == root.subject
    assert issuer.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER_CN)])
    assert issuer.issuer == root.subject
    assert ROOT_CN == "root.linkerd.cluster.local"
    # cli/cmd/options.go issuerName: identity.<control-plane namespace>.<trust domain>.
    assert ISSUER_CN == "identity.linkerd.cluster.local"
    # CreateRootCA uses serial 1 and increments nextSerialNumber; GenerateCA takes the next.
    assert (root.serial_number, issuer.serial_number) == (1, 2)


def test_ca_flags_path_length_and_key_usages(pem: LinkerdPem) -> None:
    root, issuer = certs(pem)
    for cert, path_length in ((root, None), (issuer, 0)):
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        # Go marshals BasicConstraints as critical; root MaxPathLen -1 omits the constraint,
        # GenerateCA(name, 0) with MaxPathLenZero writes pathLen 0.
        assert constraints.critical
        assert constraints.value.ca
        assert constraints.value.path_length == path_length

        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical  # Go's marshalKeyUsage: Critical: true
        assert usage.value.key_cert_sign
        assert usage.value.crl_sign
        assert not usage.value.digital_signature
        assert not usage.value.key_encipherment

        # createTemplate's ExtKeyUsage survives on the CAs (non-critical).
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
        assert not eku.critical
        assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_key_identifiers_as_go_writes_them(pem: LinkerdPem) -> None:
    root, issuer = certs(pem)
    for cert in (root, issuer):
        point = cert.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        # Go >= 1.25 CreateCertificate: a CA's empty SubjectKeyId becomes sha256(public key bits)[:20].
        assert ski.value.digest == hashlib.sha256(point).digest()[:20]
        assert not ski.critical
    # Self-signed: no AKI. Issuer: authorityKeyId = parent.SubjectKeyId, nothing else.
    with pytest.raises(x509.ExtensionNotFound):
        root.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    aki = issuer.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        aki.key_identifier == root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    )
    assert aki.authority_cert_issuer is None
    assert aki.authority_cert_serial_number is None


def test_validity_window(pem: LinkerdPem) -> None:
    # ca.go Validity.Window: [now - 10 s, now + 365 days + 10 s]; the issuer's NotAfter is clamped to the
    # root's (CA.createTemplate), so both share one window.
    for cert in certs(pem):
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(
            days=365, seconds=20
        )
        assert cert.not_valid_before_utc == NOW - CLOCK_SKEW
        assert cert.not_valid_after_utc == NOW + LIFETIME + CLOCK_SKEW


def test_chain_verifies(pem: LinkerdPem) -> None:
    root, issuer = certs(pem)
    issuer.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    other_root, _ = certs(generate(now=NOW))
    with pytest.raises(InvalidSignature):
        issuer.verify_directly_issued_by(other_root)


def test_fresh_keys_every_time(pem: LinkerdPem) -> None:
    again = generate(now=NOW)
    assert again.issuer_key != pem.issuer_key
    assert again.ca_crt != pem.ca_crt


def test_now_defaults_to_the_clock_and_must_be_aware() -> None:
    before = datetime.datetime.now(datetime.UTC)
    root, _ = certs(generate())
    assert before - CLOCK_SKEW - datetime.timedelta(seconds=1) <= root.not_valid_before_utc <= before
    with pytest.raises(ValueError, match="timezone-aware"):
        generate(now=datetime.datetime(2026, 9, 1, 12, 0))  # naive: the point of the test


# What Linkerd checks of these certificates, written out in Python. The identity controller
# (pkg/identity/service.go loadCredentials, lines 125-153), `linkerd install`/`upgrade`
# (cli/cmd/options.go:529-538 -> issuercerts.VerifyAndBuildCreds, issuercerts.go:206-235) and
# `linkerd check` (pkg/healthcheck/healthcheck.go:964-1060, category linkerd-identity).


def _algorithm_problem(cert: x509.Certificate) -> str | None:
    """issuercerts.go checkECDSACertRequirements (lines 174-188); RSA anchors are not made here."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return "must use ECDSA for public key algorithm"
    if key.curve.key_size != 256:  # k.Params().BitSize != 256
        return f"must use P-256 curve for public key, instead P-{key.curve.key_size} was used"
    if cert.signature_algorithm_oid not in (
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
    ):
        return "must be signed by an ECDSA P-256 key"
    return None


def _time_valid(cert: x509.Certificate, now: datetime.datetime) -> bool:
    """issuercerts.go CheckCertValidityPeriod (lines 118-127)."""
    return not (cert.not_valid_before_utc > now or cert.not_valid_after_utc < now)


def _issued_by_anchor(
    issuer: x509.Certificate, anchors: list[x509.Certificate], now: datetime.datetime
) -> bool:
    """cred.go Crt.Verify (lines 88-104): Go's x509 Verify with an empty DNS name and default key usages."""
    for anchor in anchors:
        try:
            issuer.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        # x509.VerifyOptions.KeyUsages defaults to ExtKeyUsageServerAuth: a chain whose certificates carry
        # an EKU must allow it; the anchor's CA bit and the time window are checked too.
        chain = (issuer, anchor)
        ekus = [
            list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
            for c in chain
            if any(isinstance(e.value, x509.ExtendedKeyUsage) for e in c.extensions)
        ]
        if any(ExtendedKeyUsageOID.SERVER_AUTH not in eku for eku in ekus):
            return False
        ca = anchor.extensions.get_extension_for_class(x509.BasicConstraints).value
        return ca.ca and all(_time_valid(c, now) for c in chain)
    return False


def linkerd_identity_failures(pem: LinkerdPem, now: datetime.datetime) -> list[str]:
    """The descriptions of the checks Linkerd would fail (warnings included), as healthcheck.go names them."""
    anchors = [x509.load_pem_x509_certificate(block) for block in _pem_blocks(pem.ca_crt)]
    issuer = x509.load_pem_x509_certificate(pem.issuer_crt)
    failures = []
    key = serialization.load_pem_private_key(pem.issuer_key, password=None)
    if key.public_key() != issuer.public_key():  # tls.ValidateAndCreateCreds
        failures.append("certificate config is valid")
    if any(_algorithm_problem(a) for a in anchors):
        failures.append("trust anchors are using supported crypto algorithm")
    if not all(_time_valid(a, now) for a in anchors):
        failures.append("trust anchors are within their validity period")
    # CheckExpiringSoon: time.Now().AddDate(0, 0, 60).After(cert.NotAfter).
    if any(now + EXPIRY_WARNING > a.not_valid_after_utc for a in anchors):
        failures.append("trust anchors are valid for at least 60 days")
    if _algorithm_problem(issuer):
        failures.append("issuer cert is using supported crypto algorithm")
    if not _time_valid(issuer, now):
        failures.append("issuer cert is within its validity period")
    if now + EXPIRY_WARNING > issuer.not_valid_after_utc:
        failures.append("issuer cert is valid for at least 60 days")
    if not _issued_by_anchor(issuer, anchors, now):
        failures.append("issuer cert is issued by the trust anchor")
    # service.go:140 and issuercerts.go:222: "it must be an intermediate-CA".
    if not issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        failures.append("issuer cert is a CA")
    return failures


def _pem_blocks(data: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----\n"
    return [block + end for block in data.split(end) if block.strip()]


def test_passes_linkerds_identity_checks(pem: LinkerdPem) -> None:
    assert linkerd_identity_failures(pem, NOW) == []
    assert linkerd_identity_failures(pem, NOW + LIFETIME - EXPIRY_WARNING) == []


def test_linkerds_checks_are_not_vacuous(pem: LinkerdPem) -> None:
    # Near the end of the window the 60-day warnings fire; after it, the validity checks fail.
    assert linkerd_identity_failures(pem, NOW + LIFETIME - EXPIRY_WARNING / 2) == [
        "trust anchors are valid for at least 60 days",
        "issuer cert is valid for at least 60 days",
    ]
    after = linkerd_identity_failures(pem, NOW + LIFETIME + datetime.timedelta(days=1))
    assert "trust anchors are within their validity period" in after
    assert "issuer cert is within its validity period" in after
    assert "issuer cert is issued by the trust anchor" in after
    # Before NotBefore (more than the 10 s allowance): not yet valid.
    assert "issuer cert is within its validity period" in linkerd_identity_failures(
        pem, NOW - datetime.timedelta(minutes=1)
    )
    # Another run's trust anchor does not verify this issuer; another key does not match it.
    other = generate(now=NOW)
    assert linkerd_identity_failures(
        LinkerdPem(ca_crt=other.ca_crt, issuer_crt=pem.issuer_crt, issuer_key=pem.issuer_key), NOW
    ) == ["issuer cert is issued by the trust anchor"]
    assert linkerd_identity_failures(
        LinkerdPem(ca_crt=pem.ca_crt, issuer_crt=pem.issuer_crt, issuer_key=other.issuer_key), NOW
    ) == ["certificate config is valid"]


def test_a_p384_issuer_fails_linkerds_algorithm_check(pem: LinkerdPem) -> None:
    root_key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER_CN)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - CLOCK_SKEW)
        .not_valid_after(NOW + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA384())
    )
    key = root_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    p384 = LinkerdPem(
        ca_crt=pem.ca_crt, issuer_crt=cert.public_bytes(serialization.Encoding.PEM), issuer_key=key
    )
    failures = linkerd_identity_failures(p384, NOW)
    assert "issuer cert is using supported crypto algorithm" in failures
    assert "issuer cert is issued by the trust anchor" in failures


def test_a_workload_leaf_from_the_issuer_verifies_to_the_root(pem: LinkerdPem) -> None:
    """As the identity controller issues them (ca.go IssueEndEntityCrt, a 24 h `issuanceLifetime` from the
    chart's values.yaml), checked by an RFC 5280 path builder like the proxies' rustls-webpki."""
    root, issuer = certs(pem)
    name = "default.testbed.serviceaccount.identity.linkerd.cluster.local"
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    issued = NOW + datetime.timedelta(hours=1)
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.subject)
        .public_key(leaf_key.public_key())
        .serial_number(1)
        .not_valid_before(issued - datetime.timedelta(seconds=20))
        .not_valid_after(issued + datetime.timedelta(hours=24, seconds=20))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(issuer_key(pem), hashes.SHA256())
    )
    builder = PolicyBuilder().store(Store([root])).time(issued)
    chain = builder.build_server_verifier(x509.DNSName(name)).verify(leaf, [issuer])
    assert chain == [leaf, issuer, root]
    assert builder.build_client_verifier().verify(leaf, [issuer]).chain == [leaf, issuer, root]


def test_make_linkerd_pki_writes_pem_files(tmp_path: Path) -> None:
    directory = tmp_path / "run" / "linkerd-pki"
    pki = make_linkerd_pki(directory, now=NOW)
    assert (pki.ca_crt, pki.issuer_crt, pki.issuer_key) == (
        directory / "ca.crt",
        directory / "issuer.crt",
        directory / "issuer.key",
    )
    assert stat.S_IMODE(pki.issuer_key.stat().st_mode) == 0o600
    written = LinkerdPem(
        ca_crt=pki.ca_crt.read_bytes(),
        issuer_crt=pki.issuer_crt.read_bytes(),
        issuer_key=pki.issuer_key.read_bytes(),
    )
    assert linkerd_identity_failures(written, NOW) == []


def test_make_linkerd_pki_tightens_an_existing_key_file(tmp_path: Path) -> None:
    key = tmp_path / "issuer.key"
    key.write_text("old")
    key.chmod(0o644)
    pki = make_linkerd_pki(tmp_path, now=NOW)
    assert stat.S_IMODE(pki.issuer_key.stat().st_mode) == 0o600
    assert pki.issuer_key.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert not (tmp_path / "ca.key").exists()  # the root key is never written


# --- Istio: custom resources against the real CRDs --------------------------------------------------


def crd_validator(fixture: str, version: str = "v1") -> jsonschema.Draft7Validator:
    """The CRD's openAPIV3Schema as a Draft 7 validator that, like the API server, rejects unknown fields."""
    crd = yaml.safe_load((CRDS / fixture).read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert served["served"]
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema = _json_schema(served["schema"]["openAPIV3Schema"])
    # The API server validates apiVersion, kind and metadata itself; pin them to this CRD.
    schema["properties"] |= {
        "apiVersion": {"const": f"{group}/{version}"},
        "kind": {"const": kind},
        "metadata": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"}},
            "required": ["name"],
        },
    }
    schema["required"] = ["apiVersion", "kind", "metadata"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes structural schema) to JSON Schema: `nullable` becomes a null type, objects
    with `properties` are closed (kubectl's default `--validate=strict` rejects unknown fields, where the
    API server would prune them) unless `x-kubernetes-preserve-unknown-fields`, and the other
    `x-kubernetes-*` keys are dropped (their CEL rules are not evaluated here)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    out = {
        k: _json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    # Property names are data, not schema keywords: put them back as they were.
    if isinstance(node.get("properties"), Mapping):
        out["properties"] = {name: _json_schema(sub) for name, sub in node["properties"].items()}
    return out


@pytest.fixture(scope="module")
def peer_authentication_schema() -> jsonschema.Draft7Validator:
    return crd_validator("istio-1.30.3-peerauthentication.yaml")


@pytest.fixture(scope="module")
def telemetry_schema() -> jsonschema.Draft7Validator:
    return crd_validator("istio-1.30.3-telemetry.yaml")


def test_fixtures_say_where_they_come_from() -> None:
    for path in CRDS.glob("istio-1.30.3-*.yaml"):
        header = path.read_text().split("apiVersion:", 1)[0]
        assert "istio/istio, tag 1.30.3" in header
        assert "manifests/charts/base/files/crd-all.gen.yaml" in header


def test_strict_peer_authentication_validates(peer_authentication_schema: jsonschema.Draft7Validator) -> None:
    obj = peer_authentication()
    assert obj["metadata"] == {"name": "default", "namespace": ISTIO_ROOT_NAMESPACE}
    assert obj["spec"] == {"mtls": {"mode": "STRICT"}}
    peer_authentication_schema.validate(obj)


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_every_mode_validates(peer_authentication_schema: jsonschema.Draft7Validator, mode: Any) -> None:
    peer_authentication_schema.validate(peer_authentication(mode))


def test_broken_peer_authentications_fail(peer_authentication_schema: jsonschema.Draft7Validator) -> None:
    typo = peer_authentication()
    typo["spec"]["mtls"]["mode"] = "STRICTT"
    with pytest.raises(jsonschema.ValidationError) as error:
        peer_authentication_schema.validate(typo)
    assert list(error.value.absolute_path) == ["spec", "mtls", "mode"]
    assert error.value.validator == "enum"

    unknown_field = peer_authentication()
    unknown_field["spec"]["mtls"] = {"mod": "STRICT"}
    with pytest.raises(jsonschema.ValidationError, match="'mod' was unexpected"):
        peer_authentication_schema.validate(unknown_field)

    old_group = copy.deepcopy(peer_authentication())
    old_group["apiVersion"] = "authentication.istio.io/v1alpha1"
    with pytest.raises(jsonschema.ValidationError):
        peer_authentication_schema.validate(old_group)


def test_telemetry_validates(telemetry_schema: jsonschema.Draft7Validator) -> None:
    obj = istio_telemetry()
    assert obj["metadata"]["namespace"] == ISTIO_ROOT_NAMESPACE
    telemetry_schema.validate(obj)
    broken = istio_telemetry()
    broken["spec"]["tracing"][0]["disableSpanReporting"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        telemetry_schema.validate(broken)


@pytest.mark.parametrize("mesh", ["istio", "istio-ambient"])
def test_istio_resources(mesh: str) -> None:
    assert [(o["kind"], o["spec"]) for o in mesh_resources(mesh)] == [
        ("PeerAuthentication", {"mtls": {"mode": "STRICT"}}),
        ("Telemetry", {"tracing": [{"disableSpanReporting": True}]}),
    ]


@pytest.mark.parametrize("mesh", ["none", "linkerd", "cilium"])
def test_no_custom_resources(mesh: str) -> None:
    assert mesh_resources(mesh) == []


# --- The app namespace, per mesh --------------------------------------------------------------------

EXPECTED_NAMESPACE = {
    "none": ({}, {}),
    "istio": ({"istio-injection": "enabled"}, {}),
    "istio-ambient": ({"istio.io/dataplane-mode": "ambient"}, {}),
    "linkerd": (
        {},
        {
            "linkerd.io/inject": "enabled",
            "config.linkerd.io/default-inbound-policy": "all-unauthenticated",
            "config.linkerd.io/proxy-require-identity-inbound-ports": "8080",
        },
    ),
    "cilium-plain": ({}, {}),
    "cilium": ({}, {}),
}


@pytest.mark.parametrize("mesh", sorted(EXPECTED_NAMESPACE))
def test_namespace_metadata(mesh: str) -> None:
    assert namespace_metadata(mesh) == EXPECTED_NAMESPACE[mesh]


def test_every_kubernetes_mesh_has_namespace_metadata() -> None:
    assert set(EXPECTED_NAMESPACE) == set(ALL_MESHES) - {"envoy"}  # envoy runs on the local platform only
    for mesh in ("envoy", "kuma"):
        with pytest.raises(UsageError, match="no Kubernetes namespace settings"):
            namespace_metadata(mesh)
        with pytest.raises(UsageError):
            mesh_resources(mesh)


def test_namespace_metadata_returns_fresh_dicts() -> None:
    labels, annotations = namespace_metadata("linkerd")
    annotations.clear()
    labels["x"] = "y"
    assert namespace_metadata("linkerd") == EXPECTED_NAMESPACE["linkerd"]


def test_linkerd_policy_is_one_linkerd_accepts() -> None:
    # cli/cmd/options.go validatePolicy (edge-26.8.3, line 624).
    valid = {"all-authenticated", "all-unauthenticated", "cluster-authenticated", "cluster-unauthenticated"}
    valid |= {"deny", "audit"}
    _, annotations = namespace_metadata("linkerd")
    assert annotations["config.linkerd.io/default-inbound-policy"] in valid


# The proxy's admin port (charts/linkerd-control-plane/values.yaml proxy.ports.admin at edge-26.8.3).
LINKERD_ADMIN_PORT = 4191
# defaults.rs DefaultPolicy::from_str: the Allow policies as (authenticated_only, cluster_only).
LINKERD_ALLOW = {
    "all-authenticated": (True, False),
    "all-unauthenticated": (False, False),
    "cluster-authenticated": (True, True),
    "cluster-unauthenticated": (False, True),
}


def linkerd_port_policy(
    pod_annotations: Mapping[str, str],
    port: int,
    *,
    path: str = "/",
    probe_paths: frozenset[str] = frozenset(),
) -> tuple[str, bool]:
    """The default policy Linkerd's policy controller gives a pod's port, and whether a plaintext GET of
    `path` passes it: (policy name, admitted without a mesh identity).

    A model of linkerd/linkerd2 edge-26.8.3 policy-controller/k8s/index/src: inbound/workload.rs
    Settings::from_metadata (the pod's annotations), ports.rs parse_portset, inbound/index.rs
    default_inbound_server (`require_id_ports` sets authenticated_only) and default_inbound_http_routes
    (the probe paths: unauthenticated from probeNetworks, 0.0.0.0/0 by default), defaults.rs
    default_client_authz (authenticated_only: TlsAuthenticated). The cluster's default is the chart's
    proxy.defaultInboundPolicy, all-unauthenticated; cluster networks are not modelled (all in-cluster).
    """
    policy = pod_annotations.get("config.linkerd.io/default-inbound-policy", "all-unauthenticated")
    spec = pod_annotations.get("config.linkerd.io/proxy-require-identity-inbound-ports", "")
    required: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        if low:
            required.update(range(int(low), int(high or low) + 1))
    if policy not in LINKERD_ALLOW:
        return policy, policy == "audit"  # deny: nothing but explicit authorizations; audit: all
    authenticated_only, cluster_only = LINKERD_ALLOW[policy]
    if port in required:
        authenticated_only = True
    name = next(k for k, v in LINKERD_ALLOW.items() if v == (authenticated_only, cluster_only))
    return name, not authenticated_only or path in probe_paths


def test_linkerd_requires_identity_on_the_app_port_only() -> None:
    # The injector copies the namespace's config annotations onto each pod (pkg/inject/inject.go
    # AppendNamespaceAnnotations), where the policy controller reads them.
    _, annotations = namespace_metadata("linkerd")
    probes = frozenset({HEALTH_PATH})
    # The plaintext probe of `/` is refused (403: linkerd_evidence.LINKERD_REFUSAL_STATUSES) ...
    assert linkerd_port_policy(annotations, APP_PORT, probe_paths=probes) == ("all-authenticated", False)
    # ... the kubelet's probe of the app still passes ...
    assert linkerd_port_policy(annotations, APP_PORT, path=HEALTH_PATH, probe_paths=probes)[1]
    # ... and `linkerd diagnostics proxy-metrics` (a port-forward, no identity) reads the admin port.
    admin = linkerd_port_policy(annotations, LINKERD_ADMIN_PORT, path="/metrics")
    assert admin == ("all-unauthenticated", True)
    # Whatever the cluster's default: the namespace says it.
    assert annotations["config.linkerd.io/default-inbound-policy"] == "all-unauthenticated"


def test_the_linkerd_policy_model_sees_the_admin_port_problem() -> None:
    # `default-inbound-policy: all-authenticated` on the whole pod closes the admin port too (issue 10691).
    closed = {"config.linkerd.io/default-inbound-policy": "all-authenticated"}
    assert linkerd_port_policy(closed, LINKERD_ADMIN_PORT, path="/metrics") == ("all-authenticated", False)
    ranged = {"config.linkerd.io/proxy-require-identity-inbound-ports": "8000-8090, 9000"}
    assert not linkerd_port_policy(ranged, 8080)[1] and not linkerd_port_policy(ranged, 9000)[1]
    assert linkerd_port_policy(ranged, 8091) == ("all-unauthenticated", True)


@pytest.mark.parametrize("mesh", sorted(EXPECTED_NAMESPACE))
def test_namespaces_validate_for_kubernetes(mesh: str) -> None:
    labels, annotations = namespace_metadata(mesh)
    obj = namespace_object("testbed", labels=labels, annotations=annotations)
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    assert obj["metadata"]["labels"].items() >= labels.items()
    assert obj["metadata"].get("annotations", {}) == annotations
