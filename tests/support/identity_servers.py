"""A condavault server wired to a real slapd and a real OpenID provider, for login tests.

The provider must know our callback URL before it starts and our server must know the provider's
issuer before it starts, so the server's port is chosen first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from tests.support import ldap_server, oidc_server
from tests.support.ldap_server import SlapdServer
from tests.support.oidc_server import OidcProvider
from tests.support.server import Server, free_port, start_server

SSO_ACCOUNTS: dict[str, dict[str, object]] = {
    "olivia": {
        "preferred_username": "olivia",
        "email": "olivia@example.org",
        "name": "Olivia Oidc",
        "groups": ["/sso-developers", "sso-readers"],
    },
    "oscar": {"preferred_username": "oscar", "email": "oscar@example.org", "name": "Oscar", "groups": []},
    # the same name as a directory user: SSO must not take over that account
    "carol": {"preferred_username": "carol", "email": "carol@evil.example", "name": "Not Carol", "groups": []},
}


def start_slapd(workdir: Path) -> SlapdServer:
    binary = ldap_server.find_slapd()
    if binary is None or not ldap_server.SCHEMA_DIR.is_dir():
        pytest.fail(f"OpenLDAP slapd is not installed: {ldap_server.INSTALL_HINT}", pytrace=False)
    return SlapdServer.start(workdir, binary)


def start_provider(workdir: Path, redirect_uri: str, accounts: Mapping[str, object] = SSO_ACCOUNTS) -> OidcProvider:
    problem = oidc_server.missing_requirements()
    if problem:
        pytest.fail(f"OpenID provider cannot run ({problem}): {oidc_server.INSTALL_HINT}", pytrace=False)
    with mock.patch.object(oidc_server, "REDIRECT_URI", redirect_uri):
        provider = OidcProvider.start(workdir, accounts=accounts)
    provider.redirect_uri = redirect_uri
    return provider


def ldap_settings(slapd: SlapdServer) -> dict[str, Any]:
    return {
        "servers": [slapd.ldap_url],
        "start_tls": True,
        "ca_file": str(slapd.tls.ca_cert),
        "bind_dn": slapd.service_dn,
        "bind_password": slapd.service_password,
        "user_base_dn": slapd.people_dn,
        "group_base_dn": slapd.groups_dn,
        "connect_timeout": 2.0,
        "receive_timeout": 5,
    }


def start_identity_server(
    data_dir: Path, backend: str, slapd: SlapdServer, provider_dir: Path, **overrides: Any
) -> tuple[Server, str | None, OidcProvider]:
    port = free_port()
    provider = start_provider(provider_dir, f"http://127.0.0.1:{port}/api/auth/oidc/callback")
    oidc = {
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "scopes": ["openid", "profile", "email", "groups"],
    }
    with mock.patch("tests.support.server.free_port", return_value=port):
        handle, pg = start_server(data_dir, backend, ldap=ldap_settings(slapd), oidc=oidc, **overrides)
    return handle, pg, provider
