"""Recognise which alert shape a record (or a whole payload) is.

Record kinds and the IncidentRequest source they map to:

=====================  ===================  ==============================================
kind                   source               recognised by
=====================  ===================  ==============================================
manual                 manual (or http)     ``schema == "breach-responder/incident-request"``,
                                            or no ``schema`` and a ``user_id`` /
                                            ``user_principal_name`` key (snake_case: ours)
entra-risk             entra-diagnostics    streaming record (``category`` plus ``properties``
                                            / ``time`` / ``operationName``) with category
                                            ``RiskyUsers`` or ``UserRiskEvents``
entra-other            entra-diagnostics    other Entra diagnostic categories (SignInLogs,
                                            AuditLogs, RiskyServicePrincipals, ...): ignored
defender-info          defender-stream      category ``AdvancedHunting-AlertInfo``
defender-evidence      defender-stream      category ``AdvancedHunting-AlertEvidence``
defender-other         defender-stream      any other ``AdvancedHunting-*`` table: ignored
graph-alert            graph-alerts         ``@odata.type`` ``#microsoft.graph.security.alert``,
                                            or ``severity`` with alert-only keys
                                            (evidence, providerAlertId, alertWebUrl, ...)
graph-riskyuser        graph-riskyusers     ``@odata.type`` ``...riskyUser``, or riskLevel +
                                            riskState without userId / riskEventType
graph-riskdetection    graph-riskyusers     ``@odata.type`` ``...riskDetection``, or riskLevel
                                            with riskEventType / riskType / userId
=====================  ===================  ==============================================

Graph ``GET identityProtection/riskDetections`` objects are accepted as a second Identity
Protection poll shape. IncidentRequest has no source of its own for them, so they carry
``graph-riskyusers`` (the Identity Protection poll), which keeps SOURCES unchanged.

Streaming categories are compared case-insensitively. A streaming record with any other
category is rejected as an unknown category. Graph error bodies (``{"error": {...}}``) and
anything else are rejected as unrecognised.
"""
from __future__ import annotations

import json
from typing import Any

from ..model import IncidentRequest
from ..validation import excerpt
from ._common import UnknownSourceError, decode_payload, describe, is_envelope, is_page, json_type, load_items

__all__ = ["detect_source", "classify_record", "KIND_SOURCE"]

KIND_SOURCE = {
    "manual": "manual",
    "entra-risk": "entra-diagnostics",
    "entra-other": "entra-diagnostics",
    "defender-info": "defender-stream",
    "defender-evidence": "defender-stream",
    "defender-other": "defender-stream",
    "graph-alert": "graph-alerts",
    "graph-riskyuser": "graph-riskyusers",
    "graph-riskdetection": "graph-riskyusers",
}

ENTRA_RISK_CATEGORIES = {"riskyusers", "userriskevents"}
# Other categories an Entra ID diagnostic setting can send to the same hub.
ENTRA_OTHER_CATEGORIES = {
    "auditlogs", "signinlogs", "noninteractiveusersigninlogs", "serviceprincipalsigninlogs",
    "managedidentitysigninlogs", "provisioninglogs", "adfssigninlogs", "riskyserviceprincipals",
    "serviceprincipalriskevents", "enrichedoffice365auditlogs", "microsoftgraphactivitylogs",
    "remotenetworkhealthlogs", "networkaccesstrafficlogs", "networkaccessalerts",
    "b2crequestlogs", "microsoftserviceprincipalsigninlogs", "azureadgraphactivitylogs",
    "networkaccessconnectionevents", "networkaccessgenerativeaiinsights",
}
_ALERT_ONLY_KEYS = ("evidence", "providerAlertId", "alertWebUrl", "detectionSource", "serviceSource", "incidentId")
_STREAM_KEYS = ("properties", "time", "operationName")


