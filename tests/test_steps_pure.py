"""The pure judgements inside the steps: which rules are suspicious, which methods are new."""
import json
from pathlib import Path

import pytest

from shared.steps.clean_mailbox import exo_rule_reasons, graph_rule_reasons, is_system_rule
from shared.steps.close import summary_text
from shared.steps.enforce_mfa import methods_to_remove
from shared.steps.snapshot import first_risk_time

RULES = json.loads((Path(__file__).parent / "fixtures" / "rules" / "graph-messagerules-list.json").read_text())["value"]


def test_documented_sample_rules_are_flagged_for_delete_and_forward():
    by_name = {r["displayName"]: graph_rule_reasons(r) for r in RULES}
    assert by_name == {"Remove spam": ["delete"], "From partner": ["forwardTo"]}


@pytest.mark.parametrize("actions, folder, expected", [
    ({"redirectTo": [{"emailAddress": {"address": "x@evil.example"}}]}, "", ["redirectTo"]),
    ({"moveToFolder": "AAMkAD", "markAsRead": True}, "RSS Subscriptions", ["markAsRead", "moveToFolder:RSS Subscriptions"]),
    ({"moveToFolder": "AAMkAD"}, "Projects", []),
    ({"markImportance": "high", "stopProcessingRules": True}, "", []),
    ({"permanentDelete": True}, "", ["permanentDelete"]),
])
def test_graph_rule_classification(actions, folder, expected):
    assert graph_rule_reasons({"actions": actions}, folder) == expected


def test_exo_rows_classified_and_system_rules_recognised():
    assert exo_rule_reasons({"ForwardTo": ["x@evil.example"], "MoveToFolder": "adele:\\Archive"}) == ["ForwardTo", "MoveToFolder:adele:\\Archive"]
    assert exo_rule_reasons({"Name": "benign", "MoveToFolder": "Inbox\\Projects"}) == []
    # system rules by their properties (not managed by the inbox-rule cmdlets), never by name
    assert is_system_rule({"Name": "Microsoft.Exchange.OOF.KnownSenders.Handled", "SupportedByTask": False})
    assert is_system_rule({"Name": "Junk E-Mail Rule", "SupportedByTask": False, "MoveToFolder": "adele:\\Junk Email"})
    assert not is_system_rule({"Name": "Junk E-Mail Rule", "SupportedByTask": True})
    assert not is_system_rule({"Name": "Junk E-Mail Rule (sync)", "SupportedByTask": False,
                               "ForwardTo": ['"x" [SMTP:x@evil.example]']})
    assert not is_system_rule({"Name": "x"})


def test_only_methods_registered_after_the_first_risk_signal_are_removed():
    methods = [
        {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod", "id": "pw", "createdDateTime": "2024-01-01T00:00:00Z"},
        {"@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod", "id": "old", "createdDateTime": "2023-01-01T00:00:00Z"},
        {"@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod", "id": "new", "displayName": "iPhone 15", "createdDateTime": "2024-05-02T08:00:00Z"},
        {"odata.type": "#microsoft.graph.fido2AuthenticationMethod", "id": "key", "creationDateTime": "2024-05-03T00:00:00Z"},
        {"@odata.type": "#microsoft.graph.phoneAuthenticationMethod", "id": "phone"},
    ]
    doomed = methods_to_remove(methods, "2024-05-01T12:00:00Z")
    assert [(m["id"], m["collection"]) for m in doomed] == [("new", "microsoftAuthenticatorMethods"), ("key", "fido2Methods")]


def test_first_risk_time_is_the_earliest_detection_or_the_fallback():
    detections = [{"activityDateTime": "2024-05-02T10:00:00Z"}, {"detectedDateTime": "2024-05-01T09:30:00.1234567Z"}]
    assert first_risk_time(detections, "fallback") == "2024-05-01T09:30:00.123456Z"
    assert first_risk_time([], "2024-01-01T00:00:00Z") == "2024-01-01T00:00:00Z"


def test_summary_mail_lists_steps_and_says_the_password_is_not_included():
    incident = {"incident_id": "inc-1", "user_principal_name": "a@contoso.com", "user_id": "u", "playbook": "reset-password,close"}
    rows = [{"RowKey": "reset-password", "state": "succeeded", "detail": json.dumps({"summary": "password reset and sessions revoked"})}]
    text = summary_text(incident, rows)
    assert "reset-password: succeeded - password reset and sessions revoked" in text
    assert "NOT included" in text


def test_only_entras_refusal_of_a_cloud_reset_counts_as_on_premises_reset_required():
    from shared.errors import PermanentError
    from shared.steps.reset_password import directory_refused

    synced = PermanentError("Graph PATCH /users/x: 400 Request_BadRequest - Unable to update the specified properties "
                            "for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
                            status=400, code="Request_BadRequest")
    federated = PermanentError("Graph PATCH /users/x: 400 Request_BadRequest - Unable to update the specified properties "
                               "for objects that have originated within an external service.", status=400)
    complexity = PermanentError("Graph PATCH /users/x: 400 Request_BadRequest - The specified password does not comply "
                                "with password complexity requirements.", status=400)
    denied = PermanentError("Graph PATCH /users/x: 403 Authorization_RequestDenied", status=403)
    assert directory_refused(synced, {}) and directory_refused(federated, {})
    assert not directory_refused(complexity, {"on_prem_synced": True})
    assert not directory_refused(denied, {"on_prem_synced": True})
