"""The simulator's throttling profile (localdev/simulator/limits.py): Microsoft's quotas per service and
scope, their costs, their 429s (with and without Retry-After), overrides and the ``none`` profile."""
from __future__ import annotations

import concurrent.futures
import time

import pytest

from localdev.simulator.client import EXO_RESOURCE
from localdev.simulator.limits import Limits, LimitsConfigError, identity_cost, parse_overrides

ADELE = "adele.vance@contoso.onmicrosoft.com"
MEGAN = "megan.bowen@contoso.onmicrosoft.com"
GOOD_PASSWORD = "Tr0ub4dor&3-horse-Battery"
TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"
APP_ID = "4cdc8f8d-68f6-5b2e-ade5-cb72e81a3ea8"  # the seed's managed identity


@pytest.fixture
def gtoken(sim):
    return sim.get_token()


def risky(sim, token):
    return sim.client.raw("GET", "/v1.0/identityProtection/riskyUsers", token=token)


# ---------------------------------------------------------------------- costs (pure)

@pytest.mark.parametrize("method, path, query, expected", [
    ("GET", "users/x", {"$select": "id"}, (1, 0)),            # not listed: 1, $select -1, never below 1
    ("GET", "users", {}, (2, 0)),                              # GET users: 2
    ("GET", "users", {"$select": "id"}, (1, 0)),
    ("GET", "users", {"$top": "10"}, (1, 0)),                  # $top < 20: -1
    ("GET", "users", {"$expand": "manager"}, (3, 0)),          # $expand: +1
    ("POST", "users/x/checkMemberGroups", {}, (4, 0)),         # a read that is a POST: no write
    ("GET", "users/x/transitiveMemberOf/microsoft.graph.directoryRole", {}, (2, 0)),
    ("GET", "groups/g/transitiveMembers", {}, (5, 0)),
    ("GET", "groups/g/members", {}, (3, 0)),
    ("GET", "oauth2PermissionGrants", {}, (2, 0)),
    ("PATCH", "users/x", {}, (1, 1)),                          # writes: 1 RU and 1 write
    ("POST", "users/x/revokeSignInSessions", {}, (1, 1)),
    ("DELETE", "oauth2PermissionGrants/g", {}, (1, 1)),
])
def test_identity_requests_cost_resource_units_and_writes_as_the_docs_cost_table_says(method, path, query, expected):
    assert identity_cost(method, path.split("/"), query) == expected


def test_each_service_draws_on_its_own_quotas_and_scopes():
    limits = Limits({"profile": "published"}, user_count=lambda: 10)

    def names(method, path, query=None):
        return {(c.quota.name, c.key) for c in limits.classify_graph(method, path.split("/"), query or {})}

    assert names("GET", "identityProtection/riskyUsers") == {("graph", "app"), ("idp", "tenant")}
    assert names("GET", "identity/conditionalAccess/policies") == {("graph", "app"), ("idp", "tenant")}
    assert names("GET", "auditLogs/directoryAudits") == {("graph", "app"), ("reports", "app_tenant")}
    assert names("GET", "security/alerts_v2") == {("graph", "app"), ("security", "app_tenant")}
    assert names("POST", "users/A@X.com/sendMail") == {("graph", "app"), ("outlook", "a@x.com"),
                                                       ("outlook-concurrency", "a@x.com")}
    assert names("PATCH", "users/x") == {("graph", "app"), ("dir-ru", "app_tenant"), ("dir-write", "app_tenant"),
                                         ("dir-write-tenant", "tenant")}
    assert names("GET", "users/x/authentication/methods") == {("graph", "app"), ("dir-ru", "app_tenant")}
    reports = Limits({"profile": "published", "auth_methods_bucket": "reports"})
    assert {c.quota.name for c in reports.classify_graph("GET", ["users", "x", "authentication", "methods"], {})} == {
        "graph", "reports"}
    assert {c.quota.name for c in limits.classify_exo("Get-Mailbox")} == {"exo", "exo-concurrency"}
    assert Limits({"profile": "none"}).classify_graph("GET", ["identityProtection", "riskyUsers"], {}) == []


