"""Where operators reach the console (pure): the links in SOC mails and ``responder dev``.

CONSOLE_BASE_URL is the app's public base URL (https, no query or fragment: validated in
shared/settings.py); empty means the platform's own host name, ``https://$WEBSITE_HOSTNAME``
(App Service sets it in the worker). With neither, links are left out and the mail names the CLI.
"""
from __future__ import annotations

import os
import re
from typing import Mapping
from urllib.parse import quote

from ..settings import Settings

CONSOLE_PATH = "/api/console"
_HOSTNAME = re.compile(r"^[A-Za-z0-9.-]{1,253}(:\d{1,5})?$")


def console_root(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """The console's URL, or '' when the app does not know its public address."""
    base = settings.console_base_url
    if not base:
        host = (environ if environ is not None else os.environ).get("WEBSITE_HOSTNAME", "").strip()
        base = f"https://{host}" if host and _HOSTNAME.match(host) else ""
    return base + CONSOLE_PATH if base else ""


def incident_link(settings: Settings, incident_id: str, environ: Mapping[str, str] | None = None) -> str:
    """The console page of one incident, or ''."""
    root = console_root(settings, environ)
    return f"{root}/incidents/{quote(incident_id, safe='')}" if root else ""
