"""Token format, hashing and scopes.

Tokens are ``cv-<prefix>-<secret>`` using only letters, digits and ``-`` (conda extracts tokens from
URLs with ``/t/([a-zA-Z0-9-]*)``). Only the sha256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from typing import Any

from condavault.auth.permissions import Permission
from condavault.errors import InvalidRequest

ALPHABET = string.ascii_letters + string.digits
SCOPES = {
    "api": None,  # everything the owner may do
    "read": frozenset({Permission.CHANNEL_READ}),
    "upload": frozenset({Permission.CHANNEL_READ, Permission.CHANNEL_WRITE}),
}


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def generate() -> tuple[str, str, str]:
    """Return ``(token, prefix, sha256)``."""
    prefix = _random(8)
    token = f"cv-{prefix}-{_random(40)}"
    return token, prefix, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Scope:
    scope: str
    channels: frozenset[str] | None  # None = every channel

    def permits(self, perm: Permission, channel: str | None) -> bool:
        allowed = SCOPES[self.scope]
        if allowed is not None and perm not in allowed:
            return False
        if self.channels is not None:
            # limited to named channels: nothing global, nothing elsewhere (also for ``api``)
            return channel is not None and channel in self.channels
        return allowed is None or channel is not None

    @property
    def unrestricted(self) -> bool:
        return SCOPES[self.scope] is None and self.channels is None

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "channels": sorted(self.channels) if self.channels is not None else None}


def parse_scopes(items: list[dict[str, Any]]) -> tuple[Scope, ...]:
    out = []
    for item in items:
        name = item.get("scope")
        if name not in SCOPES:
            raise InvalidRequest(f"unknown token scope {name!r}; use one of {', '.join(SCOPES)}", code="invalid_scope")
        chans = item.get("channels")
        out.append(Scope(name, frozenset(chans) if chans else None))
    if not out:
        raise InvalidRequest("a token needs at least one scope", code="invalid_scope")
    return tuple(out)
