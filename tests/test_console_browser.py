"""The console in a real browser (Playwright driving Debian's Chromium, tests/plugins/browser.py) against
the local stack: the list shows an injected incident (appearing by itself), its detail shows every step,
a held break-glass incident is approved by two approvers through the page, and a reader sees no approve
button. Screenshots land in .artifacts/console/ (docs/console.png is one of them, committed)."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from playwright.sync_api import Browser, Page, expect

from localdev.azurite import free_port
from localdev.cli import console_login_url
from localdev.host.launcher import start_host
from localdev.stack import REPO, SEED_FILE, tenant_settings
from shared.model import IncidentRequest
from tests.helpers.operator import APPROVE, READ, SUBMIT, api, console_host_env

SEED = json.loads(SEED_FILE.read_text())
ADELE = "adele.vance@contoso.onmicrosoft.com"
GLASS = "breakglass@contoso.onmicrosoft.com"
LEAD, LEAD2, READER = "soc.lead@contoso.onmicrosoft.com", "soc.lead2@contoso.onmicrosoft.com", "soc.analyst@contoso.onmicrosoft.com"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def stack(azurite, simulator, tmp_path_factory):
    port = free_port()
    env = console_host_env(azurite.connection_string, simulator, tenant_settings(SEED), port)
    simulator.client.reset()
    empty_storage(azurite.connection_string)
    proc = start_host(str(REPO), env=env, port=port, log_path=str(tmp_path_factory.mktemp("host-browser") / "host.log"))
    yield {"host": proc, "sim": simulator, "storage": azurite.connection_string, "incidents": {}}
    proc.stop()


def empty_storage(connection: str) -> None:
    """The app's tables and queues emptied (other modules share this session's Azurite)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.adapters.ledger import TABLES

    with TableServiceClient.from_connection_string(connection) as tables:
        for name in TABLES:
            client = tables.get_table_client(name)
            try:
                for entity in client.list_entities(select=["PartitionKey", "RowKey"]):
                    client.delete_entity(entity["PartitionKey"], entity["RowKey"])
            except ResourceNotFoundError:
                pass
    with QueueServiceClient.from_connection_string(connection) as queues:
        for queue in queues.list_queues():
            queues.get_queue_client(queue.name).clear_messages()


