"""CSRF protection for the console's forms (pure).

Browsers reach the console with a session cookie (App Service Authentication's, or the local host's),
which a browser also sends with a request another site makes it send. Every state-changing form
therefore carries a token that only a page of this origin can know, checked on the server:

- the token is a random value (256 bits) kept in the console's own cookie: ``__Host-br-csrf`` over
  https (the ``__Host-`` prefix: Secure, Path=/, no Domain, so no sibling host can plant it), ``br-csrf``
  on the plain-http local stack; ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (a
  cross-site request does not even carry it);
- every form repeats it in a hidden field; a POST is accepted only when the field equals the cookie
  (constant-time compare: the "double submit" pattern, which needs no server-side secret and works
  on every instance of a scaled-out app);
- and, where the browser says where the request comes from, ``Origin`` must be the console's own
  origin and ``Sec-Fetch-Site`` ``same-origin``.
"""
from __future__ import annotations

import hmac
import re
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Mapping
from urllib.parse import urlsplit

SECURE_NAME, PLAIN_NAME = "__Host-br-csrf", "br-csrf"
FIELD = "csrf"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,100}$")


def cookie_name(secure: bool) -> str:
    return SECURE_NAME if secure else PLAIN_NAME


def new_token() -> str:
    return secrets.token_urlsafe(32)


def set_cookie(token: str, secure: bool) -> str:
    """The Set-Cookie header value that keeps ``token`` for this browser session."""
    return f"{cookie_name(secure)}={token}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def token_from_cookies(cookie_header: str | None, secure: bool) -> str | None:
    """The console's token from a Cookie header, or None (absent or malformed)."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(cookie_name(secure))
    value = morsel.value if morsel is not None else ""
    return value if _TOKEN.match(value) else None


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value.strip()
    return ""


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def refusal(form_token: str | None, cookie_token: str | None, headers: Mapping[str, str], own_origins: set[str]) -> str:
    """Why a state-changing request is refused ('' when it is accepted)."""
    site = _header(headers, "sec-fetch-site").lower()
    if site and site != "same-origin":
        return f"the request came from another site (Sec-Fetch-Site: {site[:20]})"
    origin = _header(headers, "origin").lower()
    if origin and origin != "null" and origin not in own_origins:
        return "the request came from another origin"
    if origin == "null":
        return "the request came from an opaque origin"
    if not cookie_token or not form_token or not _TOKEN.match(form_token):
        return "the form's security token is missing: reload the page and try again"
    if not hmac.compare_digest(form_token.encode(), cookie_token.encode()):
        return "the form's security token does not match this browser session: reload the page and try again"
    return ""
