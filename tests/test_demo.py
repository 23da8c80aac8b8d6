"""`responder demo --json` end to end (its own local stack): Adele contained, the break-glass account
held untouched, the synced user contained with an on-premises reset asked for, the Global
Administrator held with its sessions revoked; exit code 0 only when every check holds."""
from __future__ import annotations

import json

from localdev.demo import run_demo


def test_the_demo_ends_each_user_as_the_issue_says(capsys):
    code = run_demo(json_output=True, timeout_s=240)
    out = json.loads(capsys.readouterr().out)
    failed = [c for c in out["checks"] if not c["ok"]]
    assert code == 0 and out["ok"] and not failed, failed
    states = {i["user"]: i["state"] for i in out["incidents"]}
    assert states == {"adele.vance@contoso.onmicrosoft.com": "succeeded", "breakglass@contoso.onmicrosoft.com": "held",
                      "synced.user@contoso.onmicrosoft.com": "succeeded", "admin@contoso.onmicrosoft.com": "held"}
    synced = next(i for i in out["incidents"] if i["user"].startswith("synced.user@"))
    assert synced["action_required"].startswith("ON-PREMISES PASSWORD RESET REQUIRED")
    admin = next(i for i in out["incidents"] if i["user"].startswith("admin@"))
    assert admin["held_containment"] == "sessions revoked"
