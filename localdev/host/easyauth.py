"""The local host playing App Service Authentication ("Easy Auth") with Entra ID.

In Azure, Easy Auth sits in front of the function app (infra: ``authsettingsV2`` with
``requireAuthentication`` and ``Return401``): it validates the caller's bearer token and passes
the app the caller's identity in headers that external requests cannot set. Locally this
module does the same for HTTP-triggered functions when ``LOCALDEV_EASYAUTH_ISSUER`` is set:

- every ``X-MS-CLIENT-PRINCIPAL*`` and ``X-MS-TOKEN-*`` header a client sent is dropped, always
  ("External requests aren't allowed to set these headers", learn.microsoft.com/azure/app-service/
  configure-authentication-user-identities);
- a request without ``Authorization: Bearer <token>`` gets 401 (Return401), unless its path is in
  ``LOCALDEV_EASYAUTH_EXCLUDED_PATHS`` (``globalValidation.excludedPaths``);
- the token must be a JWT signed by a key of the issuer's JWKS (OpenID metadata at
  ``{issuer}/.well-known/openid-configuration``), RS256, with ``iss`` equal to the issuer,
  ``aud`` the client id or an allowed audience, ``exp``/``nbf`` within 5 minutes of clock skew,
  ``tid`` an allowed tenant and an ``oid``; anything else is 401;
- the validated claims go to the app as ``X-MS-CLIENT-PRINCIPAL`` (Base64 JSON ``{auth_typ,
  claims: [{typ, val}], name_typ, role_typ}``, with App Service's claim mapping for oid, tid,
  upn/scope and one ``roles`` claim per role), ``X-MS-CLIENT-PRINCIPAL-ID`` / ``-NAME`` / ``-IDP``.

Browsers (the console) sign in the way App Service Authentication's ``/.auth/login/aad`` flow ends: with
a session cookie. Locally there is no Entra ID sign-in page, so ``GET /.auth/login/dev?token=JWT&
post_login_redirect_uri=/path`` takes a **short-lived** token of the simulator (lifetime at most
``LOGIN_MAX_LIFETIME_S``, usable once) for a dev principal, validates it like a bearer token, and turns
it into a session cookie (``AppServiceAuthSession``: random, HttpOnly, SameSite=Lax; the claims stay in
the host's memory for ``SESSION_S``, as Easy Auth's default 8-hour cookie) before redirecting to a path
of this host. ``responder console-url`` prints such a URL. ``GET /.auth/logout`` ends the session.
A request with a bearer token is judged by the token; one without, by its session cookie.

Like Easy Auth, it does not check app roles: the app does (shared/principal.py). The host also
sets ``WEBSITE_AUTH_ENABLED`` for the app, as the platform does, so the app knows the headers
come from here (runtime.LocalHost).

Settings: ``LOCALDEV_EASYAUTH_ISSUER`` (openIdIssuer), ``LOCALDEV_EASYAUTH_CLIENT_ID``
(registration.clientId, always an allowed audience), ``LOCALDEV_EASYAUTH_ALLOWED_AUDIENCES``,
``LOCALDEV_EASYAUTH_ALLOWED_TENANTS`` (WEBSITE_AUTH_AAD_ALLOWED_TENANTS), comma-separated, and
``LOCALDEV_EASYAUTH_EXCLUDED_PATHS``.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import aiohttp
import jwt

logger = logging.getLogger(__name__)

__all__ = ["EasyAuth", "EasyAuthConfig", "Sessions", "TokenRefused", "STRIPPED_PREFIXES", "SESSION_COOKIE",
           "LOGIN_MAX_LIFETIME_S", "safe_redirect"]

STRIPPED_PREFIXES = ("x-ms-client-principal", "x-ms-token-")
CLOCK_SKEW_S = 300
KEY_REFRESH_S = 30.0
OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"
TID = "http://schemas.microsoft.com/identity/claims/tenantid"
SCOPE = "http://schemas.microsoft.com/identity/claims/scope"
UPN = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
NAME_TYP = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE_TYP = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


SESSION_COOKIE = "AppServiceAuthSession"
SESSION_S = 8 * 3600
LOGIN_MAX_LIFETIME_S = 300
MAX_SESSIONS = 10_000


def safe_redirect(value: str | None, default: str = "/api/console") -> str:
    """A path of this host only (no scheme, no host, no '//' or backslash): no open redirect."""
    value = (value or "").strip()
    if not value.startswith("/") or value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return default
    return value[:500]


class Sessions:
    """Browser sessions of the local Easy Auth: a random id (the cookie) -> the signed-in claims, in memory."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[dict[str, Any], float]] = {}
        self._used_logins: dict[str, float] = {}

    def start(self, claims: dict[str, Any]) -> str:
        now = time.monotonic()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = (claims, now + SESSION_S)
        return session_id

    def claims(self, session_id: str | None) -> dict[str, Any] | None:
        found = self._sessions.get(session_id or "")
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def end(self, session_id: str | None) -> None:
        self._sessions.pop(session_id or "", None)

    def use_login(self, token: str, expires_at: float) -> bool:
        """True the first time a login token is used (remembered until it expires), False after."""
        now = time.time()
        self._used_logins = {k: v for k, v in self._used_logins.items() if v > now}
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest in self._used_logins:
            return False
        self._used_logins[digest] = expires_at
        return True


class TokenRefused(Exception):
    """The bearer token is missing or invalid (401). The message never contains the token."""


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


