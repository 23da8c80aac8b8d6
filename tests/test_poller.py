"""The polling reconciler against the simulator's Graph and real Azurite tables:
pages through nextLink, dedupes with the streams, keeps a watermark, never doubles."""
from __future__ import annotations

import json

import pytest

from localdev.stack import SEED_FILE, tenant_settings
from shared.adapters.credentials import build_credential
from shared.adapters.graph import GraphAdapter
from shared.adapters.ledger import Ledger
from shared.deps import Deps
from shared.poller import FEEDS, build_filter, poll_once
from shared.settings import Settings
from tests.helpers.fakes import FakeQueues

SEED = json.loads(SEED_FILE.read_text())


@pytest.fixture
async def world(sim_identity_env, fresh_storage):
    sim = sim_identity_env
    tables, _ = fresh_storage
    settings = Settings.from_env({"RESPONDER_MODE": "auto", "GRAPH_BASE_URL": sim.url, "STORM_THRESHOLD": "500",
                                  **tenant_settings(SEED)})
    credential = build_credential()
    graph = GraphAdapter(credential, sim.url, timeout_s=10)
    ledger = Ledger(tables)
    await ledger.ensure()
    deps = Deps(settings=settings, ledger=ledger, queues=FakeQueues(), graph=graph)
    try:
        yield deps, tables, sim
    finally:
        await graph.close()
        await credential.close()


async def test_first_poll_opens_one_incident_per_compromised_user_and_a_rerun_adds_none(world):
    deps, tables, sim = world
    first = await poll_once(deps)
    incidents = await deps.ledger.list_incidents()
    users = {i["user_key"] for i in incidents}
    adele = next(u["id"] for u in SEED["users"] if u["userPrincipalName"].startswith("adele"))
    assert adele in users and len(incidents) == len(users)
    assert first["riskyUsers"]["new_incidents"] >= 1
    second = await poll_once(deps)
    assert second["riskyUsers"]["new_incidents"] == 0 and second["alerts_v2"]["new_incidents"] == 0
    assert len(await deps.ledger.list_incidents()) == len(incidents)
    mark = await tables.get_table_client("watermarks").get_entity("poll", "riskyUsers")
    assert mark["since"] == second["riskyUsers"]["watermark"]


async def test_poll_pages_through_next_links(world):
    deps, tables, sim = world
    added = sim.client.add_users(45, prefix="risky", risky=True)
    summary = await poll_once(deps)
    assert summary["riskyUsers"]["pages"] >= 3  # the simulator pages riskyUsers 20 at a time
    keys = {i["user_key"] for i in await deps.ledger.list_incidents()}
    assert {u["id"] for u in added} <= keys


def test_filters_are_built_from_our_own_timestamps_only():
    from datetime import datetime, timezone

    since = datetime(2024, 5, 1, 10, 0, tzinfo=timezone.utc)
    assert build_filter(FEEDS["alerts_v2"], since) == "lastUpdateDateTime gt 2024-05-01T10:00:00Z"
    assert build_filter(FEEDS["riskyUsers"], since).endswith("and riskLastUpdatedDateTime gt 2024-05-01T10:00:00Z")


def test_a_window_too_large_for_one_run_is_halved_in_whole_seconds_never_below_one():
    from datetime import datetime, timezone

    from shared.poller import halve

    since = datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)
    assert halve(since, since.replace(hour=12)) == datetime(2024, 5, 1, 11, 0, 0, tzinfo=timezone.utc)
    assert halve(since, since.replace(second=1)) == datetime(2024, 5, 1, 10, 0, 1, tzinfo=timezone.utc)
    assert build_filter(FEEDS["alerts_v2"], since, since.replace(hour=11)) == (
        "lastUpdateDateTime gt 2024-05-01T10:00:00Z and lastUpdateDateTime le 2024-05-01T11:00:00Z")


async def test_a_storm_larger_than_one_run_is_read_in_halved_windows_until_every_user_has_an_incident(world, monkeypatch):
    """With room for two pages a run, 45 risky users (three pages) never fit one run: the window
    is halved until it does, the watermark only ever moves over windows read whole, and in the
    end every user has an incident and the watermark has passed them all."""
    from datetime import timedelta

    import shared.poller as poller
    from shared.timestamps import iso_seconds, parse_timestamp

    deps, tables, sim = world
    monkeypatch.setattr(poller, "MAX_PAGES", 2)
    start = parse_timestamp(iso_seconds(deps.clock() - timedelta(seconds=60)))
    await deps.ledger.set_watermark("riskyUsers", iso_seconds(start))
    added = sim.client.add_users(45, prefix="burst", risky=True)
    marks, halvings = [start], 0
    for _ in range(40):
        summary = (await poll_once(deps))["riskyUsers"]
        assert "error" not in summary
        mark = parse_timestamp(summary["watermark"])
        assert mark >= marks[-1]  # never backwards
        if "next_window_until" in summary:
            halvings += 1
            assert summary["pages"] == 2 and mark == marks[-1]  # an unfinished window moves nothing
        marks.append(mark)
        keys = {i["user_key"] for i in await deps.ledger.list_incidents()}
        if {u["id"] for u in added} <= keys and "next_window_until" not in summary and summary["pages"] <= 1:
            break
    assert halvings >= 1
    assert {u["id"] for u in added} <= {i["user_key"] for i in await deps.ledger.list_incidents()}
    assert marks[-1] > start