@pytest.mark.parametrize("users, ru", [(10, 3500), (49, 3500), (50, 5000), (500, 5000), (501, 8000), (1200, 8000)])
def test_the_resource_unit_quota_follows_the_tenants_size(users, ru):
    count = {"n": users}
    limits = Limits({"profile": "published"}, user_count=lambda: count["n"])
    assert limits.quota("dir-ru").limit == ru
    assert Limits({"profile": "published", "overrides": {"dir-ru": {"limit": 100}}},
                  user_count=lambda: users).quota("dir-ru").limit == 100


def test_overrides_are_checked_and_parsed():
    assert parse_overrides(["dir-write-tenant=1800", "idp.window_s=2"]) == {
        "dir-write-tenant": {"limit": 1800.0}, "idp": {"window_s": 2.0}}
    with pytest.raises(LimitsConfigError):
        Limits({"profile": "published", "overrides": {"no-such-quota": {"limit": 1}}})
    with pytest.raises(LimitsConfigError):
        Limits({"profile": "published", "overrides": {"idp": {"burst": 1}}})
    with pytest.raises(LimitsConfigError):
        Limits({"profile": "published", "overrides": {"idp": {"limit": 0}}})
    with pytest.raises(LimitsConfigError):
        Limits({"profile": "mine"})


# ---------------------------------------------------------------------- against the simulator

def test_identity_protection_allows_one_request_per_second_per_tenant_and_throttles_without_retry_after(sim, gtoken):
    sim.client.set_limits({"profile": "published"})
    first = risky(sim, gtoken)
    second = risky(sim, gtoken)
    assert first[0] == 200
    status, headers, body = second
    assert status == 429
    assert "Retry-After" not in headers and "retry-after" not in {k.lower() for k in headers}
    assert body["error"]["code"] == "TooManyRequests"
    # any app, any Identity Protection resource: the same tenant bucket
    assert sim.client.raw("GET", "/v1.0/identityProtection/riskDetections", token=gtoken)[0] == 429
    time.sleep(1.05)
    assert risky(sim, gtoken)[0] == 200
    logged = sim.client.requests(service="graph", status=429)
    assert logged and logged[0]["fault"] == "limit:429:idp"
    assert sim.client.limits()["counters"]["idp"]["throttled"] == 2


def test_a_throttled_directory_write_does_not_land_and_names_its_scope(sim, gtoken):
    # 18,000 writes per 300 s per tenant, given this app's share as an override: 2 per second here.
    sim.client.set_limits({"profile": "published", "overrides": {"dir-write-tenant": {"limit": 4, "window_s": 2}}})
    before = sim.client.user_state(ADELE)["password_changes"]
    answers = [sim.client.raw("PATCH", f"/v1.0/users/{ADELE}", token=gtoken,
                              body={"passwordProfile": {"password": GOOD_PASSWORD}}) for _ in range(3)]
    assert [a[0] for a in answers[:2]] == [204, 204]
    status, headers, body = answers[2]
    assert status == 429 and body["error"]["code"] == "TooManyRequests"
    assert 0 < float(headers["Retry-After"]) <= 0.5
    # throttling-limits.md: <Scope>/<Limit>/<ApplicationId>/<TenantId>
    assert headers["x-ms-throttle-scope"] == f"Tenant/Write/{APP_ID}/{TENANT}"
    assert headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    assert sim.client.user_state(ADELE)["password_changes"] == before + 2  # the 429 did no work
    # reads do not spend write quota
    assert sim.client.raw("GET", f"/v1.0/users/{ADELE}", token=gtoken, query={"$select": "id"})[0] == 200
    counters = sim.client.limits()["counters"]
    assert counters["dir-write-tenant"]["cost"] == 2 and counters["dir-write-tenant"]["throttled"] == 1
    assert counters["dir-write"]["cost"] == 2


def test_resource_units_are_spent_by_cost_not_by_request(sim, gtoken):
    sim.client.set_limits({"profile": "published", "overrides": {"dir-ru": {"limit": 40, "window_s": 10}}})
    # 4 RU per second, 4 banked: one checkMemberGroups (4 RU) spends them all
    status, _, _ = sim.client.raw("POST", f"/v1.0/users/{ADELE}/checkMemberGroups", token=gtoken,
                                  body={"groupIds": ["2f4a9d1e-0000-4000-8000-000000000001"]})
    assert status == 200
    status, headers, _ = sim.client.raw("GET", f"/v1.0/users/{ADELE}", token=gtoken, query={"$select": "id"})
    assert status == 429 and headers["x-ms-throttle-scope"].startswith("Tenant_Application/Read/")
    assert headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert sim.client.limits()["counters"]["dir-ru"]["cost"] == 4


