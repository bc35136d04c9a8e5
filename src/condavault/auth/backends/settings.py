"""The settings of the LDAP and OpenID Connect backends: plain pydantic models, so that reading the
settings does not import ``ldap3`` or ``joserfc`` (only a login through a backend does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


class LdapSettings(BaseModel):
    """Connection and schema settings of one LDAP directory or AD domain.

    ``user_filter``/``group_filter`` are templates: ``{username}`` and ``{user_dn}`` are replaced
    by the *escaped* values. ``group_map`` maps directory group names to condavault group names;
    when it is set only mapped groups are returned, when unset every group keeps its own name.
    """

    servers: list[str] = Field(min_length=1, description="ldap:// or ldaps:// URLs, tried in order")
    start_tls: bool = False
    ca_file: Path | None = None
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    user_base_dn: str
    user_filter: str = "(uid={username})"
    username_attr: str = "uid"
    email_attr: str = "mail"
    display_name_attr: str = "cn"
    group_membership: Literal["search", "memberof"] = "search"
    group_base_dn: str | None = None
    group_filter: str = "(|(member={user_dn})(uniqueMember={user_dn})(memberUid={username}))"
    group_name_attr: str = "cn"
    memberof_attr: str = "memberOf"
    group_map: dict[str, str] | None = None
    connect_timeout: float = 5.0
    receive_timeout: int = 10
    page_size: int = 500

    @field_validator("servers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("servers")
    @classmethod
    def _scheme(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.lower().startswith(("ldap://", "ldaps://")):
                raise ValueError(f"LDAP server URL must start with ldap:// or ldaps://: {url!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LdapSettings:
        if self.start_tls and any(u.lower().startswith("ldaps://") for u in self.servers):
            raise ValueError("start_tls is for ldap:// URLs; ldaps:// is already TLS")
        if "{username}" not in self.user_filter:
            raise ValueError("user_filter must contain {username}")
        if self.group_membership == "search" and not self.group_base_dn:
            raise ValueError("group_base_dn is required when group_membership='search'")
        return self


class OidcSettings(BaseModel):
    """One OpenID provider and condavault's client registration there (see :mod:`condavault.auth.backends.oidc`)."""

    issuer: str
    client_id: str
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    email_claim: str = "email"
    display_name_claim: str = "name"
    group_map: dict[str, str] | None = None
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout: float = 10.0
    clock_skew: int = 60
    discovery_ttl: int = 3600
    jwks_ttl: int = 3600

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("issuer must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: list[str]) -> list[str]:
        return value if "openid" in value else ["openid", *value]
