"""What every external identity backend returns, and the errors they raise.

A backend (LDAP/AD, OIDC) turns credentials or a finished browser/device login into an
:class:`ExternalIdentity`. Bad credentials, denied or expired logins raise
:class:`condavault.errors.Unauthenticated` (the message never says whether the user exists);
a directory or provider that cannot be reached or answers nonsense raises
:class:`IdentityBackendUnavailable` / :class:`IdentityBackendError`, and a configuration that
cannot work raises :class:`IdentityBackendMisconfigured`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from condavault.errors import CondavaultError

IdentitySource = Literal["ldap", "oidc"]


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """A user as an external directory or provider vouches for them.

    ``subject`` is the stable id at the source: the entry DN for LDAP, ``sub`` for OIDC.
    ``groups`` are already mapped through the backend's ``group_map`` when one is configured.
    """

    username: str
    email: str | None
    display_name: str | None
    groups: frozenset[str]
    source: IdentitySource
    subject: str


class IdentityBackendError(CondavaultError):
    """The directory or provider answered in a way the backend cannot use."""

    status = 502
    code = "identity_backend_error"


class IdentityBackendUnavailable(IdentityBackendError):
    """The directory or provider could not be reached (network, TLS, timeout)."""

    status = 503
    code = "identity_backend_unavailable"


class IdentityBackendMisconfigured(IdentityBackendError):
    """The settings cannot work: service account rejected, issuer mismatch, ..."""

    status = 500
    code = "identity_backend_misconfigured"


class PasswordBackend(Protocol):
    """A backend that checks a username and password itself (LDAP/AD)."""

    def authenticate(self, username: str, password: str) -> ExternalIdentity: ...


def map_groups(names: Iterable[str], group_map: Mapping[str, str] | None) -> frozenset[str]:
    """Apply a source-group -> condavault-group map.

    Without a map every source group is kept under its own name. With a map only mapped
    groups are kept (matching is case-insensitive, as directories compare names that way).
    """
    if group_map is None:
        return frozenset(n for n in names if n)
    folded = {k.casefold(): v for k, v in group_map.items()}
    return frozenset(folded[n.casefold()] for n in names if n.casefold() in folded)