def test_directory_audits_and_security_have_their_own_per_app_quotas(sim, gtoken):
    sim.client.set_limits({"profile": "published"})
    audits = [sim.client.raw("GET", "/v1.0/auditLogs/directoryAudits", token=gtoken)[0] for _ in range(2)]
    assert audits == [200, 429]  # 5 per 10 s: one banked, the next one 2 s later
    # the directory and security quotas are untouched by the audit log's
    assert sim.client.raw("GET", f"/v1.0/users/{ADELE}", token=gtoken, query={"$select": "id"})[0] == 200
    security = [sim.client.raw("GET", "/v1.0/security/alerts_v2", token=gtoken)[0] for _ in range(4)]
    assert security[:2] == [200, 200] and 429 in security  # 150 per minute: 2.5 banked
    counters = sim.client.limits()["counters"]
    assert counters["reports"]["throttled"] == 1 and counters["security"]["throttled"] >= 1


def _concurrently(sim, token, paths, n):
    def one(path):
        return sim.client.raw("GET", path, token=token)[0]
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, paths))


@pytest.mark.parametrize("scope", ["app_mailbox", "app"])
def test_outlook_allows_four_concurrent_requests_per_mailbox_or_per_app(sim, gtoken, scope):
    sim.client.set_limits({"profile": "published", "outlook_concurrency_scope": scope})
    sim.client.set_faults({"graph": {"latency_ms": 400}})
    rules = "/v1.0/users/{}/mailFolders/inbox/messageRules"
    statuses = _concurrently(sim, gtoken, [rules.format(ADELE)] * 5 + [rules.format(MEGAN)], 6)
    if scope == "app_mailbox":
        # live page: 4 concurrent per app and mailbox; another mailbox is unaffected
        assert sorted(statuses[:5]) == [200, 200, 200, 200, 429] and statuses[5] == 200
    else:
        # older text: 4 concurrent per app, "regardless of whether the requests all access the same mailbox"
        assert sorted(statuses) == [200, 200, 200, 200, 429, 429]
    assert sim.client.limits()["counters"]["outlook-concurrency"]["peak_in_flight"] == 4


def test_exchange_admin_api_concurrency_is_capped_with_retry_after(sim):
    xtoken = sim.get_token(EXO_RESOURCE)
    sim.client.set_limits({"profile": "published", "overrides": {"exo-concurrency": {"limit": 2}}})
    sim.client.set_faults({"exo": {"latency_ms": 400}})

    def one(_):
        return sim.client.raw("POST", f"/adminapi/beta/{TENANT}/InvokeCommand", token=xtoken,
                              headers={"X-AnchorMailbox": f"UPN:{ADELE}"},
                              body={"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"Identity": ADELE}}})
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(one, range(3)))
    throttled = [a for a in answers if a[0] == 429]
    assert len(throttled) == 1 and sum(a[0] == 200 for a in answers) == 2
    assert float(throttled[0][1]["Retry-After"]) > 0


def test_each_batch_item_is_charged_on_its_own_quota(sim, gtoken):
    sim.client.set_limits({"profile": "published"})
    status, _, body = sim.client.raw("POST", "/v1.0/$batch", token=gtoken, body={"requests": [
        {"id": "1", "method": "GET", "url": "/identityProtection/riskyUsers"},
        {"id": "2", "method": "GET", "url": "/identityProtection/riskDetections"},
        {"id": "3", "method": "GET", "url": f"/users/{ADELE}?$select=id"}]})
    assert status == 200
    items = {r["id"]: r for r in body["responses"]}
    assert items["1"]["status"] == 200 and items["3"]["status"] == 200
    assert items["2"]["status"] == 429 and "Retry-After" not in items["2"]["headers"]


def test_the_none_profile_throttles_nothing(sim, gtoken):
    sim.client.set_limits({"profile": "published"})
    sim.client.set_limits({"profile": "none"})
    assert [risky(sim, gtoken)[0] for _ in range(5)] == [200] * 5
    assert sim.client.limits()["quotas"] == {}
