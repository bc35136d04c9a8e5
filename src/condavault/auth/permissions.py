"""The typed permission vocabulary and the built-in roles."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    """``resource:action``. Channel permissions may be granted per channel or globally."""

    CHANNEL_READ = "channel:read"
    CHANNEL_WRITE = "channel:write"  # upload, remove, copy into
    CHANNEL_MANAGE = "channel:manage"  # privacy, grants, patches, delete
    CHANNEL_CREATE = "channel:create"
    MIRROR_MANAGE = "mirror:manage"
    CVE_CURATE = "cve:curate"
    AUDIT_READ = "audit:read"
    QUARANTINE_REVIEW = "quarantine:review"  # list, release and delete quarantined files (docs/scanning.md)
    USER_MANAGE = "user:manage"
    SYSTEM_ADMIN = "system:admin"


CHANNEL_PERMISSIONS = frozenset({Permission.CHANNEL_READ, Permission.CHANNEL_WRITE, Permission.CHANNEL_MANAGE})

BUILTIN_ROLES: dict[str, tuple[frozenset[Permission], str]] = {
    "admin": (frozenset(Permission), "everything"),
    "author": (
        frozenset({Permission.CHANNEL_CREATE}),
        "may create channels (and manages the channels it creates)",
    ),
    "owner": (frozenset(CHANNEL_PERMISSIONS), "read, write and manage a channel"),
    "contributor": (frozenset({Permission.CHANNEL_READ, Permission.CHANNEL_WRITE}), "read and upload"),
    "viewer": (frozenset({Permission.CHANNEL_READ}), "read a channel"),
}


def parse_permissions(values: list[str]) -> frozenset[Permission]:
    out = set()
    for v in values:
        try:
            out.add(Permission(v))
        except ValueError:
            from condavault.errors import InvalidRequest

            raise InvalidRequest(
                f"unknown permission {v!r}; known: {', '.join(p.value for p in Permission)}",
                code="invalid_permission",
            )
    return frozenset(out)
