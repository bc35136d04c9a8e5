"""The one function that decides every request (design.md §8).

``authorize(identity, perm, channel)`` returns or raises: 401 when credentials are missing,
403 when valid credentials lack the permission. ``authorize_delegation`` applies the same decision
to everything a caller hands to someone else (roles, group memberships, credentials). A channel the
caller may not read is answered the same way whether it exists or not, so private names never leak.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class ChannelRef:
    id: int
    name: str
    privacy: str


def allowed(identity: Identity, perm: Permission, channel: ChannelRef | None = None) -> bool:
    name = channel.name if channel else None
    if not identity.scope_permits(perm, name):
        return False
    if perm == Permission.CHANNEL_READ and channel is not None:
        if channel.privacy == "public":
            return True
        if channel.privacy == "authenticated" and identity.authenticated:
            return True
    if not identity.authenticated:
        return False
    return identity.granted(perm, channel.id if channel else None)


def authorize(identity: Identity, perm: Permission, channel: ChannelRef | None = None) -> None:
    if allowed(identity, perm, channel):
        return
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")
    raise PermissionDenied(
        f"{identity.label} lacks {perm.value}" + (f" on channel {channel.name!r}" if channel else "")
    )


def channel_denied(identity: Identity, name: str) -> Exception:
    """The error for a channel that does not exist or may not be read (indistinguishable on purpose)."""
    msg = f"channel {name!r} does not exist or you may not read it"
    if not identity.authenticated:
        return Unauthenticated(msg, code="authentication_required", channel=name)
    return PermissionDenied(msg, code="channel_access_denied", channel=name)


def authorize_delegation(identity: Identity, grants: Mapping[ChannelRef | None, Collection[Permission]]) -> None:
    """Nobody hands out a permission they do not hold themselves: a role granted on a channel
    (``{channel: perms}``) or globally (``{None: perms}``), a group joined (its grants), a token minted
    or a password set for another account (that account's grants). Raises 403 naming what is missing."""
    missing = sorted(
        {
            p.value + (f" on channel {ch.name!r}" if ch is not None else "")
            for ch, perms in grants.items()
            for p in perms
            if not allowed(identity, p, ch)
        }
    )
    if missing:
        if not identity.authenticated:
            raise Unauthenticated("authentication required", code="authentication_required")
        raise PermissionDenied(
            f"{identity.label} cannot hand out permissions it does not hold: {', '.join(missing)}",
            code="delegation_denied",
            missing=missing,
        )