def signed_in(browser: Browser, stack: dict[str, Any], upn: str, *roles: str, path: str = "/api/console") -> Page:
    """A fresh browser context (its own cookies) signed in through `responder console-url`'s link."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(console_login_url(stack["host"].url, stack["sim"].url, upn, list(roles), path))
    return page


def view(stack: dict[str, Any], incident_id: str) -> dict[str, Any]:
    token = stack["sim"].client.operator_token(READER, [READ])
    return api(stack["host"].url, "GET", f"incidents/{incident_id}", token=token)[1]


def wait_state(stack: dict[str, Any], incident_id: str, states: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = view(stack, incident_id)
        if current.get("state") in states:
            return current
        time.sleep(0.25)
    raise AssertionError(f"{incident_id} never reached {states}: {current.get('state')}")


def inject(stack: dict[str, Any], upn: str) -> None:
    """What `responder inject` does: an incident request on the alerts queue."""
    queue = QueueClient.from_connection_string(stack["storage"], "alerts", message_encode_policy=TextBase64EncodePolicy())
    with queue:
        queue.send_message(IncidentRequest(user_id=None, user_principal_name=upn, reason="browser test: injected").to_json())


def adele_incident(stack: dict[str, Any], page: Page | None = None) -> str:
    if "adele" not in stack["incidents"]:
        inject(stack, ADELE)
        token = stack["sim"].client.operator_token(READER, [READ])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            mine = [v for v in api(stack["host"].url, "GET", "incidents", token=token)[1]["incidents"] if v.get("user") == ADELE]
            if mine:
                stack["incidents"]["adele"] = mine[0]["incident_id"]
                break
            time.sleep(0.25)
    return stack["incidents"]["adele"]


def test_the_list_shows_an_injected_incident_without_a_reload(chromium, stack, artifacts):
    page = signed_in(chromium, stack, READER, READ, path="/api/console?refresh=2")
    expect(page.get_by_role("heading", name="Incidents", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=ADELE)).to_have_count(0)
    incident_id = adele_incident(stack)
    # The page refreshes itself (static/console.js): the row appears without a reload.
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=ADELE))
    expect(row).to_be_visible()
    expect(row).to_contain_text(incident_id)
    for column in ("State", "User", "Source", "Risk", "Age", "Why held / why stopped"):
        expect(page.get_by_role("columnheader", name=column)).to_be_visible()
    expect(page.get_by_role("img", name="Secure Score percentage over the last 90 days", exact=False)).to_be_visible()
    page.screenshot(path=str(artifacts / "list.png"), full_page=True)
    page.context.close()


def test_the_detail_shows_every_step(chromium, stack, artifacts):
    incident_id = adele_incident(stack)
    final = wait_state(stack, incident_id, ("succeeded", "failed"))
    assert final["state"] == "succeeded", final
    page = signed_in(chromium, stack, LEAD, READ, APPROVE)
    # keyboard only: tab to the incident's link and follow it
    link = page.get_by_role("link", name=ADELE)
    link.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{stack['host'].url}/api/console/incidents/{incident_id}")
    timeline = page.get_by_role("table", name="Timeline: every step of the playbook")
    steps = [s["name"] for s in final["steps"]]
    assert "recovery-pass" in steps and len(steps) == 10
    expect(timeline.locator("tbody tr")).to_have_count(len(steps))
    for name in steps:
        expect(timeline.get_by_role("rowheader", name=name, exact=True)).to_be_visible()
    expect(timeline).not_to_contain_text("pending")
    for heading in ("What changed", "Before (snapshot)", "What opened it", "Approvals", "Manual actions required"):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    expect(page.get_by_role("region", name="What changed")).to_contain_text("Removed methods")
    expect(page.get_by_role("region", name="What changed")).to_contain_text("megan.bowen@contoso.onmicrosoft.com")
    expect(page.get_by_role("button", name="Undo (false positive)")).to_be_visible()
    page.screenshot(path=str(artifacts / "detail.png"), full_page=True)
    page.context.close()


def test_a_held_break_glass_incident_is_approved_by_two_approvers_through_the_page(chromium, stack, artifacts):
    token = stack["sim"].client.operator_token(app="sentinel", roles=[SUBMIT])
    status, body = api(stack["host"].url, "POST", "incidents", token=token, body={"version": 1, "user_principal_name": GLASS})
    assert status == 202, body
    incident_id = body["incident_id"]
    assert wait_state(stack, incident_id, ("held",))["approvals_required"] == 2
    stack["incidents"]["glass"] = incident_id
    path = f"/api/console/incidents/{incident_id}"
    first = signed_in(chromium, stack, LEAD, READ, APPROVE, path=path)
    expect(first.get_by_role("heading", name="Why held", exact=False)).to_have_count(0)
    first.get_by_role("button", name="Approve", exact=True).click()
    expect(first.get_by_role("status").filter(has_text="Your approval is recorded")).to_be_visible()
    expect(first.get_by_role("button", name="Approve", exact=True)).to_have_count(0)  # not twice by the same person
    assert [a["upn"] for a in view(stack, incident_id)["approvals"]] == [LEAD]
    first.screenshot(path=str(artifacts / "approval-1-of-2.png"), full_page=True)
    second = signed_in(chromium, stack, LEAD2, READ, APPROVE, path=path)
    second.get_by_role("button", name="Approve", exact=True).click()
    expect(second.get_by_role("status").filter(has_text="Approved: the incident is released")).to_be_visible()
    released = view(stack, incident_id)
    assert [a["upn"] for a in released["approvals"]] == [LEAD, LEAD2] and released["state"] != "held"
    second.screenshot(path=str(artifacts / "approval-2-of-2.png"), full_page=True)
    first.context.close()
    second.context.close()


def test_a_reader_sees_no_approve_button(chromium, stack, artifacts):
    token = stack["sim"].client.operator_token(app="sentinel", roles=[SUBMIT])
    # a second break-glass alert after the first was released would attach: hold the admin instead
    status, body = api(stack["host"].url, "POST", "incidents", token=token,
                       body={"version": 1, "user_principal_name": "admin@contoso.onmicrosoft.com"})
    assert status == 202, body
    incident_id = body["incident_id"]
    wait_state(stack, incident_id, ("held",))
    page = signed_in(chromium, stack, READER, READ, path=f"/api/console/incidents/{incident_id}")
    expect(page.get_by_role("heading", name="admin@contoso.onmicrosoft.com")).to_be_visible()
    expect(page.get_by_role("button")).to_have_count(0)
    expect(page.locator("form[method=post]")).to_have_count(0)
    page.screenshot(path=str(artifacts / "reader.png"), full_page=True)
    page.context.close()
