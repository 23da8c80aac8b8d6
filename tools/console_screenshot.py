#!/usr/bin/env python3
"""Regenerate docs/console.png (the README's picture of the console) on the embedded local stack.

    .venv/bin/python tools/console_screenshot.py [--out docs/console.png]

Starts Azurite, the tenant simulator and the local host (auto mode, RECOVERY=tap to the manager),
puts the demo's four alerts on the queue (Adele, the break-glass account, the synced user, the Global
Administrator), waits for them to settle, signs a SOC lead in with a console sign-in link and captures
the list and Adele's incident page with Debian's chromium (tests/plugins/browser.py's launch flags).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localdev.cli import console_login_url  # noqa: E402
from localdev.stack import LocalStack  # noqa: E402
from tests.plugins.browser import ARGS, CHROMIUM  # noqa: E402

USERS = ("adele.vance@contoso.onmicrosoft.com", "breakglass@contoso.onmicrosoft.com",
         "synced.user@contoso.onmicrosoft.com", "admin@contoso.onmicrosoft.com")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "console.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    overrides = {"RESPONDER_MODE": "auto", "RECOVERY": "tap", "RECOVERY_DELIVER_TO": "manager",
                 "RECOVERY_HELPDESK_MAILBOX": "helpdesk@contoso.onmicrosoft.com"}
    with LocalStack(overrides=overrides) as stack:
        token = stack.simulator.client.operator_token(app="sentinel", roles=["Incident.Submit"])
        ids = {}
        for upn in USERS:
            request = urllib.request.Request(f"{stack.host.url}/api/incidents", method="POST", data=json.dumps(
                {"version": 1, "user_principal_name": upn, "reason": "Defender XDR: suspicious inbox forwarding",
                 "alert_ids": ["da638462-2b3f-4e5a-9b9e-51ed2f9c0a11"]}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            ids[upn] = json.loads(urllib.request.urlopen(request).read())["incident_id"]
        time.sleep(15)  # a picture, not a test: let the playbooks settle
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.goto(console_login_url(stack.host.url, stack.simulator.url, "soc.lead@contoso.onmicrosoft.com",
                                        ["Incident.Read", "Incident.Approve"], f"/api/console/incidents/{ids[USERS[0]]}"))
            page.wait_for_selector("#timeline")
            page.screenshot(path=args.out)
            browser.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
