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


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str
    password: str
    issue_token: bool = False  # CLI login: also return an API token
    token_name: str = "cli-login"


class LoginOut(BaseModel):
    username: str
    source: str
    csrf_token: str | None = None
    token: str | None = None
    token_expires_at: datetime | None = None


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str
    password: str | None = None
    is_admin: bool = False
    is_service: bool = False
    email: str | None = None
    display_name: str | None = None


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool | None = None
    is_admin: bool | None = None
    email: str | None = None
    display_name: str | None = None


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str
    current_password: str | None = None


class UserOut(BaseModel):
    username: str
    email: str | None
    display_name: str | None
    source: str
    is_admin: bool
    is_service: bool
    disabled: bool
    has_password: bool
    has_tokens: bool
    groups: list[str]
    created_at: datetime
    last_login_at: datetime | None


class GroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""


class GroupOut(BaseModel):
    name: str
    source: str
    description: str
    members: list[dict[str, str]]


class RoleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    permissions: list[str]
    description: str = ""


class RoleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    permissions: list[str] | None = None
    description: str | None = None


class RoleOut(BaseModel):
    name: str
    permissions: list[str]
    builtin: bool
    description: str


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str
    user: str | None = None
    group: str | None = None


class GrantOut(BaseModel):
    id: int
    role: str
    user: str | None
    group: str | None
    created_at: datetime


class DeviceStart(BaseModel):
    handle: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: int
    expires_in: int


class DevicePoll(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handle: str


class DeviceResult(BaseModel):
    status: str  # pending | done
    username: str | None = None
    token: str | None = None
    token_expires_at: datetime | None = None
