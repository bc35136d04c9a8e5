"""LDAP / Active Directory password login and group sync (ldap3).

Login is the classic "search then bind": a service account (``bind_dn``) searches
``user_base_dn`` with ``user_filter`` for exactly one entry, then a second connection binds as
that entry's DN with the user's password. Group names come either from a group search
(``group_filter`` under ``group_base_dn``; OpenLDAP groupOfNames/groupOfUniqueNames/posixGroup)
or, with ``group_membership="memberof"``, from the user's ``memberOf`` attribute (Active
Directory, or OpenLDAP with the memberof overlay).

Safety rules kept here, not left to configuration:

* user input is escaped (RFC 4515) before it goes into any filter, so ``*)(uid=*`` matches nothing;
* an empty password is refused before any bind: most directories treat a simple bind with a DN
  and no password as an *anonymous* bind that succeeds (RFC 4513 §5.1.2, "unauthenticated bind");
* unknown user and wrong password raise the same :class:`~condavault.errors.Unauthenticated`.

Typical settings::

    OpenLDAP: user_filter="(uid={username})", group_filter default, group_name_attr="cn"
    Active Directory: user_filter="(&(objectClass=user)(sAMAccountName={username}))",
        username_attr="sAMAccountName", email_attr="mail", display_name_attr="displayName",
        group_membership="memberof"   # or, for nested groups with a search:
        group_filter="(member:1.2.840.113556.1.4.1941:={user_dn})"
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ldap3 import ANONYMOUS, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from condavault.auth.backends.base import (
    ExternalIdentity,
    IdentityBackendMisconfigured,
    IdentityBackendUnavailable,
    map_groups,
)
from condavault.auth.backends.settings import LdapSettings
from condavault.errors import Unauthenticated

_BAD_LOGIN = "invalid username or password"


class LdapBackend:
    """Authenticate users against a directory and read their groups."""

    source = "ldap"

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(settings.ca_file) if settings.ca_file else None)
        self._servers = [
            Server(url, tls=tls, connect_timeout=settings.connect_timeout, get_info=NONE) for url in settings.servers
        ]

    # -- public API -----------------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> ExternalIdentity:
        """Check ``password`` for ``username``; return who they are and their groups.

        Raises :class:`Unauthenticated` for unknown users, wrong or empty passwords.
        """
        if not username or not password or len(username) > 256:
            raise Unauthenticated(_BAD_LOGIN)
        with self._service_connection() as conn:
            entry = self._find_user(conn, username)
            self._check_password(entry["dn"], password)
            groups = self._groups_of(conn, entry)
        return self._identity(entry, username, groups)

    def list_users_groups(self) -> dict[str, frozenset[str]]:
        """Every user matched by ``user_filter`` (with ``*``) and their mapped groups, for sync."""
        s = self.settings
        result: dict[str, frozenset[str]] = {}
        with self._service_connection() as conn:
            users = list(self._search(conn, s.user_base_dn, self._user_filter("*"), self._user_attrs()))
            for entry in users:
                name = _first(entry["attributes"], s.username_attr)
                if name:
                    result[name] = self._groups_of(conn, entry)
        return result

    # -- connections ----------------------------------------------------------------------------

    def _connect(self, user: str | None, password: str | None) -> Connection:
        """Open (and StartTLS) a connection to the first server that answers, in listed order."""
        failures: list[str] = []
        for server in self._servers:
            conn = Connection(
                server,
                user=user,
                password=password,
                authentication=SIMPLE if user else ANONYMOUS,
                receive_timeout=self.settings.receive_timeout,
                read_only=True,
                raise_exceptions=False,
                auto_referrals=False,
            )
            try:
                conn.open()
                if self.settings.start_tls and not conn.start_tls():
                    raise LDAPStartTLSError(f"StartTLS refused: {conn.result.get('description')}")
            except LDAPException as exc:
                _close(conn)
                failures.append(f"{server.name}: {exc}")
                continue
            return conn
        raise IdentityBackendUnavailable("cannot reach any LDAP server", failures=failures)

    @contextmanager
    def _service_connection(self) -> Iterator[Connection]:
        """A connection bound as the service account, unbound on exit."""
        s = self.settings
        password = s.bind_password.get_secret_value() if s.bind_password else None
        if s.bind_dn and not password:
            raise IdentityBackendMisconfigured("LDAP bind_dn is set without bind_password")
        conn = self._connect(s.bind_dn, password)
        try:
            ok = conn.bind()
        except LDAPException as exc:
            _close(conn)
            raise IdentityBackendUnavailable(f"LDAP service bind failed: {exc}")
        if not ok:
            _close(conn)
            raise IdentityBackendMisconfigured(
                "LDAP service account bind rejected", ldap_result=conn.result.get("description")
            )
        try:
            yield conn
        finally:
            _close(conn)

    def _check_password(self, dn: str, password: str) -> None:
        conn = self._connect(dn, password)
        try:
            ok = conn.bind()
        except LDAPException as exc:
            raise IdentityBackendUnavailable(f"LDAP user bind failed: {exc}")
        finally:
            _close(conn)
        if not ok:
            # invalidCredentials, but also AD's locked/expired accounts: a failed login either way
            raise Unauthenticated(_BAD_LOGIN)

    # -- searches -------------------------------------------------------------------------------

    def _search(self, conn: Connection, base: str, flt: str, attrs: list[str]) -> Iterator[dict[str, Any]]:
        try:
            for item in conn.extend.standard.paged_search(
                base, flt, SUBTREE, attributes=attrs, paged_size=self.settings.page_size, generator=True
            ):
                if item.get("type") == "searchResEntry":
                    yield item
        except LDAPException as exc:
            raise IdentityBackendUnavailable(f"LDAP search failed: {exc}")
        if conn.result and conn.result.get("result") not in (0, None):
            # noSuchObject for a wrong base DN is a configuration problem, not "no user"
            raise IdentityBackendMisconfigured(
                f"LDAP search under {base!r} failed", ldap_result=conn.result.get("description")
            )

    def _user_filter(self, username_value: str) -> str:
        return self.settings.user_filter.replace("{username}", username_value)

    def _user_attrs(self) -> list[str]:
        s = self.settings
        attrs = [s.username_attr, s.email_attr, s.display_name_attr]
        if s.group_membership == "memberof":
            attrs.append(s.memberof_attr)
        return attrs

    def _find_user(self, conn: Connection, username: str) -> dict[str, Any]:
        flt = self._user_filter(escape_filter_chars(username))
        entries = list(self._search(conn, self.settings.user_base_dn, flt, self._user_attrs()))
        if len(entries) != 1:
            raise Unauthenticated(_BAD_LOGIN)
        return entries[0]

    def _groups_of(self, conn: Connection, entry: dict[str, Any]) -> frozenset[str]:
        s = self.settings
        if s.group_membership == "memberof":
            names = [_rdn_value(dn) for dn in _all(entry["attributes"], s.memberof_attr) if self._in_groups(dn)]
        else:
            username = _first(entry["attributes"], s.username_attr) or ""
            flt = s.group_filter.replace("{user_dn}", escape_filter_chars(entry["dn"])).replace(
                "{username}", escape_filter_chars(username)
            )
            assert s.group_base_dn is not None
            found = self._search(conn, s.group_base_dn, flt, [s.group_name_attr])
            names = [_first(g["attributes"], s.group_name_attr) or "" for g in found]
        return map_groups(names, s.group_map)

    def _in_groups(self, dn: str) -> bool:
        base = self.settings.group_base_dn
        return not base or _norm_dn(dn).endswith(_norm_dn(base))

    def _identity(self, entry: dict[str, Any], username: str, groups: frozenset[str]) -> ExternalIdentity:
        s = self.settings
        attrs = entry["attributes"]
        return ExternalIdentity(
            username=_first(attrs, s.username_attr) or username,
            email=_first(attrs, s.email_attr),
            display_name=_first(attrs, s.display_name_attr),
            groups=groups,
            source="ldap",
            subject=entry["dn"],
        )


def _close(conn: Connection) -> None:
    try:
        conn.unbind()
    except LDAPException:
        pass


def _all(attrs: Any, name: str) -> list[str]:
    value = attrs.get(name) if attrs else None
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _first(attrs: Any, name: str) -> str | None:
    values = _all(attrs, name)
    return values[0] if values else None


def _rdn_value(dn: str) -> str:
    return parse_dn(dn, escape=False)[0][1]


def _norm_dn(dn: str) -> str:
    return ",".join(f"{a.lower()}={v.lower()}" for a, v, _ in parse_dn(dn, escape=False))