def classify_record(record: Any) -> tuple[str | None, str]:
    """Return ``(kind, "")`` for a recognised record, ``(None, reason)`` otherwise."""
    if not isinstance(record, dict):
        return None, f"record is a JSON {json_type(record)}, not an object"
    if "schema" in record:
        if record.get("schema") == IncidentRequest.SCHEMA:
            return "manual", ""
        return None, f"unexpected schema {excerpt(record.get('schema'))}"
    if "user_id" in record or "user_principal_name" in record:
        return "manual", ""
    odata = record.get("@odata.type")
    odata = odata.lower() if isinstance(odata, str) else ""
    if "category" in record and any(k in record for k in _STREAM_KEYS) and not odata:
        category = record.get("category")
        if not isinstance(category, str) or not category.strip():
            return None, f"category must be a non-empty string, got {json_type(category)}"
        cat = category.strip().lower()
        if cat in ENTRA_RISK_CATEGORIES:
            return "entra-risk", ""
        if cat in ENTRA_OTHER_CATEGORIES:
            return "entra-other", ""
        if cat.startswith("advancedhunting-"):
            table = cat[len("advancedhunting-"):]
            return {"alertinfo": "defender-info", "alertevidence": "defender-evidence"}.get(table, "defender-other"), ""
        return None, f"unknown category {excerpt(category)}"
    if odata.endswith(".security.alert"):
        return "graph-alert", ""
    if odata.endswith(".riskyuser"):
        return "graph-riskyuser", ""
    if odata.endswith(".riskdetection"):
        return "graph-riskdetection", ""
    if odata:
        return None, f"unsupported @odata.type {excerpt(record.get('@odata.type'))}"
    if "severity" in record and any(k in record for k in _ALERT_ONLY_KEYS):
        return "graph-alert", ""
    if "riskLevel" in record:
        if any(k in record for k in ("riskEventType", "riskType", "userId")):
            return "graph-riskdetection", ""
        if "riskState" in record:
            return "graph-riskyuser", ""
    if "error" in record and isinstance(record.get("error"), dict):
        return None, "record is an API error body, not an alert"
    return None, "unrecognised record shape"


def detect_source(obj: Any) -> str:
    """Tell which source a payload (or one record) comes from.

    ``obj`` is a parsed JSON value (or the raw ``bytes`` / ``str`` payload, which is parsed
    first, JSON Lines included). Envelopes, pages and arrays are looked into: the first
    recognisable record decides. Returns one of ``entra-diagnostics``, ``defender-stream``,
    ``graph-riskyusers``, ``graph-alerts``, ``manual`` / ``http`` (a manual request that says
    ``"source": "http"``). Raises UnknownSourceError (a PayloadError / ValueError) when nothing
    in it is recognisable, including an empty envelope whose kind cannot be told.
    """
    if isinstance(obj, (bytes, bytearray, memoryview, str)):
        text = decode_payload(obj)
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            values = [item.value for item in load_items(text) if item.error is None]  # JSON Lines
        else:
            values = _flatten(obj)
    else:
        values = _flatten(obj)
    if not values and isinstance(obj, dict):
        hint = _context_hint(obj)
        if hint:
            return hint
    first_reason = ""
    for value in values:
        kind, reason = classify_record(value)
        if kind is None:
            first_reason = first_reason or reason
            continue
        if kind == "manual" and isinstance(value, dict) and value.get("source") == "http":
            return "http"
        return KIND_SOURCE[kind]
    if not values:
        raise UnknownSourceError(f"cannot detect the source of an empty payload ({describe(obj)})")
    raise UnknownSourceError(f"cannot detect the source: {first_reason or 'no recognisable record'}")


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, dict) and (is_envelope(obj) or is_page(obj)):
        inner = obj.get("records", obj.get("value"))
        return list(inner) if isinstance(inner, list) else []
    if isinstance(obj, list):
        out: list[Any] = []
        for element in obj:
            if isinstance(element, dict) and (is_envelope(element) or is_page(element)):
                out.extend(_flatten(element))
            else:
                out.append(element)
        return out
    return [obj]


def _context_hint(obj: dict) -> str | None:
    context = obj.get("@odata.context")
    if not isinstance(context, str):
        return None
    lowered = context.lower()
    if "riskyusers" in lowered or "riskdetections" in lowered:
        return "graph-riskyusers"
    if "alerts_v2" in lowered:
        return "graph-alerts"
    return None
