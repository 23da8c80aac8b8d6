"""A browser-like HTTP client for the console on the local host: a cookie jar, the local Easy Auth's
sign-in link (``responder console-url``'s), redirects followed, form posts with the page's CSRF token."""
from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

from localdev.cli import console_login_url

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ConsoleClient:
    def __init__(self, host_url: str) -> None:
        self.host_url = host_url
        self.jar = http.cookiejar.CookieJar()
        handlers = [urllib.request.HTTPCookieProcessor(self.jar), urllib.request.ProxyHandler({})]
        self.opener = urllib.request.build_opener(*handlers)
        self.no_redirect = urllib.request.build_opener(*handlers, _NoRedirect())

    def sign_in(self, simulator_url: str, upn: str, *roles: str) -> "ConsoleClient":
        """Follow a sign-in link: the session cookie is set whatever the landing page then says."""
        status, _, _ = self.get(console_login_url(self.host_url, simulator_url, upn, list(roles)), follow=False)
        assert status == 302, status
        return self

    def _open(self, request: urllib.request.Request, follow: bool) -> tuple[int, dict[str, str], str]:
        opener = self.opener if follow else self.no_redirect
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode("utf-8", "replace")

    def get(self, path_or_url: str, follow: bool = True) -> tuple[int, dict[str, str], str]:
        url = path_or_url if path_or_url.startswith("http") else self.host_url + path_or_url
        return self._open(urllib.request.Request(url), follow)

    def post(self, path: str, fields: Mapping[str, Any], headers: Mapping[str, str] | None = None,
             follow: bool = False) -> tuple[int, dict[str, str], str]:
        data = urllib.parse.urlencode(fields, doseq=True).encode()
        request = urllib.request.Request(self.host_url + path, data=data, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
        return self._open(request, follow)

    @staticmethod
    def token(page: str) -> str:
        found = CSRF_FIELD.search(page)
        assert found, "no CSRF field on the page"
        return found.group(1)
