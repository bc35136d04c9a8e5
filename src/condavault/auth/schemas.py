"""Pydantic I/O of the auth API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from condavault.auth.models import Token


class ScopeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: str
    channels: list[str] | None = None


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    user: str | None = None
    scopes: list[ScopeIn]
    expires_at: datetime | None = None


class TokenOut(BaseModel):
    id: int
    prefix: str
    name: str
    user: str
    scopes: list[dict[str, Any]]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, t: Token, username: str) -> TokenOut:
        return cls(
            id=t.id,
            prefix=t.prefix,
            name=t.name,
            user=username,
            scopes=json.loads(t.scopes),
            expires_at=t.expires_at,
            revoked_at=t.revoked_at,
            created_at=t.created_at,
        )


class TokenCreated(TokenOut):
    token: str


class WhoAmI(BaseModel):
    authenticated: bool
    username: str | None
    is_admin: bool
    token_id: int | None
    scopes: list[dict[str, Any]] | None
