"""A private Sigstore instance for tests: a Fulcio-like CA, a CT log key and a Rekor-like log key.

It writes a ``trusted_root.json`` in Sigstore's TrustedRoot format and makes bundles (v0.3, DSSE with an
in-toto statement, as CEP 27 attestations are) that the ``sigstore`` library verifies offline against that
root: the signing certificate chains to the CA and carries the Fulcio extensions (issuer, source repository)
and an embedded SCT signed by the CT key; the ``dsse`` 0.0.1 log entry has an inclusion proof with a signed
checkpoint and a signed entry timestamp made with the log key. Nothing is mocked: the verifier runs every
check it runs against the public good instance.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

INTOTO = "application/vnd.in-toto+json"
CEP27_PREDICATE = "https://schemas.conda.org/attestations-publish-1.schema.json"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_REPO_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.5")
_SOURCE_REPO_URI = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.12")
_SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _keyid(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_spki(key)).digest()


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _der_octets(raw: bytes) -> bytes:
    n = len(raw)
    if n < 128:
        return bytes([0x04, n]) + raw
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(length)]) + length + raw


def _pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def statement(filename: str, sha256: str, channel: str = "https://prefix.dev/conda-forge") -> dict[str, Any]:
    """A CEP 27 publish attestation's in-toto statement for one file."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": filename, "digest": {"sha256": sha256}}],
        "predicateType": CEP27_PREDICATE,
        "predicate": {"targetChannel": channel},
    }


