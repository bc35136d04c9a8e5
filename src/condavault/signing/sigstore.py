"""Sigstore verification of CEP 27 attestations carried in CEP 50 sidecars, offline, against a trust root.

A sidecar is a JSON array of Sigstore bundles. Each bundle is verified with the ``sigstore`` library
(:class:`sigstore.verify.Verifier`) against the configured ``trusted_root.json`` (Sigstore's TrustedRoot
format: Fulcio CA certificates, CT log keys, Rekor log keys, timestamp authorities), with no network access:
the signing certificate must chain to a CA of the root at the time the log integrated the entry (an
expired certificate fails), carry an SCT from a CT log of the root, and the log entry's inclusion proof,
signed checkpoint and signed entry timestamp must verify with a log key of the root. The signer's identity
(the certificate's SAN, its OIDC issuer and source repository) must match one of the mirror's
``sigstore_identities`` rules. The DSSE payload must be an in-toto statement naming this file and its
sha256; a message-signature bundle must sign the file's sha256.

Outcomes: ``verified`` (every bundle verified and names this file), ``failed`` (with the reason: a bundle
that does not verify, a signer no rule matches, a statement for another file or digest), ``unverified``
(no trust root configured, or a root but no identity rule: the signatures are sound but nobody is trusted).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from condavault.signing.trust import Outcome, check_sidecar

__all__ = ["IdentityRule", "TrustRootError", "load_root", "verify_sidecar"]

log = logging.getLogger(__name__)

MAX_BUNDLES = 16  # bundles per sidecar that are verified; more is a failure (bounded work per file)
INTOTO = "application/vnd.in-toto+json"
_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_REPO_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.5")
_SOURCE_REPO_URI = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.12")


class TrustRootError(ValueError):
    """The configured trusted_root.json cannot be read or is not a Sigstore trusted root."""


@dataclass(frozen=True)
class IdentityRule:
    """Who may sign: the OIDC issuer (exact), the certificate's SAN (a regular expression matched in full)
    and, optionally, the source repository (``owner/name``, exact)."""

    issuer: str
    identity: str
    repository: str | None = None

    def matches(self, ident: Identity) -> bool:
        if ident.issuer != self.issuer or not any(re.fullmatch(self.identity, s) for s in ident.sans):
            return False
        return self.repository is None or self.repository in ident.repositories


@dataclass(frozen=True)
class Identity:
    sans: tuple[str, ...]
    issuer: str | None
    repositories: tuple[str, ...]

    def __str__(self) -> str:
        san = self.sans[0] if self.sans else "?"
        return f"{san} (issuer {self.issuer or '?'})"


def _ext_text(cert: x509.Certificate, oid: x509.ObjectIdentifier, der: bool) -> str | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    raw = getattr(value, "value", b"")
    if der:  # a DER UTF8String: tag 0x0C, a short or long length, the text
        if len(raw) < 2 or raw[0] != 0x0C:
            return None
        n, off = raw[1], 2
        if n & 0x80:
            width = n & 0x7F
            n, off = int.from_bytes(raw[2 : 2 + width], "big"), 2 + width
        raw = raw[off : off + n]
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def identity_of(cert: x509.Certificate) -> Identity:
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        assert isinstance(ext, x509.SubjectAlternativeName)
        sans += ext.get_values_for_type(x509.UniformResourceIdentifier)
        sans += ext.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        pass
    issuer = _ext_text(cert, _ISSUER_V2, True) or _ext_text(cert, _ISSUER_V1, False)
    repos = []
    if (r := _ext_text(cert, _REPO_V1, False)) is not None:
        repos.append(r)
    if (u := _ext_text(cert, _SOURCE_REPO_URI, True)) is not None:
        repos.append(u)
        m = re.match(r"^https://[^/]+/(.+?)/?$", u)
        if m:
            repos.append(m.group(1))
    return Identity(tuple(sans), issuer, tuple(repos))


class _Policy:
    """A :class:`sigstore.verify.policy.VerificationPolicy`: the certificate's identity matches a rule."""

    def __init__(self, rules: Sequence[IdentityRule]) -> None:
        self.rules = list(rules)

    def verify(self, cert: x509.Certificate) -> None:
        from sigstore.errors import VerificationError

        ident = identity_of(cert)
        if self.rules and not any(r.matches(ident) for r in self.rules):
            raise VerificationError(f"signer {ident} matches no sigstore_identities rule")


_roots: dict[tuple[str, int, int], Any] = {}
_lock = threading.Lock()