@dataclass(frozen=True)
class EasyAuthConfig:
    issuer: str
    client_id: str
    audiences: tuple[str, ...]
    allowed_tenants: tuple[str, ...]
    excluded_paths: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Optional["EasyAuthConfig"]:
        issuer = (env.get("LOCALDEV_EASYAUTH_ISSUER") or "").strip().rstrip("/")
        if not issuer:
            return None
        client_id = (env.get("LOCALDEV_EASYAUTH_CLIENT_ID") or "").strip()
        audiences = tuple(dict.fromkeys(((client_id,) if client_id else ()) +
                                        _csv(env.get("LOCALDEV_EASYAUTH_ALLOWED_AUDIENCES"))))
        if not audiences:
            raise ValueError("LOCALDEV_EASYAUTH_ISSUER is set but no client id or audience is")
        return cls(issuer=issuer, client_id=client_id, audiences=audiences,
                   allowed_tenants=tuple(t.lower() for t in _csv(env.get("LOCALDEV_EASYAUTH_ALLOWED_TENANTS"))),
                   excluded_paths=tuple("/" + p.strip("/") for p in _csv(env.get("LOCALDEV_EASYAUTH_EXCLUDED_PATHS"))))


class EasyAuth:
    """Validates bearer tokens against the issuer's published keys and builds the principal headers."""

    def __init__(self, config: EasyAuthConfig) -> None:
        self.config = config
        self._keys: dict[str, Any] = {}
        self._fetched = 0.0
        self._lock = asyncio.Lock()
        self._session: Optional[aiohttp.ClientSession] = None
        self.sessions = Sessions()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def excluded(self, path: str) -> bool:
        path = "/" + path.strip("/")
        return any(path == p or path.startswith(p + "/") for p in self.config.excluded_paths)

    async def _get(self, url: str) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self._session.get(url) as response:
            if response.status != 200:
                raise TokenRefused(f"the issuer's metadata is unavailable ({response.status})")
            return await response.json(content_type=None)

    async def _signing_key(self, kid: str) -> Any:
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched > KEY_REFRESH_S:
                metadata = await self._get(f"{self.config.issuer}/.well-known/openid-configuration")
                if metadata.get("issuer") != self.config.issuer:
                    raise TokenRefused("the issuer's metadata names another issuer")
                jwks = await self._get(str(metadata["jwks_uri"]))
                self._keys = {k["kid"]: jwt.PyJWK(k).key for k in jwks.get("keys", []) if k.get("kid")}
                self._fetched = time.monotonic()
        if kid not in self._keys:
            raise TokenRefused("the token is signed with a key the issuer does not publish")
        return self._keys[kid]

    async def validate(self, authorization: str | None) -> dict[str, Any]:
        """The token's claims, or TokenRefused."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TokenRefused("no bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefused("the token is not a JWT") from None
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise TokenRefused("the token is not signed with RS256 and a key id")
        key = await self._signing_key(header["kid"])
        try:
            claims = jwt.decode(token, key, algorithms=["RS256"], audience=list(self.config.audiences),
                                issuer=self.config.issuer, leeway=CLOCK_SKEW_S,
                                options={"require": ["exp", "iat", "nbf", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise TokenRefused("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the token is invalid ({exc.__class__.__name__})") from None
        tenant = str(claims.get("tid") or "").lower()
        if self.config.allowed_tenants and tenant not in self.config.allowed_tenants:
            raise TokenRefused("the token is from a tenant that is not allowed")
        if not claims.get("oid"):
            raise TokenRefused("the token has no oid (object id) claim")
        return claims

    async def login(self, token: str | None) -> dict[str, Any]:
        """The claims of a short-lived, unused login token (``/.auth/login/dev``), or TokenRefused."""
        claims = await self.validate(f"Bearer {token or ''}")
        lifetime = int(claims.get("exp", 0)) - int(claims.get("iat", claims.get("nbf", 0)) or 0)
        if lifetime > LOGIN_MAX_LIFETIME_S:
            raise TokenRefused(f"a sign-in link must carry a token valid for at most {LOGIN_MAX_LIFETIME_S} s "
                               "(use `responder console-url`)")
        if not self.sessions.use_login(str(token), float(claims.get("exp", 0))):
            raise TokenRefused("this sign-in link was already used")
        return claims

    @staticmethod
    def principal_headers(claims: dict[str, Any]) -> dict[str, str]:
        """The headers App Service Authentication gives the app for these claims."""
        mapped: list[dict[str, str]] = []

        def add(typ: str, value: Any) -> None:
            if value not in (None, ""):
                mapped.append({"typ": typ, "val": str(value)})

        for name in ("aud", "iss", "iat", "nbf", "exp", "ver", "azp", "appid", "name", "preferred_username"):
            add(name, claims.get(name))
        add(OID, claims.get("oid"))
        add(TID, claims.get("tid"))
        add(SCOPE, claims.get("scp"))
        add(UPN, claims.get("upn"))
        for role in claims.get("roles") or []:
            add("roles", role)
        principal = {"auth_typ": "aad", "claims": mapped, "name_typ": NAME_TYP, "role_typ": ROLE_TYP}
        name = claims.get("upn") or claims.get("preferred_username") or claims.get("azp") or claims.get("appid") or ""
        return {
            "X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(principal).encode()).decode(),
            "X-MS-CLIENT-PRINCIPAL-ID": str(claims["oid"]),
            "X-MS-CLIENT-PRINCIPAL-NAME": str(name),
            "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
        }