@dataclass
class SigstoreInstance:
    """Keys and certificates of one test instance; :meth:`trusted_root` and :meth:`bundle` use them."""

    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))

    def __post_init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP384R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.log_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_start = self.now - dt.timedelta(days=30)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "condavault-test"),
                x509.NameAttribute(NameOID.COMMON_NAME, "condavault test fulcio"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.ca_start)
            .not_valid_after(self.now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.ca_key, hashes.SHA384())
        )
        self.log_index = 0

    # -- trust root ------------------------------------------------------------------------------------
    def trusted_root(self) -> dict[str, Any]:
        start = self.ca_start.strftime("%Y-%m-%dT%H:%M:%SZ")

        def tlog(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key.public_key())),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(_keyid(key.public_key()))},
            }

        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [tlog(self.log_key, "https://rekor.condavault.test")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "condavault-test", "commonName": "condavault test fulcio"},
                    "uri": "https://fulcio.condavault.test",
                    "certChain": {
                        "certificates": [{"rawBytes": _b64(self.ca_cert.public_bytes(serialization.Encoding.DER))}]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [tlog(self.ct_key, "https://ctfe.condavault.test")],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root(), indent=2))
        return path

    # -- signing certificates ---------------------------------------------------------------------------
    def _leaf(
        self,
        key: ec.EllipticCurvePrivateKey,
        identity: str,
        issuer: str,
        repository: str | None,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.Certificate:
        san: x509.GeneralName = (
            x509.RFC822Name(identity)
            if "@" in identity and "://" not in identity
            else x509.UniformResourceIdentifier(identity)
        )

        def build(extra: x509.ExtensionType | None) -> x509.CertificateBuilder:
            b = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(
                    x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
                )
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
                )
                .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                .add_extension(x509.UnrecognizedExtension(_ISSUER_V1, issuer.encode()), critical=False)
                .add_extension(x509.UnrecognizedExtension(_ISSUER_V2, _der_utf8(issuer)), critical=False)
            )
            if repository:
                b = b.add_extension(x509.UnrecognizedExtension(_REPO_V1, repository.encode()), critical=False)
                b = b.add_extension(
                    x509.UnrecognizedExtension(_SOURCE_REPO_URI, _der_utf8(f"https://github.com/{repository}")),
                    critical=False,
                )
            if extra is not None:
                b = b.add_extension(extra, critical=False)
            return b

        serial = x509.random_serial_number()
        # the precertificate: everything but the SCT list, which is signed over this TBS
        pre = build(None).sign(self.ca_key, hashes.SHA384())
        tbs = pre.tbs_certificate_bytes
        ts_ms = int(not_before.timestamp() * 1000)
        signed = struct.pack("!BBQH", 0, 0, ts_ms, 1) + _keyid(self.ca_key.public_key())
        signed += len(tbs).to_bytes(3, "big") + tbs + struct.pack("!H", 0)
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = struct.pack("!B", 0) + _keyid(self.ct_key.public_key()) + struct.pack("!QH", ts_ms, 0)
        sct += struct.pack("!BBH", 4, 3, len(sig)) + sig
        sct_list = struct.pack("!H", len(sct) + 2) + struct.pack("!H", len(sct)) + sct
        cert = build(x509.UnrecognizedExtension(_SCT_OID, _der_octets(sct_list))).sign(self.ca_key, hashes.SHA384())
        assert cert.tbs_precertificate_bytes == tbs
        return cert

    # -- bundles ----------------------------------------------------------------------------------------
    def bundle(
        self,
        filename: str,
        sha256: str,
        *,
        identity: str = "https://github.com/conda-forge/foo-feedstock/.github/workflows/build.yml@refs/heads/main",
        issuer: str = GITHUB_ISSUER,
        repository: str | None = "conda-forge/foo-feedstock",
        expired: bool = False,
        payload: dict[str, Any] | None = None,
        message_signature: bool = False,
    ) -> dict[str, Any]:
        """A Sigstore bundle v0.3 holding a DSSE envelope of a CEP 27 statement for ``filename``
        (``message_signature``: a plain signature over the file's sha256, logged as ``hashedrekord``).
        ``expired``: the certificate's validity ended before the log integrated the entry."""
        key = ec.generate_private_key(ec.SECP256R1())
        integrated = self.now - dt.timedelta(hours=1)
        if expired:
            nb, na = integrated - dt.timedelta(minutes=30), integrated - dt.timedelta(minutes=20)
        else:
            nb, na = integrated - dt.timedelta(minutes=1), integrated + dt.timedelta(minutes=9)
        cert = self._leaf(key, identity, issuer, repository, nb, na)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if message_signature:
            digest = bytes.fromhex(sha256)
            sig = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            hashed_body = {
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": sha256}},
                    "signature": {"content": _b64(sig), "publicKey": {"content": _b64(pem)}},
                },
            }
            content = {
                "messageSignature": {
                    "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest)},
                    "signature": _b64(sig),
                }
            }
            return self._logged(cert, hashed_body, "hashedrekord", integrated, content)
        body_stmt = json.dumps(payload if payload is not None else statement(filename, sha256)).encode()
        sig = key.sign(_pae(INTOTO, body_stmt), ec.ECDSA(hashes.SHA256()))
        envelope = {"payload": _b64(body_stmt), "payloadType": INTOTO, "signatures": [{"sig": _b64(sig)}]}
        entry_body = {
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": {
                    "algorithm": "sha256",
                    "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest(),
                },
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(body_stmt).hexdigest()},
                "signatures": [{"signature": _b64(sig), "verifier": _b64(pem)}],
            },
        }
        return self._logged(cert, entry_body, "dsse", integrated, {"dsseEnvelope": envelope})

    def _logged(
        self,
        cert: x509.Certificate,
        entry_body: dict[str, Any],
        kind: str,
        integrated: dt.datetime,
        content: dict[str, Any],
    ) -> dict[str, Any]:
        """The bundle of ``content`` with its log entry: inclusion proof, signed checkpoint, SET."""
        body = rfc8785.dumps(entry_body)
        index = self.log_index
        self.log_index += 1
        log_id = _keyid(self.log_key.public_key())
        itime = int(integrated.timestamp())
        set_payload = rfc8785.dumps(
            {"body": _b64(body), "integratedTime": itime, "logID": log_id.hex(), "logIndex": index}
        )
        set_sig = self.log_key.sign(set_payload, ec.ECDSA(hashes.SHA256()))
        # a log of one leaf per entry: the root is the leaf hash, the proof is empty
        root = hashlib.sha256(b"\x00" + body).digest()
        note = f"rekor.condavault.test - 1\n1\n{_b64(root)}\n"
        note_sig = self.log_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + f"\n\u2014 rekor.condavault.test {_b64(log_id[:4] + note_sig)}\n"
        return {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [
                    {
                        "logIndex": str(index),
                        "logId": {"keyId": _b64(log_id)},
                        "kindVersion": {"kind": kind, "version": "0.0.1"},
                        "integratedTime": str(itime),
                        "inclusionPromise": {"signedEntryTimestamp": _b64(set_sig)},
                        "inclusionProof": {
                            "logIndex": "0",
                            "rootHash": _b64(root),
                            "treeSize": "1",
                            "hashes": [],
                            "checkpoint": {"envelope": checkpoint},
                        },
                        "canonicalizedBody": _b64(body),
                    }
                ],
            },
            **content,
        }

    def sidecar(self, *bundles: dict[str, Any]) -> bytes:
        """A CEP 50 sidecar: the JSON array of bundles."""
        return json.dumps(list(bundles)).encode()