def load_root(path: Path) -> Any:
    """The :class:`sigstore.verify.Verifier` for a trusted_root.json (cached while the file is unchanged)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise TrustRootError(f"sigstore trusted root {path}: {exc.strerror}") from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        verifier = _roots.get(key)
    if verifier is not None:
        return verifier
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier

    try:
        verifier = Verifier(trusted_root=TrustedRoot.from_file(str(path)))
    except Exception as exc:  # sigstore raises several types for a malformed root
        raise TrustRootError(f"sigstore trusted root {path} is not usable: {str(exc)[:200]}") from None
    with _lock:
        _roots.clear()
        _roots[key] = verifier
    return verifier


def _names_file(statement: Any, filename: str, sha256: str | None) -> bool:
    subjects = statement.get("subject") if isinstance(statement, dict) else None
    return isinstance(subjects, list) and any(
        isinstance(s, dict)
        and s.get("name") == filename
        and sha256 is not None
        and isinstance(s.get("digest"), dict)
        and s["digest"].get("sha256") == sha256
        for s in subjects
    )


def _one(
    verifier: Any, raw: dict[str, Any], filename: str, sha256: str | None, rules: Sequence[IdentityRule]
) -> tuple[Identity, datetime | None, str | None]:
    """Verify one bundle; returns the signer, the log's integration time and the predicate type.
    Raises ``ValueError`` with the reason on any failure."""
    from sigstore.hashes import Hashed
    from sigstore.models import Bundle
    from sigstore_models.common.v1 import HashAlgorithm

    try:
        bundle = Bundle.from_json(json.dumps(raw))
    except Exception as exc:
        raise ValueError(f"malformed bundle: {str(exc)[:200]}") from None
    policy = _Policy(rules)
    predicate = None
    try:
        if raw.get("dsseEnvelope") is not None:
            ptype, payload = verifier.verify_dsse(bundle, policy)
            if ptype != INTOTO:
                raise ValueError(f"DSSE payload type {ptype[:60]!r} is not an in-toto statement")
            try:
                stmt = json.loads(payload)
            except ValueError:
                raise ValueError("the signed statement is not JSON") from None
            if not _names_file(stmt, filename, sha256):
                raise ValueError("the signed statement's subject is not this file and sha256")
            predicate = str(stmt.get("predicateType"))[:200] if isinstance(stmt, dict) else None
        else:
            if sha256 is None:
                raise ValueError("a message signature needs the file's sha256")
            verifier.verify_artifact(
                Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(sha256)), bundle, policy
            )
    except ValueError:
        raise
    except Exception as exc:  # sigstore's VerificationError, CertValidationError, InvalidBundle, ...
        raise ValueError(str(exc)[:300] or type(exc).__name__) from None
    itime = bundle.log_entry._inner.integrated_time
    when = datetime.fromtimestamp(int(itime), UTC) if itime else None
    return identity_of(bundle.signing_certificate), when, predicate


def verify_sidecar(
    data: bytes,
    expected_sha256: str,
    filename: str,
    file_sha256: str | None,
    root: Path | None,
    rules: Sequence[IdentityRule],
) -> Outcome:
    """The outcome of one file's CEP 50 sidecar (see the module docstring). Never raises: whatever the
    sidecar holds, the answer is an outcome (a mirror run goes on)."""
    try:
        return _verify_sidecar(data, expected_sha256, filename, file_sha256, root, rules)
    except Exception as exc:
        log.info("sidecar not verifiable", extra={"file": filename, "error": str(exc)[:200]})
        return Outcome("failed", "sigstore", None, f"sidecar could not be verified: {type(exc).__name__}")


def _verify_sidecar(
    data: bytes,
    expected_sha256: str,
    filename: str,
    file_sha256: str | None,
    root: Path | None,
    rules: Sequence[IdentityRule],
) -> Outcome:
    shape = check_sidecar(data, expected_sha256, filename, file_sha256)
    if shape.status == "failed":
        return shape
    if root is None:
        return Outcome("unverified", "sigstore", None, "no sigstore trust root configured (sigstore_trusted_root)")
    try:
        verifier = load_root(root)
    except TrustRootError as exc:
        return Outcome("unverified", "sigstore", None, str(exc))
    bundles = json.loads(data)
    if len(bundles) > MAX_BUNDLES:
        return Outcome("failed", "sigstore", None, f"more than {MAX_BUNDLES} bundles in the sidecar")
    signers: list[Identity] = []
    times: list[datetime] = []
    predicates: list[str] = []
    for i, raw in enumerate(bundles):
        try:
            ident, when, predicate = _one(verifier, raw, filename, file_sha256, rules)
        except ValueError as exc:
            return Outcome("failed", "sigstore", None, f"bundle {i}: {exc}")
        signers.append(ident)
        if when is not None:
            times.append(when)
        if predicate:
            predicates.append(predicate)
    when_text = f"; logged {min(times).isoformat()}" if times else ""
    pred_text = f"; predicate {predicates[0]}" if predicates else ""
    if not rules:
        return Outcome(
            "unverified",
            "sigstore",
            str(signers[0]),
            f"{len(signers)} bundle(s) valid, but no sigstore_identities rule trusts a signer{when_text}",
        )
    return Outcome(
        "verified", "sigstore", str(signers[0]), f"{len(signers)} Sigstore bundle(s) verified{when_text}{pred_text}"
    )
