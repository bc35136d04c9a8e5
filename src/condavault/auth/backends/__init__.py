"""External identity backends: LDAP/Active Directory and OpenID Connect.

Each backend turns a login into an :class:`ExternalIdentity`; ``condavault.auth`` decides what a
returned identity may do (local user provisioning, group sync, tokens).
"""

from condavault.auth.backends.base import (
    ExternalIdentity,
    IdentityBackendError,
    IdentityBackendMisconfigured,
    IdentityBackendUnavailable,
    IdentitySource,
    PasswordBackend,
    map_groups,
)

__all__ = [
    "ExternalIdentity",
    "IdentityBackendError",
    "IdentityBackendMisconfigured",
    "IdentityBackendUnavailable",
    "IdentitySource",
    "PasswordBackend",
    "map_groups",
]
