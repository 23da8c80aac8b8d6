"""Fidelity: the simulator answers each documented request the way Microsoft documents it.

tests/fixtures/fidelity/cases.json holds the documented request/response pairs (Graph docs, at
the commits named in ../shared/reference/graph-calls) and captured payloads (the samples). Each
request is replayed against the simulator and the answer is compared shape by shape with the
documented one: status, keys, JSON types and nesting, never values.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from localdev.simulator.client import EXO_RESOURCE, GRAPH_RESOURCE

CASES = json.loads((Path(__file__).parent / "fixtures" / "fidelity" / "cases.json").read_text())["cases"]
TENANT = "eb2ddb24-b592-50c8-a5d0-a38a631ee688"
SYSTEM_ANCHOR = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@" + TENANT


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def shape_diff(documented: Any, actual: Any, *, exact: bool, open_keys: frozenset = frozenset(),
               path: str = "$") -> list[str]:
    """Where ``actual`` does not have the documented shape (empty: same shape). A null on either
    side matches any type (Graph properties are nullable); in ``exact`` mode objects must have
    the same keys; array items are compared with the documented item of the same @odata.type
    (else the first documented item)."""
    if documented is None or actual is None:
        return []
    dtype, atype = json_type(documented), json_type(actual)
    if dtype != atype:
        return [f"{path}: documented {dtype}, simulator {atype}"]
    if dtype == "object":
        diffs = []
        for key, value in documented.items():
            if key not in actual:
                diffs.append(f"{path}.{key}: missing")
            elif key in open_keys:
                if json_type(actual[key]) not in ("object", "null"):
                    diffs.append(f"{path}.{key}: documented object, simulator {json_type(actual[key])}")
            else:
                diffs += shape_diff(value, actual[key], exact=exact, open_keys=open_keys, path=f"{path}.{key}")
        if exact:
            diffs += [f"{path}.{key}: not documented" for key in actual if key not in documented]
        return diffs
    if dtype == "array" and documented and actual:
        diffs = []
        for i, item in enumerate(actual):
            model = documented[0]
            if isinstance(item, dict):
                model = next((d for d in documented if isinstance(d, dict) and d.get("@odata.type") == item.get(
                    "@odata.type") and d.get("id", "") == item.get("id", d.get("id", ""))), None) or next(
                    (d for d in documented if isinstance(d, dict) and d.get("@odata.type") == item.get("@odata.type")),
                    documented[0])
            if isinstance(model, dict) and isinstance(item, dict) and "@odata.type" in model and \
                    model.get("@odata.type") != item.get("@odata.type"):
                continue  # an evidence/method type the documentation does not show
            diffs += shape_diff(model, item, exact=exact, open_keys=open_keys, path=f"{path}[{i}]")
        return diffs
    return []


def test_shape_diff_reports_missing_keys_wrong_types_and_extra_keys():
    doc = {"a": 1, "b": {"c": "x"}, "d": [{"e": True}], "n": None}
    assert shape_diff(doc, {"a": 2, "b": {"c": "y"}, "d": [{"e": False}], "n": 5}, exact=True) == []
    assert shape_diff(doc, {"a": "2", "b": {}, "d": [{"e": 1}], "n": None, "z": 0}, exact=True) == [
        "$.a: documented number, simulator string", "$.b.c: missing", "$.d[0].e: documented boolean, simulator number",
        "$.z: not documented"]
    assert shape_diff(doc, {"a": 1, "b": {"c": "x", "extra": 1}, "d": [], "n": None}, exact=False) == []


@pytest.fixture
def placeholders(sim) -> dict[str, str]:
    state = sim.client.state(user=["adele.vance@contoso.onmicrosoft.com", "megan.bowen@contoso.onmicrosoft.com",
                                   "admin@contoso.onmicrosoft.com"])
    users = state["users"]
    adele, megan, admin = (users[k] for k in ("adele.vance@contoso.onmicrosoft.com", "megan.bowen@contoso.onmicrosoft.com",
                                              "admin@contoso.onmicrosoft.com"))
    groups = {g["displayName"]: gid for gid, g in state["groups"].items()}
    rules = {r["displayName"]: r["id"] for r in adele["rules"] if not r["hidden"]}
    return {"adele": adele["userPrincipalName"], "adele_id": adele["id"], "megan": megan["userPrincipalName"],
            "megan_id": megan["id"], "admin": admin["userPrincipalName"],
            "mfa_group": groups["MFA required (Conditional Access)"], "sender": "breach-responder@contoso.onmicrosoft.com",
            "adele_rule_newsletters": rules["Newsletters"], "adele_rule_sync": rules["Sync"]}


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, replacement in names.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {fill(k, names): fill(v, names) for k, v in value.items()}
    return value


def send(sim, case_request: dict, service: str, names: dict[str, str]) -> tuple[int, Any]:
    request = fill(case_request, names)
    if service == "exo":
        token = sim.get_token(EXO_RESOURCE)
        status, _, body = sim.client.raw(
            "POST", f"/adminapi/beta/{TENANT}/InvokeCommand", token=token, headers={"X-AnchorMailbox": SYSTEM_ANCHOR},
            body={"CmdletInput": {"CmdletName": request["cmdlet"], "Parameters": request.get("parameters", {})}})
        return status, body
    token = sim.get_token(GRAPH_RESOURCE)
    status, _, body = sim.client.raw(request["method"], request["path"], body=request.get("body"), token=token,
                                     query=request.get("query"), headers=request.get("headers"))
    return status, body


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_simulator_answers_a_documented_request_in_the_documented_shape(sim, placeholders, case):
    for step in case.get("setup", []):
        if "fault" in step:
            sim.client.fault_once(**step["fault"])
        elif "sim_alert" in step:
            sim.client.add_alert(user=fill(step["sim_alert"], placeholders))
        else:
            assert send(sim, step, case["service"], placeholders)[0] < 300
    status, body = send(sim, case["request"], case["service"], placeholders)
    documented = case["documented"]
    assert status == documented["status"], (case["source"], body)
    if documented["body"] is None:
        assert body is None, f"{case['source']}: documented no body, simulator sent {body!r}"
        return
    diffs = shape_diff(documented["body"], body, exact=case["mode"] == "exact",
                       open_keys=frozenset(case.get("open", ())))
    assert not diffs, f"{case['name']} ({case['source']}):\n" + "\n".join(diffs)
