"""The console over HTTP on the local host (its Easy Auth, real Azurite, the tenant simulator): who may
see and do what, the sign-in link, the CSRF guard, escaping and security headers, the held mail with its
console link, and an undo run by the worker. The real-browser tests are tests/test_console_browser.py."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from localdev import cli as localdev_cli
from localdev.azurite import free_port
from localdev.host.launcher import start_host
from localdev.stack import REPO, SEED_FILE, tenant_settings
from shared.cli import main as cli_main
from tests.helpers.console import ConsoleClient
from tests.helpers.operator import APPROVE, READ, SUBMIT, api, console_host_env
from tests.helpers.storage import wait_for

SEED = json.loads(SEED_FILE.read_text())
ADELE = "adele.vance@contoso.onmicrosoft.com"
GLASS = "breakglass@contoso.onmicrosoft.com"
LEAD, LEAD2, READER = "soc.lead@contoso.onmicrosoft.com", "soc.lead2@contoso.onmicrosoft.com", "soc.analyst@contoso.onmicrosoft.com"
FORWARD = SEED["users"][0]["mailbox"]["ForwardingSmtpAddress"]
EVIL_REASON = '<script>alert("reason")</script>'
EVIL_ALERT = '"><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def host(azurite, simulator, tmp_path_factory):
    port = free_port()
    env = console_host_env(azurite.connection_string, simulator, tenant_settings(SEED), port)
    proc = start_host(str(REPO), env=env, port=port, log_path=str(tmp_path_factory.mktemp("host-console") / "host.log"))
    yield proc
    proc.stop()


@pytest.fixture
def storage(fresh_storage, host, sim):
    return fresh_storage


def submit(host, sim, upn: str, **extra) -> str:
    token = sim.client.operator_token(app="sentinel", roles=[SUBMIT])
    status, body = api(host.url, "POST", "incidents", token=token, body={"version": 1, "user_principal_name": upn, **extra})
    assert status == 202, body
    return body["incident_id"]


async def finished(host, sim, incident_id: str) -> dict:
    reader = sim.client.operator_token(READER, [READ])

    async def done():
        status, view = await asyncio.to_thread(api, host.url, "GET", f"incidents/{incident_id}", token=reader)
        return view if status == 200 and view["state"] in ("succeeded", "failed", "held") else None

    return await wait_for(done)


def browser(host, sim, upn: str | None, *roles: str) -> ConsoleClient:
    client = ConsoleClient(host.url)
    return client.sign_in(sim.url, upn, *roles) if upn else client


async def test_the_console_needs_a_session_holding_incident_read(host, storage, sim):
    anonymous = browser(host, sim, None)
    status, _, page = await asyncio.to_thread(anonymous.get, "/api/console")
    assert status == 401 and "Incidents" not in page  # Easy Auth's Return401: the app is never reached
    status, headers, page = await asyncio.to_thread(anonymous.get, "/api/console/signin")
    assert status == 200 and '/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fconsole' in page
    status, headers, css = await asyncio.to_thread(anonymous.get, "/api/console/static/console.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and "--accent" in css
    assert (await asyncio.to_thread(anonymous.get, "/api/console/static/..%2F..%2Fsettings.py"))[0] == 404
    nobody = await asyncio.to_thread(browser, host, sim, "nobody@contoso.onmicrosoft.com")
    status, _, page = await asyncio.to_thread(nobody.get, "/api/console")
    assert status == 403 and "Incident.Read" in page
    reader = await asyncio.to_thread(browser, host, sim, READER, READ)
    status, headers, page = await asyncio.to_thread(reader.get, "/api/console")
    assert status == 200 and READER in page
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "same-origin"
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]


async def test_a_sign_in_link_is_short_lived_single_use_and_lands_only_on_this_host(host, storage, sim):
    token = sim.client.operator_token(READER, [READ], lifetime_s=120)
    client = ConsoleClient(host.url)
    evil = f"/.auth/login/dev?token={token}&post_login_redirect_uri=https://evil.example/x"
    status, headers, _ = await asyncio.to_thread(client.get, evil, False)
    assert status == 302 and headers["Location"] == "/api/console"
    assert "HttpOnly" in headers["Set-Cookie"] and "AppServiceAuthSession=" in headers["Set-Cookie"]
    again = ConsoleClient(host.url)
    status, _, page = await asyncio.to_thread(again.get, f"/.auth/login/dev?token={token}")
    assert status == 401 and "already used" in page
    long_lived = sim.client.operator_token(READER, [READ], lifetime_s=3600)
    status, _, page = await asyncio.to_thread(again.get, f"/.auth/login/dev?token={long_lived}")
    assert status == 401 and "at most 300 s" in page
    # signing out ends the session
    status, _, _ = await asyncio.to_thread(client.get, "/api/console")
    assert status == 200
    await asyncio.to_thread(client.get, "/.auth/logout")
    assert (await asyncio.to_thread(client.get, "/api/console"))[0] == 401


async def test_incident_data_is_escaped_and_no_page_has_inline_script(host, storage, sim):
    incident_id = submit(host, sim, GLASS, reason=EVIL_REASON, alert_ids=[EVIL_ALERT])
    lead = await asyncio.to_thread(browser, host, sim, LEAD, READ, APPROVE)
    for path in ("/api/console", f"/api/console/incidents/{incident_id}", "/api/console?state=held"):
        status, _, page = await asyncio.to_thread(lead.get, path)
        assert status == 200
        assert "<script>alert" not in page and "<img src=x" not in page
        assert re.findall(r"<script(?![^>]*\bsrc=)", page) == [] and " style=" not in page
        assert not re.search(r"<[^>]+\son[a-z]+=", page), "an inline event handler"
    detail = (await asyncio.to_thread(lead.get, f"/api/console/incidents/{incident_id}"))[2]
    assert "&lt;script&gt;alert(&quot;reason&quot;)&lt;/script&gt;" in detail
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in detail


async def test_a_reader_gets_no_form_and_the_submitter_no_approve_button(host, storage, sim):
    incident_id = submit(host, sim, GLASS)
    assert (await finished(host, sim, incident_id))["state"] == "held"
    reader = await asyncio.to_thread(browser, host, sim, READER, READ)
    page = (await asyncio.to_thread(reader.get, f"/api/console/incidents/{incident_id}"))[2]
    assert 'state-held">held' in page and 'method="post"' not in page and "Approve" not in page.split("<main", 1)[1].split("Approvals")[0]
    submitter = ConsoleClient(host.url)
    # the submitter (the sentinel app's identity) also holding Incident.Approve: never its own approver
    token = sim.client.operator_token(app="sentinel", roles=[READ, APPROVE], lifetime_s=120)
    await asyncio.to_thread(submitter.get, f"/.auth/login/dev?token={token}")
    page = (await asyncio.to_thread(submitter.get, f"/api/console/incidents/{incident_id}"))[2]
    assert "You submitted this incident" in page and "/approve" not in page and "/reject" in page


async def test_decisions_need_this_sessions_csrf_token_from_this_origin(host, storage, sim):
    incident_id = submit(host, sim, GLASS)
    assert (await finished(host, sim, incident_id))["state"] == "held"
    lead = await asyncio.to_thread(browser, host, sim, LEAD, READ, APPROVE)
    path = f"/api/console/incidents/{incident_id}"
    page = (await asyncio.to_thread(lead.get, path))[2]
    token = lead.token(page)
    attempts = [({}, {}), ({"csrf": "x" * 43}, {}), ({"csrf": token}, {"Origin": "https://evil.example"}),
                ({"csrf": token}, {"Sec-Fetch-Site": "cross-site"})]
    for fields, headers in attempts:
        status, _, body = await asyncio.to_thread(lead.post, f"{path}/approve", fields, headers)
        assert status == 403, (fields, headers)
    other = await asyncio.to_thread(browser, host, sim, LEAD2, READ, APPROVE)  # its own cookie: the token is not its
    assert (await asyncio.to_thread(other.post, f"{path}/approve", {"csrf": token}))[0] == 403
    reader = sim.client.operator_token(READER, [READ])
    assert api(host.url, "GET", f"incidents/{incident_id}", token=reader)[1]["approvals"] == []
    status, headers, _ = await asyncio.to_thread(lead.post, f"{path}/approve", {"csrf": token},
                                                 {"Origin": host.url, "Sec-Fetch-Site": "same-origin"})
    assert status == 303 and headers["Location"] == f"{path}?msg=approval-recorded"
    view = api(host.url, "GET", f"incidents/{incident_id}", token=reader)[1]
    assert [a["upn"] for a in view["approvals"]] == [LEAD] and view["state"] == "held"


async def test_a_held_incident_is_mailed_once_with_its_console_link(host, storage, sim):
    incident_id = submit(host, sim, GLASS)
    assert (await finished(host, sim, incident_id))["state"] == "held"
    lead = sim.client.operator_token(LEAD, [APPROVE])
    assert api(host.url, "POST", f"incidents/{incident_id}/approve", token=lead)[0] == 202  # 1 of 2: still held
    submit(host, sim, GLASS, alert_ids=["second-alert"])  # attaches: no new event
    mails = [m for m in sim.client.state(users=False)["outbox"] if "HELD for approval" in (m["subject"] or "")]
    assert len(mails) == 1 and incident_id in mails[0]["subject"]
    text = mails[0]["body"]["content"]
    assert f"Console: {host.url}/api/console/incidents/{incident_id}" in text and "protected: yes" in text
    # the link opens that incident's page for a signed-in reader
    reader = await asyncio.to_thread(browser, host, sim, READER, READ)
    status, _, page = await asyncio.to_thread(reader.get, text.split("Console: ", 1)[1].split()[0])
    assert status == 200 and incident_id in page


async def test_undo_reverses_a_false_positive_through_the_worker(host, storage, sim, monkeypatch, capsys):
    incident_id = submit(host, sim, ADELE)
    view = await finished(host, sim, incident_id)
    assert view["state"] == "succeeded", view
    before = sim.client.user_state(ADELE)
    mfa_group = tenant_settings(SEED)["MFA_GROUP_ID"]
    assert mfa_group in before["groups"] and not before["mailbox"]["ForwardingSmtpAddress"]
    disabled = [r["id"] for r in before["rules"] if not r["isEnabled"] and not r["system"]]
    lead = sim.client.operator_token(LEAD, [READ, APPROVE])
    offer = api(host.url, "GET", f"incidents/{incident_id}/undo", token=lead)[1]
    assert offer["possible"] and offer["forwarding"] == [FORWARD]
    assert any("password" in line for line in offer["not_undone"])
    submitter = sim.client.operator_token(app="sentinel", roles=[APPROVE])
    assert api(host.url, "POST", f"incidents/{incident_id}/undo", token=submitter, body={})[0] == 403
    status, body = api(host.url, "POST", f"incidents/{incident_id}/undo", token=lead,
                       body={"confirm_forwarding": ["attacker@evil.example"]})
    assert status == 400, body
    # `responder undo` as the signed-in lead: it shows the plan and confirms the one address it was told to
    monkeypatch.setenv("RESPONDER_API_URL", host.url)
    monkeypatch.setenv("RESPONDER_TOKEN", lead)
    code = await asyncio.to_thread(cli_main, ["undo", incident_id, "--yes", "--confirm-forwarding", FORWARD])
    out = capsys.readouterr().out
    assert code == 0 and f"{incident_id}: queued" in out and "enable inbox rule" in out and "password reset" in out

    async def undone():
        status, view = await asyncio.to_thread(api, host.url, "GET", f"incidents/{incident_id}", token=lead)
        return view if view.get("undo_state") in ("done", "partial") else None

    view = await wait_for(undone)
    assert view["undo_state"] == "done", view.get("undo")
    assert {u["name"] for u in view["undo"]} >= {"undo-forwarding", "undo-mfa-group", "undo-risk"}
    assert all(u["state"] == "succeeded" for u in view["undo"])
    after = sim.client.user_state(ADELE)
    assert after["mailbox"]["ForwardingSmtpAddress"] == FORWARD
    assert mfa_group not in after["groups"] and after["risk"]["riskState"] == "dismissed"
    assert all(r["isEnabled"] for r in after["rules"] if r["id"] in disabled)
    assert after["password_changes"] == 1  # the password is not undone
    assert api(host.url, "POST", f"incidents/{incident_id}/undo", token=lead, body={})[0] == 409


async def test_responder_console_url_prints_a_link_that_signs_that_principal_in(host, storage, sim, monkeypatch, capsys):
    import localdev.stack

    monkeypatch.setattr(localdev.stack, "read_state", lambda: {"host_url": host.url, "simulator_url": sim.url})
    code = await asyncio.to_thread(cli_main, ["console-url", "--as", LEAD, "--role", READ, "--role", APPROVE])
    url = capsys.readouterr().out.strip()
    assert code == 0 and url.startswith(f"{host.url}/.auth/login/dev?token=")
    client = ConsoleClient(host.url)
    status, _, page = await asyncio.to_thread(client.get, url)
    assert status == 200 and f"Signed in as <strong>{LEAD}</strong>" in page
    assert localdev_cli.CONSOLE_LOGIN_LIFETIME_S <= 300
    assert await asyncio.to_thread(cli_main, ["console-url", "--as", LEAD, "--role", "Incident.Everything"]) == 2
    monkeypatch.setattr(localdev.stack, "read_state", lambda: None)
    assert await asyncio.to_thread(cli_main, ["console-url", "--as", LEAD, "--role", READ]) == 2
