"""The bad-input corpus (tests/fixtures/bad/, described by its cases.json): the bodies every
entry point is fed by tests/test_bad_inputs.py and the property tests."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localdev.restamp import restamp
from localdev.stack import SEED_FILE

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bad"
SPEC = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
CANARY_ID = SPEC["canary"]["user_id"]
CANARY_UPN = SPEC["canary"]["user_principal_name"]
GOOD_ID = SPEC["controls"]["user_id"]
GOOD_UPN = SPEC["controls"]["user_principal_name"]
SEED = json.loads(SEED_FILE.read_text())


def _generate(spec: dict[str, Any]) -> bytes:
    kind, size = spec["kind"], spec.get("bytes", 0)
    if kind == "binary":
        return ((b"\x89PNG\r\n\x1a\n" + bytes(range(256))) * (size // 264 + 1))[:size]
    if kind == "padded-request":
        head = {"schema": "breach-responder/incident-request", "version": 1, "user_principal_name": CANARY_UPN, "reason": ""}
        overhead = len(json.dumps(head))
        head["reason"] = "A" * max(0, size - overhead)
        return json.dumps(head).encode("utf-8")
    if kind == "padded-defender-info":
        record = {"time": "2026-07-18T14:04:13Z", "tenantId": SEED["tenant"]["id"], "operationName": "Publish",
                  "category": "AdvancedHunting-AlertInfo",
                  "properties": {"Timestamp": "2026-07-17T10:07:37Z", "AlertId": "dp0000000000000000000000000000000000000001",
                                 "Severity": "High", "Title": "T" * spec["title_chars"]}}
        return json.dumps({"records": [record]}).encode("utf-8")
    raise ValueError(f"unknown generate kind {kind!r}")


def case_body(case: dict[str, Any]) -> bytes:
    """The bytes of one case: its file, or generated from its spec (1 MB and binary bodies)."""
    if "file" in case:
        return (CORPUS / case["file"]).read_bytes()
    return _generate(case["generate"])


def cases_for(entry: str) -> list[dict[str, Any]]:
    """The cases that apply to one entry point (``queue``, ``http``, ``eventhub-entra``, ``cli``...)."""
    return [c for c in SPEC["cases"] if entry in c]


def all_bad_bodies() -> list[tuple[str, bytes]]:
    """Every bad body in the corpus (cases, robustness cases and step tasks), by name."""
    return [(c["name"], case_body(c)) for c in SPEC["cases"] + SPEC["robustness"] + SPEC["step_tasks"]]


def control(name: str) -> bytes:
    """A good body next to the bad ones, its times moved to now: intake refuses a signal older than
    LOOKBACK_DAYS, and the captures these are made from are months old."""
    return restamp((CORPUS / SPEC["controls"][name]).read_bytes())


def case_ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]
