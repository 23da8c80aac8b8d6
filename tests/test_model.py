"""Message schema: valid manual/HTTP bodies parse as documented, bad ones fail with a clear reason."""
import json
from pathlib import Path

import pytest

from shared.model import MAX_MESSAGE_BYTES, IncidentRequest, MessageError, StepTask
from shared.timestamps import parse_timestamp
from shared.validation import ValidationError, normalize_upn, odata_quote

FIXTURES = Path(__file__).parent / "fixtures" / "messages"
VALID = json.loads((FIXTURES / "valid.json").read_text())
INVALID = json.loads((FIXTURES / "invalid.json").read_text())


@pytest.mark.parametrize("case", VALID, ids=[c["name"] for c in VALID])
def test_valid_incident_request_parses_to_the_documented_fields(case):
    request = IncidentRequest.from_json(json.dumps(case["body"]))
    data = request.to_dict()
    for key, value in case["expect"].items():
        assert data[key] == value, key
    assert IncidentRequest.from_json(request.to_json()) == request


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_incident_request_is_refused_with_a_reason(case):
    raw = case.get("raw") or json.dumps(case["body"])
    with pytest.raises(MessageError) as info:
        IncidentRequest.from_json(raw)
    assert case["reason"] in str(info.value)


def test_oversized_and_binary_messages_are_refused_before_parsing():
    with pytest.raises(MessageError, match="limit"):
        IncidentRequest.from_json(b"{" + b" " * MAX_MESSAGE_BYTES + b"}")
    with pytest.raises(MessageError, match="UTF-8"):
        IncidentRequest.from_json(b"\xff\xfe\x00binary")


def test_step_task_round_trips_and_rejects_foreign_incident_ids():
    task = StepTask("inc-0123abcd", "reset-password", "a@contoso.com", "corr-1")
    assert StepTask.from_json(task.to_json()) == task
    with pytest.raises(MessageError):
        StepTask.from_json(json.dumps({"schema": StepTask.SCHEMA, "version": 1, "incident_id": "inc-../x",
                                       "step": "close", "user_key": "u", "correlation_id": "c"}))
    with pytest.raises(MessageError, match="missing"):
        StepTask.from_json(json.dumps({"schema": StepTask.SCHEMA, "version": 1, "step": "close"}))


def test_user_key_prefers_the_object_id():
    request = IncidentRequest(user_id="6e7b768e-07e2-4810-8459-485f84f8f204", user_principal_name="a@contoso.com")
    assert request.user_key == "6e7b768e-07e2-4810-8459-485f84f8f204"


def test_odata_quote_doubles_quotes_so_injection_stays_one_literal():
    assert odata_quote("x' or 1 eq 1") == "'x'' or 1 eq 1'"
    with pytest.raises(ValidationError):
        odata_quote("a\x00b")


def test_upn_validation_rejects_injection_and_accepts_apostrophes():
    assert normalize_upn("O'Brien@Contoso.com") == "o'brien@contoso.com"
    for bad in ("x' or 1 eq 1", "a@b", "@contoso.com", "a b@contoso.com", "a@contoso.com/../x", ""):
        with pytest.raises(ValidationError):
            normalize_upn(bad)


def test_timestamps_accept_graph_precision_and_offsets():
    assert parse_timestamp("2024-05-01T10:11:12.1234567Z").microsecond == 123456
    assert parse_timestamp("2024-05-01T12:11:12+02:00").hour == 10
