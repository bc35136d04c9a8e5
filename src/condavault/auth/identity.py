"""Who is making a request."""

from __future__ import annotations

from dataclasses import dataclass, field

from condavault.auth.permissions import Permission
from condavault.auth.tokens import Scope


@dataclass(frozen=True)
class Identity:
    user_id: int | None = None
    username: str | None = None
    is_admin: bool = False
    group_ids: frozenset[int] = frozenset()
    token_id: int | None = None
    scopes: tuple[Scope, ...] | None = None  # None: not restricted by a token (session login)
    # channel_id (None = global) -> permissions granted to the user or one of its groups
    grants: dict[int | None, frozenset[Permission]] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def label(self) -> str:
        if not self.authenticated:
            return "anonymous"
        return f"{self.username}" + (f" (token {self.token_id})" if self.token_id else "")

    def scope_permits(self, perm: Permission, channel: str | None) -> bool:
        if self.scopes is None:
            return True
        return any(s.permits(perm, channel) for s in self.scopes)

    def granted(self, perm: Permission, channel_id: int | None) -> bool:
        global_perms = self.grants.get(None, frozenset())
        if self.is_admin or Permission.SYSTEM_ADMIN in global_perms:  # system:admin implies everything
            return True
        if perm in global_perms:
            return True
        return channel_id is not None and perm in self.grants.get(channel_id, frozenset())


ANONYMOUS = Identity()
