"""OpenID Connect login: authorization code + PKCE for browsers, device grant for the CLI.

Plain ``httpx`` for the protocol, ``joserfc`` (the JOSE library authlib builds on) for ID token
signatures. The provider is found by discovery (``{issuer}/.well-known/openid-configuration``);
discovery and the JWKS are cached, and the JWKS is fetched again when a token names a key id
that is not cached (key rotation).

Every ID token is checked for: signature against the provider's JWKS with an asymmetric
algorithm the provider advertises, ``iss`` equal to the configured issuer, ``aud`` containing our
client id (and ``azp`` when there are several audiences), ``exp``/``iat`` (with ``clock_skew``),
and the ``nonce`` of the browser login. The authorization response's ``state`` is compared in
constant time and its ``iss`` parameter (RFC 9207) must match when sent. Claims from the userinfo
endpoint are merged under the ID token's (same ``sub`` required).

Keycloak: every field comes straight from a realm and one of its clients.

* ``issuer`` = ``https://<keycloak>/realms/<realm>`` (the "OpenID Endpoint Configuration" link of
  the realm, without ``/.well-known/...``).
* ``client_id`` / ``client_secret`` = the client's "Client ID" and, with "Client authentication"
  ON, the secret from its "Credentials" tab (leave ``client_secret`` empty for a public client).
  Enable "Standard flow" and "OAuth 2.0 Device Authorization Grant"; set "Valid redirect URIs"
  to condavault's callback URL and "PKCE Method" to S256 in the client's advanced settings.
* ``username_claim`` = ``preferred_username`` (Keycloak's username, from the ``profile`` scope).
* ``groups_claim`` = ``groups``: add a "Group Membership" mapper (Token Claim Name ``groups``,
  "Add to ID token" and "Add to userinfo" ON) to the client's dedicated scope. With "Full group
  path" ON Keycloak sends ``/parent/child``; the leading ``/`` is removed. To use realm roles
  instead, set ``groups_claim="realm_access.roles"`` (dotted paths reach nested claims).
* ``scopes`` = ``["openid", "profile", "email"]`` (add a client scope name if the mapper lives
  in one, e.g. ``microprofile-jwt`` which also yields ``groups``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from condavault.auth.backends.base import (
    ExternalIdentity,
    IdentityBackendError,
    IdentityBackendMisconfigured,
    IdentityBackendUnavailable,
    map_groups,
)
from condavault.auth.backends.settings import OidcSettings
from condavault.errors import Unauthenticated

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ASYMMETRIC_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"}
)
_JWKS_MIN_REFRESH = 10.0  # seconds between forced JWKS refreshes for unknown key ids


@dataclass(frozen=True, slots=True)
class LoginState:
    """Secrets of one browser login; keep server-side or in a signed session until the callback."""

    state: str
    nonce: str
    code_verifier: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> LoginState:
        return cls(state=data["state"], nonce=data["nonce"], code_verifier=data["code_verifier"])


@dataclass(frozen=True, slots=True)
class DeviceAuth:
    """What the CLI shows the user (RFC 8628 §3.2); poll with ``device_code`` every ``interval`` s."""

    device_code: str
    user_code: str
    verification_uri: str
    interval: int
    expires_in: int
    verification_uri_complete: str | None = None


class OidcBackend:
    """Client of one OpenID provider. Thread-safe; share one instance per provider."""

    source = "oidc"

    def __init__(self, settings: OidcSettings, *, http: httpx.Client | None = None) -> None:
        self.settings = settings
        self._http = http or httpx.Client(verify=_verify(settings), timeout=settings.timeout)
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: KeySet | None = None
        self._jwks_at = 0.0

    def close(self) -> None:
        self._http.close()

    # -- discovery and keys ---------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached for ``discovery_ttl`` seconds)."""
        with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > self.settings.discovery_ttl:
                url = f"{self.settings.issuer}/.well-known/openid-configuration"
                doc = self._get_json(url)
                if doc.get("issuer") != self.settings.issuer:
                    raise IdentityBackendMisconfigured(
                        "discovery document names another issuer",
                        expected=self.settings.issuer,
                        found=doc.get("issuer"),
                    )
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not doc.get(key):
                        raise IdentityBackendError(f"discovery document lacks {key}")
                self._metadata, self._metadata_at = doc, time.monotonic()
            return self._metadata

    def _keys(self, kid: str | None) -> KeySet:
        with self._lock:
            age = time.monotonic() - self._jwks_at
            stale = self._jwks is None or age > self.settings.jwks_ttl
            unknown = self._jwks is not None and kid is not None and not _has_kid(self._jwks, kid)
            refresh = stale or (unknown and age > _JWKS_MIN_REFRESH)
        if refresh:
            data = self._get_json(self.metadata()["jwks_uri"])
            try:
                keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise IdentityBackendError(f"provider JWKS is unusable: {exc}")
            with self._lock:
                self._jwks, self._jwks_at = keys, time.monotonic()
        assert self._jwks is not None
        return self._jwks

    # -- authorization code + PKCE --------------------------------------------------------------

    def start_login(self, redirect_uri: str) -> tuple[str, LoginState]:
        """URL to send the browser to, and the state to keep until :meth:`finish_login`."""
        login = LoginState(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),
        )
        challenge = _b64url(hashlib.sha256(login.code_verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        endpoint = self.metadata()["authorization_endpoint"]
        sep = "&" if "?" in endpoint else "?"
        return f"{endpoint}{sep}{urlencode(query)}", login

    def finish_login(self, params: Mapping[str, str], state: LoginState, redirect_uri: str) -> ExternalIdentity:
        """Check the callback's query ``params`` against ``state``, redeem the code, return the user."""
        got_state = params.get("state") or ""
        if not hmac.compare_digest(got_state.encode(), state.state.encode()):
            raise Unauthenticated("OIDC login state does not match", code="invalid_state")
        meta = self.metadata()
        iss = params.get("iss")
        if (iss is not None or meta.get("authorization_response_iss_parameter_supported")) and (
            iss != self.settings.issuer
        ):
            raise Unauthenticated("OIDC authorization response from another issuer", code="invalid_issuer")
        if "error" in params:
            raise Unauthenticated(
                f"identity provider refused the login: {params.get('error_description') or params['error']}",
                code="oidc_" + params["error"],
            )
        code = params.get("code")
        if not code:
            raise Unauthenticated("OIDC callback without authorization code")
        tokens = self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": state.code_verifier,
            }
        )
        return self._identity_from_tokens(tokens, nonce=state.nonce)

    # -- device authorization grant (RFC 8628) --------------------------------------------------

    def start_device(self) -> DeviceAuth:
        """Ask the provider for a device + user code pair for a CLI login."""
        endpoint = self.metadata().get("device_authorization_endpoint")
        if not endpoint:
            raise IdentityBackendMisconfigured("provider does not support the device authorization grant")
        data = self._post_form(endpoint, {"scope": " ".join(self.settings.scopes)})
        if "error" in data:
            raise IdentityBackendMisconfigured(f"device authorization refused: {data['error']}")
        try:
            return DeviceAuth(
                device_code=data["device_code"],
                user_code=data["user_code"],
                verification_uri=data.get("verification_uri") or data["verification_url"],
                verification_uri_complete=data.get("verification_uri_complete"),
                interval=int(data.get("interval", 5)),
                expires_in=int(data["expires_in"]),
            )
        except (KeyError, TypeError, ValueError):
            raise IdentityBackendError("malformed device authorization response")

    def poll_device(self, device_code: str) -> ExternalIdentity | None:
        """One poll: the identity once approved, ``None`` while pending (on ``slow_down`` too —
        the caller then waits 5 s longer between polls). Denied or expired raise Unauthenticated."""
        data = self._post_form(
            self.metadata()["token_endpoint"], {"grant_type": DEVICE_GRANT, "device_code": device_code}
        )
        error = data.get("error")
        if error in ("authorization_pending", "slow_down"):
            return None
        if error == "access_denied":
            raise Unauthenticated("device login was denied", code="access_denied")
        if error == "expired_token":
            raise Unauthenticated("device code expired", code="expired_token")
        if error:
            raise Unauthenticated(f"device login failed: {error}", code="oidc_" + str(error))
        return self._identity_from_tokens(data, nonce=None)

    # -- tokens and claims ----------------------------------------------------------------------

    def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        data = self._post_form(self.metadata()["token_endpoint"], form)
        if "error" in data:
            if data["error"] in ("invalid_grant", "access_denied"):
                raise Unauthenticated(f"identity provider rejected the code: {data['error']}")
            raise IdentityBackendError(f"token request failed: {data['error']}", provider_error=data["error"])
        return data

    def _identity_from_tokens(self, tokens: Mapping[str, Any], *, nonce: str | None) -> ExternalIdentity:
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise IdentityBackendError("token response has no id_token (is the 'openid' scope granted?)")
        claims = self.verify_id_token(id_token, nonce=nonce)
        access_token = tokens.get("access_token")
        userinfo_url = self.metadata().get("userinfo_endpoint")
        if access_token and userinfo_url:
            info = self._userinfo(userinfo_url, access_token)
            if info.get("sub") != claims["sub"]:
                raise IdentityBackendError("userinfo subject differs from ID token subject")
            claims = {**info, **claims}
        return self._identity(claims)

    def verify_id_token(self, token: str, *, nonce: str | None) -> dict[str, Any]:
        """Verify an ID token's signature and claims; return its claims."""
        s = self.settings
        header = _jws_header(token)
        allowed = ASYMMETRIC_ALGS.intersection(
            self.metadata().get("id_token_signing_alg_values_supported") or ["RS256"]
        )
        if header.get("alg") not in allowed:
            raise Unauthenticated("ID token signed with an unexpected algorithm", code="invalid_token")
        try:
            decoded = jwt.decode(token, self._keys(header.get("kid")), algorithms=sorted(allowed))
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"ID token signature invalid: {exc}", code="invalid_token")
        claims = dict(decoded.claims)
        now = time.time()
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        problems = [
            (claims.get("iss") != s.issuer, "iss"),
            (s.client_id not in audiences, "aud"),
            (len(audiences) > 1 and claims.get("azp") != s.client_id, "azp"),
            (not isinstance(claims.get("exp"), int | float) or claims["exp"] < now - s.clock_skew, "exp"),
            (not isinstance(claims.get("iat"), int | float) or claims["iat"] > now + s.clock_skew, "iat"),
            (not isinstance(claims.get("sub"), str) or not claims["sub"], "sub"),
            (nonce is not None and not hmac.compare_digest(str(claims.get("nonce", "")), nonce), "nonce"),
        ]
        bad = [name for failed, name in problems if failed]
        if bad:
            raise Unauthenticated(f"ID token claims invalid: {', '.join(bad)}", code="invalid_token")
        return claims

    def _identity(self, claims: Mapping[str, Any]) -> ExternalIdentity:
        s = self.settings
        username = _claim(claims, s.username_claim)
        if not isinstance(username, str) or not username:
            raise IdentityBackendMisconfigured(f"provider sent no {s.username_claim!r} claim")
        raw = _claim(claims, s.groups_claim)
        values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list | tuple) else []
        names = [v.lstrip("/") for v in values if isinstance(v, str)]
        email, display = _claim(claims, s.email_claim), _claim(claims, s.display_name_claim)
        return ExternalIdentity(
            username=username,
            email=email if isinstance(email, str) else None,
            display_name=display if isinstance(display, str) else None,
            groups=map_groups(names, s.group_map),
            source="oidc",
            subject=claims["sub"],
        )

    # -- HTTP -----------------------------------------------------------------------------------

    def _client_auth(self, form: dict[str, str]) -> tuple[dict[str, str], httpx.Auth | None]:
        s = self.settings
        if s.client_secret is None:
            return {**form, "client_id": s.client_id}, None
        # RFC 6749 §2.3.1: id and secret are form-encoded before Basic encoding
        secret = s.client_secret.get_secret_value()
        return form, httpx.BasicAuth(quote(s.client_id, safe=""), quote(secret, safe=""))

    def _post_form(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        body, auth = self._client_auth(form)
        try:
            response = self._http.post(
                url,
                data=body,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                headers={"Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise IdentityBackendUnavailable(f"cannot reach identity provider: {exc}")
        return _json(response, url, errors_ok=True)

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise IdentityBackendUnavailable(f"cannot reach identity provider: {exc}")
        return _json(response, url, errors_ok=False)

    def _userinfo(self, url: str, access_token: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, headers={"Authorization": f"Bearer {access_token}"})
        except httpx.HTTPError as exc:
            raise IdentityBackendUnavailable(f"cannot reach identity provider: {exc}")
        return _json(response, url, errors_ok=False)


def _verify(settings: OidcSettings) -> ssl.SSLContext | bool:
    if not settings.verify_tls:
        return False
    if settings.ca_file:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return True


def _json(response: httpx.Response, url: str, *, errors_ok: bool) -> dict[str, Any]:
    """Parse a JSON object; OAuth error bodies (400/401 with ``error``) pass when ``errors_ok``."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and (response.is_success or (errors_ok and "error" in data)):
        return data
    raise IdentityBackendError(f"unexpected answer from identity provider ({response.status_code})", url=url)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jws_header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("ID token is not a signed JWT", code="invalid_token")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except ValueError:
        raise Unauthenticated("ID token header is malformed", code="invalid_token")
    if not isinstance(header, dict):
        raise Unauthenticated("ID token header is malformed", code="invalid_token")
    return header


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name, or by dotted path into nested objects (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
