"""Unit tests for shared.normalize: time parsing, thresholds, envelopes, errors, Defender join, dedupe."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shared.model import IncidentRequest
from shared.normalize import (
    MAX_RECORD_BYTES,
    PayloadError,
    PendingDefender,
    UnknownSourceError,
    detect_source,
    join_defender,
    map_entra_risk_level,
    map_severity,
    meets_threshold,
    parse_payload,
    parse_time,
)

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 7, 20, 12, 0, 0, tzinfo=timezone.utc)
U1 = "5289e9c7-3945-4ffd-8fd3-d56124baf45d"
U2 = "7d2f1c44-91a5-4b6e-9f0a-3c8e5b2d1a60"


def sample(name: str):
    return json.loads((FIXTURES / "samples" / name).read_text(encoding="utf-8"))


def ingest(name: str):
    return json.loads((FIXTURES / "ingest" / name).read_text(encoding="utf-8"))


def dumps(obj) -> str:
    return json.dumps(obj)


def risk_event(**props):
    record = sample("entra-diag-userriskevents-record-high.json")
    record["properties"].update(props)
    return record


def risky_user(**props):
    record = sample("entra-diag-riskyusers-record-remediated.json")
    record["properties"].update({"riskState": "atRisk", "riskLevel": "high"})
    record["properties"].update(props)
    return record


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize("text, expected", [
    ("2022-09-09T9:59:27.958Z", "2022-09-09T09:59:27.958000+00:00"),
    ("2022-11-08T08:41:56.5950497Z", "2022-11-08T08:41:56.595049+00:00"),
    ("2026-07-18T15:01:38.240Z", "2026-07-18T15:01:38.240000+00:00"),
    ("2026-07-18T15:01:38Z", "2026-07-18T15:01:38+00:00"),
    ("2026-07-18T15:01:38", "2026-07-18T15:01:38+00:00"),
    ("2026-07-18 15:01", "2026-07-18T15:01:00+00:00"),
    ("2026-07-18", "2026-07-18T00:00:00+00:00"),
    ("2026-07-18T12:31:00.5+02:00", "2026-07-18T10:31:00.500000+00:00"),
    ("2026-07-18T01:00:00-0530", "2026-07-18T06:30:00+00:00"),
    ("8/22/2022 6:07:16 PM", "2022-08-22T18:07:16+00:00"),
    ("7/18/2026 3:01:38 PM", "2026-07-18T15:01:38+00:00"),
    ("12/1/2022 12:00:00 AM", "2022-12-01T00:00:00+00:00"),
    ("12/1/2022 12:30:00 PM", "2022-12-01T12:30:00+00:00"),
    ("8/22/2022 18:07:16", "2022-08-22T18:07:16+00:00"),
    ("8/22/2022", "2022-08-22T00:00:00+00:00"),
    (" 8/22/2022 6:07 pm ", "2022-08-22T18:07:00+00:00"),
])
def test_parse_time_formats(text: str, expected: str) -> None:
    parsed = parse_time(text)
    assert parsed is not None and parsed.isoformat() == expected


@pytest.mark.parametrize("text", [
    "", "yesterday", "2/30/2022 1:00:00 PM", "13/1/2022", "8/22/2022 13:00:00 PM", "2022-13-01T00:00:00Z",
    "2022-01-01T24:00:00Z", "0001-01-01T00:00:00Z", "2022-01-01T00:00:00+25:00", "x" * 100, None, 5, ["2022-01-01"],
    "٢٠٢٢-٠١-٠١",
])
def test_parse_time_rejects(text) -> None:
    assert parse_time(text) is None


def test_detected_at_falls_back_to_envelope_time_then_now() -> None:
    record = risky_user(id=U1)
    del record["properties"]["riskLastUpdatedDateTime"]
    [req] = parse_payload(dumps(record), now=NOW).requests
    assert req.detected_at == "2026-07-18T15:01:38Z"  # envelope "7/18/2026 3:01:38 PM"
    record["time"] = "not a time"
    [req] = parse_payload(dumps(record), now=NOW).requests
    assert req.detected_at == "2026-07-20T12:00:00Z"


def test_naive_now_is_utc() -> None:
    record = risky_user(id=U1, riskLastUpdatedDateTime=None)
    del record["time"]
    [req] = parse_payload(dumps(record), now=datetime(2026, 1, 2, 3, 4, 5)).requests
    assert req.detected_at == "2026-01-02T03:04:05Z"


# --------------------------------------------------------------------------- risk


@pytest.mark.parametrize("raw, level", [
    ("High", "high"), ("high", "high"), ("Medium", "medium"), ("Low", "low"), ("Informational", "low"),
    ("informational", "low"), ("Unknown", "unknown"), ("unknownFutureValue", "unknown"), (None, "unknown"),
    ("", "unknown"), ("critical", "unknown"), (3, "unknown"),
])
def test_severity_map(raw, level) -> None:
    assert map_severity(raw) == level


@pytest.mark.parametrize("raw, level", [
    ("high", "high"), ("medium", "medium"), ("low", "low"), ("none", "none"), ("hidden", "unknown"),
    ("unknownFutureValue", "unknown"), (None, "unknown"),
])
def test_entra_level_map(raw, level) -> None:
    assert map_entra_risk_level(raw) == level


def test_threshold_rule() -> None:
    table = {
        "none": {"none": False, "low": False, "medium": False, "high": False},
        "unknown": {"none": True, "low": False, "medium": False, "high": False},
        "low": {"none": True, "low": True, "medium": False, "high": False},
        "medium": {"none": True, "low": True, "medium": True, "high": False},
        "high": {"none": True, "low": True, "medium": True, "high": True},
    }
    for level, row in table.items():
        for minimum, expected in row.items():
            assert meets_threshold(level, minimum) is expected, (level, minimum)


@pytest.mark.parametrize("state, level, expected", [
    ("atRisk", "high", "high"), ("atRisk", "medium", "medium"), ("atRisk", "low", None),
    ("atRisk", "hidden", None), ("confirmedCompromised", "hidden", "high"), ("confirmedCompromised", "low", "high"),
    ("remediated", "high", None), ("dismissed", "high", None), ("confirmedSafe", "high", None), ("none", "high", None),
    (None, "high", "high"), ("unknownFutureValue", "medium", "medium"),
])
def test_entra_states_and_levels(state, level, expected) -> None:
    record = risky_user(id=U1, riskState=state, riskLevel=level)
    result = parse_payload(dumps(record))
    assert [r.risk_level for r in result.requests] == ([expected] if expected else [])
    assert len(result.ignored) == (0 if expected else 1)


def test_manual_requests_are_not_thresholded() -> None:
    body = IncidentRequest(user_id=U1, user_principal_name=None, risk_level="low").to_json()
    [req] = parse_payload(body, "manual", min_risk_level="high").requests
    assert req.risk_level == "low" and req.source == "manual"


# --------------------------------------------------------------------------- payload-level errors


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"),
    (b"   \n\t ", "empty"),
    (b"\xff\xfe\x00\x01binary", "not UTF-8"),
    (b"{\x00}", "NUL"),
    (b"hello world", "neither JSON nor JSON Lines"),
    (b"{\"records\": [", "neither JSON nor JSON Lines"),
    ("[" * 100000, "neither JSON nor JSON Lines"),
])
def test_unreadable_payload_raises_payload_error(payload, message) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse_payload(payload)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_payload_over_10_mib() -> None:
    big = b'{"records": [' + b" " * (10 * 1024 * 1024) + b"]}"
    with pytest.raises(PayloadError, match="limit"):
        parse_payload(big)
    with pytest.raises(PayloadError, match="limit"):
        parse_payload(big.decode())


def test_bad_arguments_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        parse_payload("{}", "sentinel")
    with pytest.raises(ValueError):
        parse_payload("{}", min_risk_level="unknown")
    with pytest.raises(TypeError):
        parse_payload("{}", now="2026-01-01")  # type: ignore[arg-type]
    with pytest.raises(PayloadError):
        parse_payload(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("payload, reason", [
    ({"records": "nope"}, "envelope 'records' must be a JSON array"),
    ({"records": {"a": 1}}, "envelope 'records' must be a JSON array"),
    ({"value": 7, "@odata.context": "x"}, "envelope 'value' must be a JSON array"),
    (5, "record is a JSON number"),
    ("just a string", "record is a JSON string"),
    (None, "record is a JSON null"),
    ({}, "unrecognised record shape"),
    ({"records": [[1, 2]]}, "record is a JSON array"),
    ({"records": [{"records": []}]}, "unrecognised record shape"),
    ({"category": "RiskyUsers", "time": "x"}, "no properties object"),
    ({"category": 5, "properties": {}}, "category must be a non-empty string"),
    ({"schema": "breach-responder/step-task", "version": 1}, "unexpected schema"),
    ({"error": {"code": "TooManyRequests"}}, "API error body"),
])
def test_wrong_shapes_are_rejected_not_raised(payload, reason) -> None:
    result = parse_payload(json.dumps(payload))
    assert result.requests == []
    assert len(result.rejected) == 1 and reason in result.rejected[0].reason


def test_envelope_error_has_no_index() -> None:
    [rej] = parse_payload('{"records": "nope"}').rejected
    assert rej.index is None


def test_deeply_nested_record_does_not_raise() -> None:
    nested = "[" * 5000 + "]" * 5000
    result = parse_payload('{"records": [1]}\n' + nested + "\n")
    assert result.requests == [] and len(result.rejected) == 2


def test_huge_integer_does_not_raise() -> None:
    result = parse_payload('{"records": [1]}\n{"a": ' + "9" * 5000 + "}\n")
    assert result.requests == [] and any("not JSON" in r.reason for r in result.rejected)


def test_oversized_record_rejected_but_others_parse() -> None:
    big = risky_user(id=U2, userPrincipalName="adele.vance@contoso.com")
    big["properties"]["padding"] = "x" * (MAX_RECORD_BYTES + 10)
    good = risk_event()
    result = parse_payload(dumps({"records": [big, good]}))
    assert [r.user_id for r in result.requests] == [U1]
    [rej] = result.rejected
    assert rej.index == 0 and "over the 65536 byte limit" in rej.reason
    assert "xxxx" not in rej.excerpt


def test_oversized_jsonl_line_rejected() -> None:
    big = risky_user(id=U2)
    big["properties"]["padding"] = "x" * (MAX_RECORD_BYTES + 10)
    result = parse_payload(dumps(big) + "\n" + dumps(risk_event()) + "\n")
    assert len(result.requests) == 1 and "byte limit" in result.rejected[0].reason


def test_graph_alert_may_exceed_64_kib() -> None:
    alert = ingest("graph-alert-v2-user-evidence.json")
    alert["description"] = "d" * (100 * 1024)
    [req] = parse_payload(dumps(alert)).requests
    assert req.user_id == U2


def test_bom_and_str_payloads() -> None:
    body = dumps(risk_event())
    assert len(parse_payload(b"\xef\xbb\xbf" + body.encode()).requests) == 1
    assert len(parse_payload("\ufeff" + body).requests) == 1
    assert len(parse_payload(bytearray(body.encode())).requests) == 1


def test_jsonl_with_crlf_and_envelope_lines() -> None:
    lines = [dumps(risk_event()), dumps({"records": [risky_user(id=U2, userPrincipalName=None)]}), "garbage"]
    result = parse_payload("\r\n".join(lines))
    assert sorted(r.user_id for r in result.requests) == sorted([U1, U2])
    assert [r.index for r in result.rejected] == [2]


def test_rejected_excerpt_never_carries_values() -> None:
    record = risk_event(userPrincipalName="bad upn with spaces", password="hunter2-secret")
    [rej] = parse_payload(dumps(record)).rejected
    assert "hunter2" not in rej.excerpt and "hunter2" not in rej.reason
    assert len(rej.excerpt) <= 100


# --------------------------------------------------------------------------- source forcing and detection


def test_forced_source_rejects_other_shapes() -> None:
    result = parse_payload(dumps(risk_event()), "graph-alerts")
    assert result.requests == [] and "not graph-alerts" in result.rejected[0].reason
    http = parse_payload(dumps(risk_event()), "http")
    assert http.requests == [] and "not http" in http.rejected[0].reason
    assert len(parse_payload(dumps(risk_event()), "entra-diagnostics").requests) == 1


def test_auto_handles_a_mixed_array() -> None:
    manual = IncidentRequest(user_id=None, user_principal_name="lee.gu@contoso.com").to_dict()
    payload = [risk_event(), ingest("graph-alert-v2-user-evidence.json"), manual,
               sample("graph-riskyuser-single-high.json")]
    result = parse_payload(dumps(payload))
    assert [r.source for r in result.requests] == ["entra-diagnostics", "graph-alerts", "manual", "graph-riskyusers"]


@pytest.mark.parametrize("obj, source", [
    ({"records": [sample("entra-diag-riskyusers-record-remediated.json")]}, "entra-diagnostics"),
    ([sample("defender-stream-alertinfo-record-a.json")], "defender-stream"),
    (sample("graph-alerts-v2-single-device.json"), "graph-alerts"),
    (sample("graph-riskyusers-list-dismissed.json"), "graph-riskyusers"),
    (sample("graph-riskdetection-live.json"), "graph-riskyusers"),
    ({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#security/alerts_v2", "value": []}, "graph-alerts"),
    ({"@odata.context": "https://graph.microsoft.com/beta/$metadata#riskyUsers", "value": []}, "graph-riskyusers"),
    ({"schema": "breach-responder/incident-request", "version": 1, "user_id": U1}, "manual"),
    ({"version": 1, "user_id": U1, "source": "http"}, "http"),
    ([5, {"records": [risk_event()]}], "entra-diagnostics"),
])
def test_detect_source(obj, source) -> None:
    assert detect_source(obj) == source
    assert detect_source(json.dumps(obj)) == source
    assert detect_source(json.dumps(obj).encode()) == source


@pytest.mark.parametrize("obj", [{"records": []}, {"value": []}, [], {}, 5, '"text"', "null", {"error": {"code": "x"}},
                                 {"category": "Nope", "properties": {}}])
def test_detect_source_unknown(obj) -> None:
    with pytest.raises(UnknownSourceError) as info:
        detect_source(obj)
    assert isinstance(info.value, ValueError) and "cannot detect" in str(info.value)


def test_detect_source_on_unreadable_bytes() -> None:
    with pytest.raises(PayloadError):
        detect_source(b"\xff\xfe")


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize("props, reason", [
    ({"userId": None, "userPrincipalName": None}, "names no user"),
    ({"userId": "", "userPrincipalName": ""}, "names no user"),
    ({"userId": "not-a-guid"}, "userId is not a GUID"),
    ({"userId": 12345}, "userId is not a GUID"),
    ({"userPrincipalName": "x' or 1 eq 1"}, "not a valid user principal name"),
    ({"userPrincipalName": "alice@contoso.com' or 1 eq 1"}, "not a valid user principal name"),
    ({"userPrincipalName": ["a@b.com"]}, "must be a string"),
    ({"riskState": 5}, "riskState must be a string"),
])
def test_entra_bad_identities(props, reason) -> None:
    result = parse_payload(dumps(risk_event(**props)))
    assert result.requests == [] and reason in result.rejected[0].reason


def test_upn_only_and_id_only_requests() -> None:
    result = parse_payload(dumps({"records": [risk_event(userId=None), risk_event(userPrincipalName=None, userId=U2)]}))
    assert [(r.user_id, r.user_principal_name) for r in result.requests] == [
        (None, "risk-synth-delete-me@m7kni.io"), (U2, None)]


def test_guid_is_canonicalised() -> None:
    [req] = parse_payload(dumps(risk_event(userId=" " + U1.upper() + " "))).requests
    assert req.user_id == U1


def test_unusable_detection_id_costs_only_the_alert_id() -> None:
    [req] = parse_payload(dumps(risk_event(id={"nested": True}))).requests
    assert req.alert_ids == ()


# --------------------------------------------------------------------------- Defender


def evidence_row(**props):
    row = ingest("defender-alertevidence-user-record.json")
    row["properties"].update(props)
    return row


def test_defender_join_across_batches() -> None:
    info = sample("defender-stream-alertinfo-record-b.json")
    first = parse_payload(dumps(evidence_row()))
    assert first.requests == [] and [(p.kind, p.alert_id) for p in first.pending] == [
        ("evidence", info["properties"]["AlertId"])]
    second = parse_payload(dumps(info))
    assert second.requests == [] and second.pending[0].kind == "info"

    # The caller stored both halves (as JSON), then joins them.
    stored_info = second.pending[0].to_json()
    joined = join_defender([stored_info], [first.pending[0]])
    [req] = joined.requests
    assert (req.user_id, req.risk_level, req.source) == (U1, "high", "defender-stream")
    assert req.alert_ids == (info["properties"]["AlertId"],)
    assert req.reason == "Defender alert 'Malicious IP address' (High)"
    assert req.detected_at == "2026-07-17T10:07:37.729415Z"
    assert joined.pending == [] and joined.rejected == []


def test_defender_join_accepts_bare_properties_and_reports_still_pending() -> None:
    info = sample("defender-stream-alertinfo-record-a.json")["properties"]
    other = sample("defender-stream-alertinfo-record-b.json")
    ev = evidence_row(AlertId=info["AlertId"])["properties"]
    result = join_defender([info, other], [ev, "not json", 7])
    [req] = result.requests
    assert req.risk_level == "medium" and req.alert_ids == (info["AlertId"],)
    assert [(p.alert_id, p.kind) for p in result.pending] == [(other["properties"]["AlertId"], "info")]
    assert [r.index for r in result.rejected] == [3, 4]


def test_defender_join_threshold() -> None:
    info = sample("defender-stream-alertinfo-record-a.json")  # Medium
    ev = evidence_row(AlertId=info["properties"]["AlertId"])
    assert join_defender([info], [ev], min_risk_level="high").requests == []
    assert "does not meet the threshold high" in join_defender([info], [ev], min_risk_level="high").ignored[0].reason
    with pytest.raises(ValueError):
        join_defender([info], [ev], min_risk_level="severe")


def test_defender_evidence_with_own_severity_needs_no_info() -> None:
    [req] = parse_payload(dumps(evidence_row(Severity="High", Title="Anomalous token"))).requests
    assert req.risk_level == "high" and req.reason == "Defender alert 'Anomalous token' (High)"
    low = parse_payload(dumps(evidence_row(Severity="Informational")))
    assert low.requests == [] and low.pending == [] and "Informational (low)" in low.ignored[0].reason


@pytest.mark.parametrize("props, outcome, reason", [
    ({"AccountObjectId": "garbage"}, "rejected", "AccountObjectId is not a GUID"),
    ({"AccountUpn": "x' or 1 eq 1"}, "rejected", "not a valid user principal name"),
    ({"AccountObjectId": None, "AccountUpn": None, "AccountName": None, "AccountDomain": None, "AccountSid": None,
      "AdditionalFields": None}, "rejected", "names no user"),
    ({"AccountObjectId": "S-1-5-18", "AccountUpn": None, "AccountName": "SYSTEM", "AccountDomain": "NT AUTHORITY",
      "AdditionalFields": "{}"}, "ignored", "system account"),
    ({"AccountObjectId": None, "AccountUpn": None, "AccountName": None, "AccountDomain": None,
      "AccountSid": "S-1-5-20", "AdditionalFields": "not json"}, "ignored", "system account"),
    ({"EntityType": "MailMessage"}, "ignored", "MailMessage is not a user"),
    ({"EntityType": "Ip"}, "ignored", "Ip is not a user"),
    ({"EntityType": None}, "ignored", "null is not a user"),
    ({"EvidenceRole": "Related"}, "ignored", "context (Related), not an Impacted user"),
    ({"EvidenceRole": None}, "ignored", "context (no role), not an Impacted user"),
    ({"EvidenceRole": "   "}, "ignored", "context (no role), not an Impacted user"),
    ({"AlertId": None}, "rejected", "AlertId is missing"),
    ({"AlertId": "a" * 300}, "rejected", "not a usable alert id"),
])
def test_defender_evidence_edge_cases(props, outcome, reason) -> None:
    result = parse_payload(dumps(evidence_row(Severity="High", **props)))
    assert result.requests == []
    [entry] = getattr(result, outcome)
    assert reason in entry.reason


def test_defender_identity_from_additional_fields() -> None:
    row = evidence_row(EntityType="Mailbox", AccountObjectId=None, AccountUpn=None, Severity="Medium",
                       AdditionalFields=json.dumps({"MailboxPrimaryAddress": "Adele.Vance@contoso.com", "AadId": U2}))
    [req] = parse_payload(dumps(row)).requests
    assert (req.user_id, req.user_principal_name) == (U2, "adele.vance@contoso.com")


def test_defender_other_tables_are_ignored() -> None:
    record = {"category": "AdvancedHunting-DeviceEvents", "properties": {"AlertId": "x"}, "time": "2026-01-01T00:00:00Z"}
    [ign] = parse_payload(dumps(record)).ignored
    assert "DeviceEvents" in ign.reason


def test_defender_user_evidence_for_two_users_and_duplicate_info() -> None:
    info = sample("defender-stream-alertinfo-record-b.json")
    low_copy = copy.deepcopy(info)
    low_copy["properties"]["Severity"] = "Low"
    second = evidence_row(AccountObjectId=U2, AccountUpn="adele.vance@contoso.com")
    result = parse_payload(dumps({"records": [low_copy, evidence_row(), info, second]}))
    assert [(r.user_id, r.risk_level) for r in result.requests] == [(U1, "high"), (U2, "high")]
    assert result.pending == []


# --------------------------------------------------------------------------- Graph alerts


def test_graph_alert_recipient_is_not_a_user() -> None:
    alert = ingest("graph-alert-v2-user-evidence.json")
    alert["evidence"] = [e for e in alert["evidence"] if "analyzedMessage" in e["@odata.type"]]
    result = parse_payload(dumps(alert), min_risk_level="none")
    assert result.requests == [] and "analyzedmessage" in result.ignored[0].reason


@pytest.mark.parametrize("change, reason", [
    ({"evidence": "nope"}, "evidence must be a JSON array"),
    ({"id": None}, "alert id is missing"),
])
def test_graph_alert_bad_shapes(change, reason) -> None:
    alert = ingest("graph-alert-v2-user-evidence.json")
    alert.update(change)
    result = parse_payload(dumps(alert))
    assert result.requests == [] and reason in result.rejected[0].reason


def test_graph_alert_evidence_filters() -> None:
    alert = ingest("graph-alert-v2-user-evidence.json")
    user, mailbox = copy.deepcopy(alert["evidence"][0]), copy.deepcopy(alert["evidence"][1])
    user["verdict"] = "noThreatsFound"
    mailbox["roles"] = ["contextual"]
    broken = {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": "x"}
    alert["evidence"] = [user, mailbox, broken, None]
    result = parse_payload(dumps(alert))
    assert result.requests == []
    assert "userAccount must be an object" in result.rejected[0].reason
    assert "no user evidence" in result.ignored[0].reason


def test_graph_alert_missing_severity_is_unknown() -> None:
    alert = ingest("graph-alert-v2-user-evidence.json")
    del alert["severity"]
    assert parse_payload(dumps(alert)).requests == []
    [req] = parse_payload(dumps(alert), min_risk_level="none").requests
    assert req.risk_level == "unknown"


# --------------------------------------------------------------------------- manual


@pytest.mark.parametrize("body, reason", [
    ({"schema": "breach-responder/incident-request", "user_id": U1}, "unsupported incident-request version"),
    ({"schema": "breach-responder/incident-request", "version": 2, "user_id": U1}, "version"),
    ({"schema": "breach-responder/incident-request", "version": True, "user_id": U1}, "version"),
    ({"version": 1, "user_id": None, "user_principal_name": None}, "names no user"),
    ({"version": 1, "user_id": "nope"}, "not a GUID"),
    ({"version": 1, "user_principal_name": "x' or 1 eq 1"}, "not a valid user principal name"),
    ({"version": 1, "user_id": U1, "risk_level": "critical"}, "unknown risk_level"),
    ({"version": 1, "user_id": U1, "alert_ids": "a"}, "alert_ids must be a list"),
    ({"version": 1, "user_id": U1, "reason": 5}, "reason must be a string"),
    ({"version": 1, "user_id": U1, "source": "graph-alerts"}, "may not claim source"),
    ({"version": 1, "user_id": U1, "detected_at": "soon"}, "not an ISO 8601 timestamp"),
])
def test_manual_rejections(body, reason) -> None:
    result = parse_payload(dumps(body), "manual")
    assert result.requests == [] and reason in result.rejected[0].reason


def test_manual_default_source_follows_caller() -> None:
    body = dumps({"version": 1, "user_principal_name": "Lee.Gu@contoso.com"})
    assert parse_payload(body, "http").requests[0].source == "http"
    assert parse_payload(body, "manual").requests[0].source == "manual"
    assert parse_payload(body).requests[0].source == "manual"


def test_manual_roundtrip_equals_from_json() -> None:
    original = IncidentRequest(user_id=U1, user_principal_name="a@contoso.com", source="http", risk_level="medium",
                               alert_ids=("x", "y"), detected_at="2026-07-18T10:00:00Z", reason="r")
    [req] = parse_payload(original.to_json(), "http").requests
    assert req == original == IncidentRequest.from_json(original.to_json())


# --------------------------------------------------------------------------- de-duplication


def test_dedupe_links_upn_only_to_id_and_keeps_highest_risk_and_earliest_time() -> None:
    records = [
        risk_event(userId=None, riskLevel="medium", id="a1", detectedDateTime="2026-07-18T10:00:00Z"),
        risk_event(id="a2", detectedDateTime="2026-07-18T09:00:00.5Z"),
        risk_event(userId=None, id="a3", riskLevel="medium", detectedDateTime="2026-07-18T09:00:00Z"),
    ]
    [req] = parse_payload(dumps({"records": records})).requests
    assert (req.user_id, req.user_principal_name, req.risk_level) == (U1, "risk-synth-delete-me@m7kni.io", "high")
    assert req.alert_ids == ("a1", "a2", "a3")
    assert req.detected_at == "2026-07-18T09:00:00Z"
    assert req.reason.endswith("(+2 more signals)") and ", high (atRisk)" in req.reason


def test_dedupe_does_not_merge_two_ids_sharing_a_upn() -> None:
    upn = "shared@contoso.com"
    records = [risk_event(userPrincipalName=upn), risk_event(userId=U2, userPrincipalName=upn),
               risk_event(userId=None, userPrincipalName=upn)]
    result = parse_payload(dumps({"records": records}))
    assert [(r.user_id, r.user_principal_name) for r in result.requests] == [(U1, upn), (U2, upn), (None, upn)]


def test_dedupe_caps_alert_ids_at_100() -> None:
    records = [risk_event(id=f"det-{i}") for i in range(150)]
    [req] = parse_payload(dumps({"records": records})).requests
    assert len(req.alert_ids) == 100 and req.alert_ids[0] == "det-0"
    assert len(req.reason) <= 500


def test_long_titles_are_truncated_and_cleaned() -> None:
    row = evidence_row(Severity="High", Title="Evil\n\x1b[31mtitle " + "T" * 1000)
    [req] = parse_payload(dumps(row)).requests
    assert "\n" not in req.reason and "\x1b" not in req.reason and len(req.reason) < 200


def test_pending_record_is_json_serialisable() -> None:
    [pending] = parse_payload(dumps(sample("defender-stream-alertinfo-record-a.json"))).pending
    assert isinstance(pending, PendingDefender)
    assert json.loads(pending.to_json()) == sample("defender-stream-alertinfo-record-a.json")


def test_graph_user_evidence_for_system_account_is_not_a_user() -> None:
    alert = ingest("graph-alert-v2-user-evidence.json")
    alert["evidence"] = [{"@odata.type": "#microsoft.graph.security.userEvidence", "roles": [], "verdict": "suspicious",
                          "userAccount": {"accountName": "SYSTEM", "domainName": "NT AUTHORITY", "userSid": "S-1-5-18",
                                          "azureAdUserId": None, "userPrincipalName": None}}]
    result = parse_payload(dumps(alert), min_risk_level="none")
    assert result.requests == [] and result.rejected == [] and "no user evidence" in result.ignored[0].reason


def test_normalize_package_is_pure() -> None:
    """No I/O, network or Azure SDK imports in shared/normalize."""
    import ast

    allowed = {"__future__", "json", "re", "dataclasses", "datetime", "typing"}
    package = Path(__file__).resolve().parents[1] / "shared" / "normalize"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [str(node.module).split(".")[0]]
            else:
                continue
            assert set(names) <= allowed, (path.name, names)
