"""OidcBackend against a real OpenID provider (panva/oidc-provider, tests/support/oidc_server.py).

Every login walks the provider's real pages: redirects are followed and its login, consent and
device forms are parsed and submitted with httpx (tests/support/oidc_server.py:Browser).
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydantic import SecretStr
from tests.support.oidc_server import Browser, OidcProvider

from condavault.auth.backends import ExternalIdentity, IdentityBackendMisconfigured
from condavault.auth.backends.oidc import LoginState, OidcBackend, OidcSettings
from condavault.errors import Unauthenticated

ALICE = ExternalIdentity(
    username="alice",
    email="alice@example.org",
    display_name="Alice Liddell",
    groups=frozenset({"developers", "admins"}),  # Keycloak-style "/developers" loses its slash
    source="oidc",
    subject="alice",
)


def _authorize(backend: OidcBackend, browser: Browser, redirect_uri: str) -> tuple[dict[str, str], LoginState]:
    """Start a login and click through the provider; return the callback's query parameters."""
    url, login = backend.start_login(redirect_uri)
    callback = browser.walk(url, fill={"login": "alice", "password": "any"}, stop_at=redirect_uri)
    assert isinstance(callback, str), "the provider never redirected back"
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    return params, login


def test_code_flow_with_pkce_end_to_end(
    oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser
) -> None:
    url, login = oidc_backend.start_login(oidc_provider.redirect_uri)
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"] == [login.state] and query["nonce"] == [login.nonce]
    assert login.code_verifier not in url

    callback = browser.walk(url, fill={"login": "alice", "password": "any"}, stop_at=oidc_provider.redirect_uri)
    assert isinstance(callback, str)
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    # the real provider showed its login page, then its consent page
    titles = [p.text for p in browser.pages if "<form" in p.text]
    assert any('name="prompt" value="login"' in t for t in titles)
    assert any('name="prompt" value="consent"' in t for t in titles)

    identity = oidc_backend.finish_login(params, login, oidc_provider.redirect_uri)
    assert identity == ALICE


def test_login_state_survives_a_session_round_trip(
    oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser
) -> None:
    params, login = _authorize(oidc_backend, browser, oidc_provider.redirect_uri)
    restored = LoginState.from_dict(login.to_dict())
    assert oidc_backend.finish_login(params, restored, oidc_provider.redirect_uri).username == "alice"


def test_tampered_state_is_rejected(oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser) -> None:
    params, login = _authorize(oidc_backend, browser, oidc_provider.redirect_uri)
    for bad in ({**params, "state": params["state"][:-1] + "x"}, {k: v for k, v in params.items() if k != "state"}):
        with pytest.raises(Unauthenticated) as info:
            oidc_backend.finish_login(bad, login, oidc_provider.redirect_uri)
        assert info.value.code == "invalid_state"


def test_wrong_nonce_is_rejected(oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser) -> None:
    params, login = _authorize(oidc_backend, browser, oidc_provider.redirect_uri)
    other = LoginState(state=login.state, nonce="another-login", code_verifier=login.code_verifier)
    with pytest.raises(Unauthenticated) as info:
        oidc_backend.finish_login(params, other, oidc_provider.redirect_uri)
    assert info.value.code == "invalid_token"
    assert "nonce" in info.value.message


def test_wrong_code_verifier_is_rejected_by_the_provider(
    oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser
) -> None:
    params, login = _authorize(oidc_backend, browser, oidc_provider.redirect_uri)
    other = LoginState(state=login.state, nonce=login.nonce, code_verifier="x" * 64)
    with pytest.raises(Unauthenticated):
        oidc_backend.finish_login(params, other, oidc_provider.redirect_uri)


def test_code_cannot_be_replayed(oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser) -> None:
    params, login = _authorize(oidc_backend, browser, oidc_provider.redirect_uri)
    oidc_backend.finish_login(params, login, oidc_provider.redirect_uri)
    with pytest.raises(Unauthenticated):
        oidc_backend.finish_login(params, login, oidc_provider.redirect_uri)


def test_mixed_up_issuer_parameter_is_rejected(
    oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser
) -> None:
    params, login = _authorize(oidc_backend, browser, oidc_provider.redirect_uri)
    with pytest.raises(Unauthenticated) as info:
        oidc_backend.finish_login({**params, "iss": "https://evil.example"}, login, oidc_provider.redirect_uri)
    assert info.value.code == "invalid_issuer"


