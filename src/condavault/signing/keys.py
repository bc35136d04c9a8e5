"""The server's ed25519 signing key and the keys it trusts (air-gap bundles, docs/airgap.md).

Unless ``signing_key_file`` names one, the key is generated on first use and kept in the database
(``server_secrets``), so every web and worker process of a server -- on any machine -- signs with the
same key; a copy is written to ``<data-dir>/keys/server-ed25519.pem`` (mode 0600). A key file that an
older version generated there is moved into the database by the first process that starts.
A public key is written ``ed25519:<64 hex>``; its **key id** is the first
16 hex digits of the sha256 of the raw 32-byte public key. A receiving server trusts the keys listed in
``trusted_keys`` plus its own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from condavault.config import Settings
from condavault.errors import InvalidRequest, SettingsError

PREFIX = "ed25519:"


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes

    @property
    def id(self) -> str:
        return key_id(self.raw)

    @property
    def text(self) -> str:
        return PREFIX + self.raw.hex()

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        value = text.strip()
        if not value.startswith(PREFIX):
            raise InvalidRequest(
                f"a public key is written ed25519:<64 hex digits>, not {value[:40]!r}", code="invalid_public_key"
            )
        try:
            raw = bytes.fromhex(value[len(PREFIX) :])
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise InvalidRequest("an ed25519 public key is 32 bytes (64 hex digits)", code="invalid_public_key")
        return cls(raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


class SigningKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(raw)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


def key_path(settings: Settings) -> Path:
    return settings.signing_key_file or settings.data_dir / "keys" / "server-ed25519.pem"


_shared: dict[str, SigningKey] = {}  # database URL -> its key (never changes once created)


def _generate_pem() -> str:
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


def _shared_key(settings: Settings) -> SigningKey | None:
    """The key shared through the database (None: a database without the ``server_secrets`` table)."""
    from condavault.db.secrets import shared_secret_at

    key = _shared.get(settings.db_url)
    if key is not None:
        return key
    path = key_path(settings)
    pem = shared_secret_at(
        settings.db_url, "signing-key-ed25519", lambda: path.read_text() if path.is_file() else _generate_pem()
    )
    if pem is None:
        return None
    try:
        private = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"the signing key in the database is not a PEM private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SettingsError("the signing key in the database is not an ed25519 key")
    if not path.is_file():  # a local copy, for the tools that read the file
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(path, pem.encode())
    key = _shared[settings.db_url] = SigningKey(private)
    return key


def _write_new(path: Path, pem: bytes) -> bool:
    """Write ``pem`` to ``path`` (0600) unless it exists; False when another process made it first."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create(settings: Settings) -> SigningKey:
    """The server's signing key: read from ``signing_key_file``, else the one shared through the database
    (created on first use), else -- a database not migrated yet -- from (and on first use generated into)
    ``<data-dir>/keys/server-ed25519.pem`` with mode 0600."""
    path = key_path(settings)
    if settings.signing_key_file is None:
        shared = _shared_key(settings)
        if shared is not None:
            return shared
    if path.is_file():
        try:
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SettingsError(f"{path}: not an ed25519 key")
        return SigningKey(private)
    if settings.signing_key_file is not None:
        raise SettingsError(f"signing_key_file {path} does not exist")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # a temp name of its own: two processes creating the key at once must not unlink each other's file
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    tmp = Path(name)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        return load_or_create(settings)
    tmp.unlink(missing_ok=True)
    return SigningKey(private)


def trusted_keys(settings: Settings, own: SigningKey | None = None) -> dict[str, PublicKey]:
    """Key id -> public key: ``trusted_keys`` plus the server's own key."""
    out: dict[str, PublicKey] = {}
    for text in settings.trusted_keys:
        k = PublicKey.parse(text)
        out[k.id] = k
    me = own or load_or_create(settings)
    out[me.public.id] = me.public
    return out
