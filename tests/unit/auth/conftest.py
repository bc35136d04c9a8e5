"""Real directory and provider servers for the identity backend tests.

Both are session-scoped: with pytest-xdist every worker starts its own, in its own temporary
directory, on ports nobody else holds. Missing binaries are a test *failure* that says how to
install them (``scripts/install-test-services``), never a skip.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The repository root (for ``tests.support``) and ``src`` must be importable even when the
# package is not installed and pytest's rootdir is not on sys.path.
_ROOT = Path(__file__).resolve().parents[3]
for _path in (_ROOT / "src", _ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.support import ldap_server, oidc_server  # noqa: E402
from tests.support.ldap_server import SlapdServer  # noqa: E402
from tests.support.oidc_server import OidcProvider  # noqa: E402

from condavault.auth.backends.ldap import LdapBackend, LdapSettings  # noqa: E402
from condavault.auth.backends.oidc import OidcBackend, OidcSettings  # noqa: E402


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    binary = ldap_server.find_slapd()
    if binary is None or not ldap_server.SCHEMA_DIR.is_dir():
        pytest.fail(f"OpenLDAP slapd is not installed: {ldap_server.INSTALL_HINT}", pytrace=False)
    server = SlapdServer.start(tmp_path_factory.mktemp("slapd"), binary)
    yield server
    server.stop()


@pytest.fixture
def ldap_backend(slapd: SlapdServer) -> Callable[..., LdapBackend]:
    """Build a backend for the test directory; keyword arguments override settings."""

    def make(**overrides: Any) -> LdapBackend:
        values: dict[str, Any] = {
            "servers": [slapd.ldap_url],
            "bind_dn": slapd.service_dn,
            "bind_password": slapd.service_password,
            "user_base_dn": slapd.people_dn,
            "group_base_dn": slapd.groups_dn,
            "ca_file": slapd.tls.ca_cert,
            "connect_timeout": 2.0,
            "receive_timeout": 5,
        }
        values.update(overrides)
        return LdapBackend(LdapSettings(**values))

    return make


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    problem = oidc_server.missing_requirements()
    if problem:
        pytest.fail(f"OpenID provider cannot run ({problem}): {oidc_server.INSTALL_HINT}", pytrace=False)
    provider = OidcProvider.start(tmp_path_factory.mktemp("oidc"))
    yield provider
    provider.stop()


@pytest.fixture
def oidc_settings(oidc_provider: OidcProvider) -> OidcSettings:
    return OidcSettings(
        issuer=oidc_provider.issuer,
        client_id=oidc_provider.client_id,
        client_secret=oidc_provider.client_secret,
        scopes=["openid", "profile", "email", "groups"],
    )


@pytest.fixture
def oidc_backend(oidc_settings: OidcSettings) -> Iterator[OidcBackend]:
    backend = OidcBackend(oidc_settings)
    yield backend
    backend.close()


@pytest.fixture
def browser() -> Iterator[oidc_server.Browser]:
    b = oidc_server.Browser()
    yield b
    b.close()