def test_user_aborting_at_the_provider(
    oidc_backend: OidcBackend, oidc_provider: OidcProvider, browser: Browser
) -> None:
    url, login = oidc_backend.start_login(oidc_provider.redirect_uri)
    page = browser.client.get(url, follow_redirects=True)  # the provider's login page
    assert "/interaction/" in page.url.path
    callback = browser.walk(f"{page.url}/abort", stop_at=oidc_provider.redirect_uri)  # its [ Cancel ] link
    assert isinstance(callback, str)
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    with pytest.raises(Unauthenticated) as info:
        oidc_backend.finish_login(params, login, oidc_provider.redirect_uri)
    assert info.value.code == "oidc_access_denied"


def test_discovery_and_jwks_are_cached(oidc_settings: OidcSettings, oidc_provider: OidcProvider) -> None:
    fetched: list[str] = []
    client = httpx.Client(event_hooks={"request": [lambda r: fetched.append(r.url.path)]})
    backend = OidcBackend(oidc_settings, http=client)
    for _ in range(2):
        browser = Browser()
        params, login = _authorize(backend, browser, oidc_provider.redirect_uri)
        browser.close()
        assert backend.finish_login(params, login, oidc_provider.redirect_uri) == ALICE
    backend.close()
    assert fetched.count("/.well-known/openid-configuration") == 1
    assert fetched.count("/jwks") == 1
    assert fetched.count("/token") == 2


def test_device_flow_end_to_end(oidc_backend: OidcBackend, browser: Browser) -> None:
    device = oidc_backend.start_device()
    assert device.user_code and device.interval >= 1 and device.expires_in > 0
    assert oidc_backend.poll_device(device.device_code) is None  # nobody approved yet

    # the user opens the verification page, types the code, confirms, logs in and consents
    done = browser.walk(device.verification_uri, fill={"user_code": device.user_code, "login": "alice"})
    assert isinstance(done, httpx.Response) and "Sign-in Success" in done.text

    identity = None
    for _ in range(20):  # the provider may answer slow_down to eager polls
        identity = oidc_backend.poll_device(device.device_code)
        if identity is not None:
            break
        time.sleep(0.25)
    assert identity == ALICE


def test_device_flow_denied_by_the_user(oidc_backend: OidcBackend, browser: Browser) -> None:
    device = oidc_backend.start_device()
    page = browser.client.get(device.verification_uri)
    confirm = browser.submit(page, fill={"user_code": device.user_code})
    assert "Device Login Confirmation" in confirm.text and device.user_code in confirm.text
    browser.submit(confirm, extra={"abort": "yes"})  # the page's [ Abort ] button

    with pytest.raises(Unauthenticated) as info:
        oidc_backend.poll_device(device.device_code)
    assert info.value.code == "access_denied"


def test_wrong_user_code_is_refused_by_the_provider(oidc_backend: OidcBackend, browser: Browser) -> None:
    device = oidc_backend.start_device()
    page = browser.client.get(device.verification_uri)
    again = browser.submit(page, fill={"user_code": "BCDF-GHJK"})
    assert "incorrect" in again.text
    assert oidc_backend.poll_device(device.device_code) is None


def test_unknown_device_code_is_rejected(oidc_backend: OidcBackend) -> None:
    with pytest.raises(Unauthenticated):
        oidc_backend.poll_device("not-a-device-code")


def test_forged_id_token_is_rejected(oidc_backend: OidcBackend, oidc_provider: OidcProvider) -> None:
    kid = httpx.get(f"{oidc_provider.issuer}/jwks").json()["keys"][0]["kid"]
    forger = RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    now = int(time.time())
    claims = {"iss": oidc_provider.issuer, "aud": oidc_provider.client_id, "sub": "alice", "iat": now, "exp": now + 60}
    forged = jwt.encode({"alg": "RS256", "kid": kid}, claims, forger)
    with pytest.raises(Unauthenticated) as info:
        oidc_backend.verify_id_token(forged, nonce=None)
    assert info.value.code == "invalid_token"

    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    unsigned = header + forged[forged.index(".") : forged.rindex(".")] + "."
    with pytest.raises(Unauthenticated):
        oidc_backend.verify_id_token(unsigned, nonce=None)


def test_issuer_mismatch_in_discovery_is_a_configuration_error(oidc_provider: OidcProvider) -> None:
    # same server, but reached under another name than the one it calls itself
    issuer = oidc_provider.issuer.replace("127.0.0.1", "localhost")
    backend = OidcBackend(OidcSettings(issuer=issuer, client_id="condavault"))
    with pytest.raises(IdentityBackendMisconfigured):
        backend.start_login("http://127.0.0.1:9/cb")
    backend.close()


def test_wrong_client_secret_is_a_configuration_error(oidc_provider: OidcProvider, oidc_settings: OidcSettings) -> None:
    backend = OidcBackend(oidc_settings.model_copy(update={"client_secret": SecretStr("wrong")}))
    with pytest.raises(IdentityBackendMisconfigured) as info:
        backend.start_device()
    assert "invalid_client" in info.value.message
    backend.close()
