"""LdapBackend against a real OpenLDAP slapd (see tests/support/ldap_server.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError
from tests.support.ldap_server import INSTALL_HINT, SlapdServer, free_port, make_tls

from condavault.auth.backends import (
    ExternalIdentity,
    IdentityBackendMisconfigured,
    IdentityBackendUnavailable,
)
from condavault.auth.backends.ldap import LdapBackend, LdapSettings
from condavault.errors import Unauthenticated

Make = Callable[..., LdapBackend]


def test_right_password_gives_identity_with_groups(ldap_backend: Make, slapd: SlapdServer) -> None:
    identity = ldap_backend().authenticate("alice", "alice-pw")

    assert identity == ExternalIdentity(
        username="alice",
        email="alice@example.org",
        display_name="Alice Liddell",
        # groupOfNames (member DN) and posixGroup (memberUid) memberships
        groups=frozenset({"developers", "admins", "sysops"}),
        source="ldap",
        subject=f"uid=alice,{slapd.people_dn}",
    )


def test_username_is_canonicalised_by_the_directory(ldap_backend: Make) -> None:
    assert ldap_backend().authenticate("ALICE", "alice-pw").username == "alice"


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong"), ("alice", "bob-pw"), ("nobody", "alice-pw"), ("alice", "ALICE-PW"), ("alice", " ")],
)
def test_wrong_credentials_are_rejected(ldap_backend: Make, username: str, password: str) -> None:
    with pytest.raises(Unauthenticated) as info:
        ldap_backend().authenticate(username, password)
    assert info.value.message == "invalid username or password"


def test_empty_password_is_rejected_although_the_directory_would_accept_it(
    ldap_backend: Make, slapd: SlapdServer
) -> None:
    # The trap: a simple bind with a DN and no password is an "unauthenticated bind" (RFC 4513
    # 5.1.2) that slapd answers with success, as anonymous. The backend must not get that far.
    ldapwhoami = shutil.which("ldapwhoami")
    if ldapwhoami is None:
        pytest.fail(f"ldapwhoami is not installed: {INSTALL_HINT}", pytrace=False)
    dn = f"uid=alice,{slapd.people_dn}"
    trap = subprocess.run([ldapwhoami, "-x", "-H", slapd.ldap_url, "-D", dn, "-w", ""], capture_output=True, text=True)
    assert trap.returncode == 0, trap.stderr
    assert "anonymous" in trap.stdout

    with pytest.raises(Unauthenticated):
        ldap_backend().authenticate("alice", "")


@pytest.mark.parametrize(
    "username", ["*)(uid=*", "*", "alice)(|(uid=*", "al*", "alice\\", "alice)(objectClass=*", "\x00"]
)
def test_filter_injection_matches_nobody(ldap_backend: Make, username: str) -> None:
    with pytest.raises(Unauthenticated):
        ldap_backend().authenticate(username, "alice-pw")


def test_ldaps_with_ca_file(ldap_backend: Make, slapd: SlapdServer) -> None:
    identity = ldap_backend(servers=[slapd.ldaps_url]).authenticate("bob", "bob-pw")
    assert identity.groups == {"developers"}


def test_start_tls_with_ca_file(ldap_backend: Make, slapd: SlapdServer) -> None:
    identity = ldap_backend(servers=[slapd.ldap_url], start_tls=True).authenticate("carol", "carol-pw")
    assert identity.groups == {"sysops"}


@pytest.mark.parametrize("start_tls", [False, True])
def test_tls_with_an_unknown_ca_fails(ldap_backend: Make, slapd: SlapdServer, tmp_path: Path, start_tls: bool) -> None:
    other_ca = make_tls(tmp_path).ca_cert
    url = slapd.ldap_url if start_tls else slapd.ldaps_url
    backend = ldap_backend(servers=[url], start_tls=start_tls, ca_file=other_ca)
    with pytest.raises(IdentityBackendUnavailable):
        backend.authenticate("alice", "alice-pw")


def test_memberof_mode_reads_groups_from_the_user_entry(ldap_backend: Make, slapd: SlapdServer) -> None:
    # slapd runs the memberof overlay, like AD it maintains memberOf for groupOfNames groups
    identity = ldap_backend(group_membership="memberof").authenticate("alice", "alice-pw")
    assert identity.groups == {"developers", "admins"}


def test_group_map_keeps_only_mapped_groups(ldap_backend: Make) -> None:
    backend = ldap_backend(group_map={"Developers": "dev-team", "sysops": "ops"})
    assert backend.authenticate("alice", "alice-pw").groups == {"dev-team", "ops"}


def test_list_users_groups_for_sync(ldap_backend: Make) -> None:
    assert ldap_backend().list_users_groups() == {
        "alice": frozenset({"developers", "admins", "sysops"}),
        "bob": frozenset({"developers"}),
        "carol": frozenset({"sysops"}),
    }


def test_list_users_groups_in_memberof_mode_over_ldaps(ldap_backend: Make, slapd: SlapdServer) -> None:
    backend = ldap_backend(servers=[slapd.ldaps_url], group_membership="memberof")
    assert backend.list_users_groups() == {
        "alice": frozenset({"developers", "admins"}),
        "bob": frozenset({"developers"}),
        "carol": frozenset(),
    }


def test_wrong_service_password_is_a_configuration_error(ldap_backend: Make) -> None:
    with pytest.raises(IdentityBackendMisconfigured):
        ldap_backend(bind_password="nope").authenticate("alice", "alice-pw")


def test_wrong_base_dn_is_a_configuration_error(ldap_backend: Make) -> None:
    with pytest.raises(IdentityBackendMisconfigured):
        ldap_backend(user_base_dn="ou=missing,dc=example,dc=org").authenticate("alice", "alice-pw")


def test_unreachable_server(ldap_backend: Make) -> None:
    with pytest.raises(IdentityBackendUnavailable):
        ldap_backend(servers=[f"ldap://127.0.0.1:{free_port()}"]).authenticate("alice", "alice-pw")


def test_second_server_is_used_when_the_first_is_down(ldap_backend: Make, slapd: SlapdServer) -> None:
    backend = ldap_backend(servers=[f"ldap://127.0.0.1:{free_port()}", slapd.ldap_url])
    assert backend.authenticate("bob", "bob-pw").username == "bob"


@pytest.mark.parametrize(
    "overrides",
    [
        {"servers": ["http://ldap.example.org"]},
        {"servers": ["ldaps://ldap.example.org"], "start_tls": True},
        {"user_filter": "(uid=alice)"},
        {"group_base_dn": None},
    ],
)
def test_settings_validation(overrides: dict[str, object]) -> None:
    values: dict[str, object] = {
        "servers": ["ldap://ldap.example.org"],
        "user_base_dn": "ou=people,dc=example,dc=org",
        "group_base_dn": "ou=groups,dc=example,dc=org",
        **overrides,
    }
    with pytest.raises(ValidationError):
        LdapSettings(**values)  # type: ignore[arg-type]
