"""The pure decisions behind issue 17: which mailbox right, trusted sender, consent grant or app role
assignment is removed, kept or listed for review, and what the SOC reads about it."""
from __future__ import annotations

import json

import pytest

from shared import footholds
from shared.consents import consent_events, plan_app_roles, plan_grants, scopes_of
from shared.cutoff import after_cutoff, cutoff
from shared.mailbox_rights import (
    FULL_ACCESS,
    KEEP,
    REMOVE,
    REVIEW,
    SEND_AS,
    SEND_ON_BEHALF,
    TRUSTED_SENDER,
    AuditState,
    already_gone,
    date_grant,
    grant_events,
    held_full_access_candidates,
    is_system_trustee,
    keys_of,
    parse_audit_rows,
    permission_entries,
    relevant_events,
    rights_list,
    value_changes,
)
from shared.settings import Settings
from shared.validation import ValidationError, opath_quote

CUT = "2024-05-01T12:00:00Z"
ADELE = "adele@contoso.com"
UID = "0dc668f6-43fa-5f46-a937-25829277128d"
MAILBOX = keys_of(ADELE, "adele", "Adele Vance")
ATTACKER = keys_of("mallory@contoso.com")


def audit_row(op: str, when: str, target: str, **params: str) -> dict:
    """A Search-UnifiedAuditLog row as the admin API returns it (AuditData is a JSON string)."""
    data = {"CreationTime": when, "Operation": op, "ObjectId": target, "UserId": "admin@contoso.com",
            "ResultStatus": "True", "Parameters": [{"Name": k, "Value": v} for k, v in params.items()]}
    return {"RecordType": "ExchangeAdmin", "CreationDate": when, "Operations": op, "AuditData": json.dumps(data)}


def state(rows: list[dict], **kw) -> AuditState:
    return AuditState(available=True, events=parse_audit_rows(rows), **kw)


def test_inherited_denied_and_system_entries_are_never_delegates():
    rows = [
        {"User": "NT AUTHORITY\\SELF", "AccessRights": ["FullAccess", "ReadPermission"], "IsInherited": False, "Deny": False},
        {"User": "EURPRD01\\Exchange Servers", "AccessRights": ["FullAccess"], "IsInherited": True, "Deny": False},
        {"User": "EURPRD01\\Domain Admins", "AccessRights": ["FullAccess"], "IsInherited": True, "Deny": True},
        {"User": "S-1-5-21-1004336348-1177238915-682003330-512", "AccessRights": "FullAccess", "IsInherited": False},
        {"User": "mallory@contoso.com", "AccessRights": "FullAccess, ReadPermission", "IsInherited": "False", "Deny": False},
        {"User": "megan@contoso.com", "AccessRights": ["FullAccess"], "IsInherited": False, "Deny": True},
    ]
    delegates, untouched = permission_entries(rows, "User")
    assert delegates == [{"identity": None, "trustee": "mallory@contoso.com", "access_rights": ["FullAccess", "ReadPermission"]}]
    assert untouched == 5
    send_as, _ = permission_entries([{"Trustee": "NT AUTHORITY\\SELF", "AccessRights": ["SendAs"]},
                                     {"Trustee": "mallory@contoso.com", "AccessRights": ["SendAs"],
                                      "AccessControlType": "Allow"}], "Trustee")
    assert [d["trustee"] for d in send_as] == ["mallory@contoso.com"]
    assert is_system_trustee("Organization Management") and not is_system_trustee("megan@contoso.com")


def test_access_rights_arrive_as_an_array_or_a_comma_string():
    assert rights_list(["FullAccess"]) == rights_list("FullAccess") == ["FullAccess"]
    assert rights_list("FullAccess, ReadPermission") == ["FullAccess", "ReadPermission"]
    assert rights_list(None) == []


def test_audit_rows_parse_into_compact_events_and_failed_ones_are_dropped():
    ok = audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", ADELE, Identity=ADELE, User="mallory@contoso.com",
                   AccessRights="FullAccess", Irrelevant="x")
    failed = json.loads(ok["AuditData"]) | {"ResultStatus": "False"}
    events = parse_audit_rows([ok, {"AuditData": json.dumps(failed)}, {"AuditData": "not json"}, {"AuditData": "{}"}])
    assert events == [{"op": "Add-MailboxPermission", "at": "2024-05-01T13:00:00Z", "object": ADELE,
                       "params": {"Identity": ADELE, "User": "mallory@contoso.com", "AccessRights": "FullAccess"},
                       "by": "admin@contoso.com"}]
    other = audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", "ceo@contoso.com", User="megan@contoso.com")
    assert relevant_events(parse_audit_rows([ok, other]), MAILBOX, keys_of("nobody@contoso.com")) == events


@pytest.mark.parametrize("rows, decision, granted", [
    ([audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", ADELE, User="mallory@contoso.com",
                AccessRights="FullAccess")], REMOVE, "2024-05-01T13:00:00Z"),
    ([audit_row("Add-MailboxPermission", "2024-04-01T13:00:00", "Adele Vance", User="MALLORY@contoso.com",
                AccessRights="FullAccess")], KEEP, "2024-04-01T13:00:00Z"),
    # re-granted by the attacker after an old grant: the newest grant decides
    ([audit_row("Add-MailboxPermission", "2024-04-01T13:00:00", ADELE, User="mallory@contoso.com"),
      audit_row("Add-MailboxPermission", "2024-05-02T09:00:00", ADELE, User="mallory@contoso.com")], REMOVE,
     "2024-05-02T09:00:00Z"),
    # another right, another trustee, another mailbox: not this entry's history
    ([audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", ADELE, User="mallory@contoso.com", AccessRights="ReadPermission"),
      audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", ADELE, User="megan@contoso.com"),
      audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", "ceo@contoso.com", User="mallory@contoso.com")], REVIEW, None),
])
def test_a_grant_after_the_cutoff_is_removed_before_is_kept_and_undated_is_listed(rows, decision, granted):
    audit = state(rows)
    dating = date_grant(grant_events(audit.events, FULL_ACCESS, MAILBOX, ATTACKER), CUT, audit)
    assert (dating.decision, dating.granted_at) == (decision, granted)


def test_no_event_never_means_old():
    """No audit event: listed for review, never kept — and neither is anything when the log is unreadable
    or the search was cut short (a later grant may be missing)."""
    empty = state([])
    assert date_grant([], CUT, empty).decision == REVIEW
    unreadable = AuditState(available=False, error="403 Forbidden")
    assert date_grant([], CUT, unreadable).decision == REVIEW and "403" in date_grant([], CUT, unreadable).reason
    old = [audit_row("Add-MailboxPermission", "2024-04-01T13:00:00", ADELE, User="mallory@contoso.com")]
    truncated = state(old, complete=False)
    dating = date_grant(grant_events(truncated.events, FULL_ACCESS, MAILBOX, ATTACKER), CUT, truncated)
    assert dating.decision == REVIEW and "cut short" in dating.reason
    new = [audit_row("Add-MailboxPermission", "2024-05-02T13:00:00", ADELE, User="mallory@contoso.com")]
    assert date_grant(grant_events(state(new, complete=False).events, FULL_ACCESS, MAILBOX, ATTACKER), CUT,
                      state(new, complete=False)).decision == REMOVE  # a proven late grant is removed anyway


def test_a_grant_whose_last_event_removed_it_is_listed_for_review():
    rows = [audit_row("Add-MailboxPermission", "2024-04-01T13:00:00", ADELE, User="mallory@contoso.com"),
            audit_row("Remove-MailboxPermission", "2024-04-20T13:00:00", ADELE, User="mallory@contoso.com")]
    audit = state(rows)
    dating = date_grant(grant_events(audit.events, FULL_ACCESS, MAILBOX, ATTACKER), CUT, audit)
    assert dating.decision == REVIEW and "granted again" in dating.reason


def test_send_on_behalf_and_trusted_senders_are_read_from_multi_valued_parameters():
    assert value_changes('@{Add="a@x.com","b@x.com"; Remove="c@x.com"}') == ({"a@x.com", "b@x.com"}, {"c@x.com"})
    assert value_changes({"@odata.type": "#Exchange.GenericHashTable", "remove": ["C@x.com"]}) == (set(), {"c@x.com"})
    assert value_changes("a@x.com,b@x.com") == ({"a@x.com", "b@x.com"}, set())
    rows = [audit_row("Set-Mailbox", "2024-05-01T13:00:00", ADELE, GrantSendOnBehalfTo='@{Add="mallory@contoso.com"}'),
            audit_row("Set-Mailbox", "2024-05-01T14:00:00", ADELE, GrantSendOnBehalfTo='@{Remove="megan@contoso.com"}'),
            audit_row("Set-MailboxJunkEmailConfiguration", "2024-05-01T13:30:00", ADELE,
                      TrustedSendersAndDomains='@{Add="evil.example"}')]
    audit = state(rows)
    assert [e["change"] for e in grant_events(audit.events, SEND_ON_BEHALF, MAILBOX, ATTACKER)] == ["add"]
    assert [e["change"] for e in grant_events(audit.events, SEND_ON_BEHALF, MAILBOX, keys_of("megan@contoso.com"))] == ["remove"]
    assert date_grant(grant_events(audit.events, TRUSTED_SENDER, MAILBOX, frozenset(), "Evil.Example"), CUT, audit,
                      verb="added").decision == REMOVE
    assert grant_events(audit.events, TRUSTED_SENDER, MAILBOX, frozenset(), "good.example") == []
    assert grant_events(audit.events, SEND_AS, MAILBOX, ATTACKER) == []


def test_full_access_on_other_mailboxes_is_found_through_the_audit_log():
    rows = [audit_row("Add-MailboxPermission", "2024-05-01T13:00:00", "ceo@contoso.com", User=ADELE),
            audit_row("Add-MailboxPermission", "2024-05-01T13:05:00", "CEO@contoso.com", User="adele"),
            audit_row("Add-MailboxPermission", "2024-05-01T13:10:00", "finance", User="Adele Vance"),
            audit_row("Add-MailboxPermission", "2024-05-01T13:20:00", ADELE, User="mallory@contoso.com"),
            audit_row("Add-RecipientPermission", "2024-05-01T13:30:00", "hr@contoso.com", Trustee=ADELE)]
    candidates = held_full_access_candidates(parse_audit_rows(rows), MAILBOX, MAILBOX)
    assert sorted(c.lower() for c in candidates) == ["ceo@contoso.com", "finance"]


def test_already_gone_texts():
    assert already_gone(["Can't remove the access control entry on the object \"x\" for the user account because "
                         "the ACE doesn't exist on the object."])
    assert already_gone(["... because the ACE isn't present."])
    assert already_gone(["The command completed successfully but no settings of 'x' have been modified."])
    assert not already_gone(["1 Outlook client-side rule(s) in this mailbox were removed."])


def test_opath_quote_doubles_quotes_and_refuses_control_characters():
    assert opath_quote("CN=O'Brien,OU=contoso") == "'CN=O''Brien,OU=contoso'"
    with pytest.raises(ValidationError):
        opath_quote("CN=x\n' -or 1 -eq 1")
    with pytest.raises(ValidationError):
        opath_quote("")


# -- consents -------------------------------------------------------------------------------------


def consent(at: str, client: str, grant_id: str = "", principal: str = UID, by: str = UID, admin: bool = False,
            all_users: bool = False) -> dict:
    permissions = (f"[] => [[Id: {grant_id}, ClientId: {client}, PrincipalId: {principal if not all_users else ''}, "
                   f"ResourceId: res, ConsentType: {'AllPrincipals' if all_users else 'Principal'}, Scope: Mail.Read, "
                   "CreatedDateTime: , LastModifiedDateTime ]]; ")
    return {"activityDisplayName": "Consent to application", "activityDateTime": at, "result": "success",
            "initiatedBy": {"user": {"id": by}},
            "targetResources": [{"id": client, "type": "ServicePrincipal", "displayName": f"app {client}", "modifiedProperties": [
                {"displayName": "ConsentContext.IsAdminConsent", "newValue": json.dumps(str(admin))},
                {"displayName": "ConsentContext.OnBehalfOfAll", "newValue": json.dumps(str(all_users))},
                {"displayName": "ConsentAction.Permissions", "newValue": json.dumps(permissions)}]}]}


def grant(grant_id: str, client: str, consent_type: str = "Principal", principal: str | None = UID) -> dict:
    return {"id": grant_id, "clientId": client, "consentType": consent_type, "principalId": principal,
            "resourceId": "res", "scope": " Mail.Read offline_access"}


def test_a_consent_grant_is_dated_by_its_consent_event():
    audits = [consent("2024-05-01T13:00:00Z", "evil", grant_id="GrantEvil123"),
              consent("2024-04-10T09:00:00Z", "travel"),  # no grant id: matched by client and user
              consent("2024-05-01T14:00:00Z", "other", grant_id="GrantOther456")]
    audit = AuditState(available=True, events=audits, source="directory audit log")
    own, others = plan_grants([grant("GrantEvil123", "evil"), grant("GrantTravel789", "travel"),
                               grant("GrantNone000", "silent")], audit, UID, CUT)
    decided = {g["id"]: (g["decision"], g.get("consented_at")) for g in own}
    assert decided == {"GrantEvil123": (REMOVE, "2024-05-01T13:00:00Z"), "GrantTravel789": (KEEP, "2024-04-10T09:00:00Z"),
                       "GrantNone000": (REVIEW, None)}
    assert own[0]["scopes"] == ["Mail.Read", "offline_access"] and own[0]["scope"] == "Mail.Read offline_access"
    assert others == []
    unreadable = plan_grants([grant("GrantEvil123", "evil")], AuditState(available=False, error="403"), UID, CUT)[0]
    assert unreadable[0]["decision"] == REVIEW and "403" in unreadable[0]["reason"]


def test_consent_events_for_everyone_or_by_someone_else_do_not_date_the_users_grant():
    audits = [consent("2024-05-01T13:00:00Z", "app", all_users=True, admin=True, by="admin-id"),
              consent("2024-05-01T13:00:00Z", "app", principal="someone-else", by="someone-else")]
    events = consent_events(audits, UID)
    assert [e["on_behalf_of_all"] for e in events] == [True, False] and events[0]["admin_consent"]
    own, _ = plan_grants([grant("G1appgrant", "app")], AuditState(available=True, events=audits), UID, CUT)
    assert own[0]["decision"] == REVIEW


def test_admin_consent_and_other_principals_grants_are_never_planned_for_removal():
    audit = AuditState(available=True, events=[consent("2024-05-01T13:00:00Z", "app", grant_id="AllGrant1")])
    own, others = plan_grants([grant("AllGrant1", "app", "AllPrincipals", None), grant("G2other00", "app", principal="x")],
                              audit, UID, CUT)
    assert own == [] and {o["id"] for o in others} == {"AllGrant1", "G2other00"}
    assert all("never touched" in o["reason"] for o in others)


def test_app_role_assignments_of_groups_are_left_alone_and_removal_needs_the_setting():
    rows = [{"id": "a1", "principalType": "User", "principalId": UID, "createdDateTime": "2024-05-01T13:00:00Z",
             "resourceId": "r", "appRoleId": "00000000-0000-0000-0000-000000000000"},
            {"id": "a2", "principalType": "User", "principalId": UID, "createdDateTime": "2024-01-01T00:00:00Z"},
            {"id": "a3", "principalType": "User", "principalId": UID},
            {"id": "g1", "principalType": "Group", "principalId": "group", "createdDateTime": "2024-05-01T13:00:00Z"}]
    allowed, groups = plan_app_roles(rows, UID, CUT, may_remove=True)
    assert [(r["id"], r["decision"]) for r in allowed] == [("a1", REMOVE), ("a2", KEEP), ("a3", REVIEW)] and groups == 1
    held, _ = plan_app_roles(rows, UID, CUT, may_remove=False)
    assert held[0]["decision"] == REVIEW and "REMOVE_APP_ROLE_ASSIGNMENTS" in held[0]["reason"]


def test_scopes_are_split_on_whitespace():
    assert scopes_of(" Contacts.ReadWrite openid profile") == ["Contacts.ReadWrite", "openid", "profile"]


# -- the cut-off, shared by every step ------------------------------------------------------------


def test_one_cutoff_for_methods_and_footholds():
    settings = Settings.from_env({"AUTH_METHOD_CUTOFF": "lookback", "AUTH_METHOD_LOOKBACK_HOURS": "10"})
    from datetime import datetime, timezone

    now = datetime(2024, 5, 2, tzinfo=timezone.utc)
    assert cutoff(settings, {"detected_at": "2024-05-01T12:00:00Z"}, now)["at"] == "2024-05-01T02:00:00Z"
    assert after_cutoff("2024-05-01T12:00:00Z", CUT) is True and after_cutoff("2024-05-01T11:59:59Z", CUT) is False
    assert after_cutoff(None, CUT) is None and after_cutoff("soon", CUT) is None


# -- what the SOC reads ----------------------------------------------------------------------------


def test_the_mail_and_status_lists_say_what_was_removed_kept_and_needs_review():
    removed = {"kind": FULL_ACCESS, "mailbox": ADELE, "trustee": "mallory@contoso.com", "granted_at": "2024-05-01T13:00:00Z"}
    kept = {"kind": FULL_ACCESS, "mailbox": ADELE, "trustee": "megan@contoso.com", "granted_at": "2024-01-01T00:00:00Z"}
    grant_removed = {"kind": "oauth2-grant", "id": "G1", "client_app": {"displayName": "Evil Sync"},
                     "resource_app": {"displayName": "Microsoft Graph"}, "scope": "Mail.Read", "consented_at": "2024-05-01T13:00:00Z"}
    rows = {
        "remove-delegates": {"detail": json.dumps({"removed": [removed], "kept": [kept],
                                                   "not_removed": [{**removed, "error": "403 Forbidden"}],
                                                   "unavailable": {"held_send_as": "400 bad"}})},
        "revoke-app-consent": {"detail": json.dumps({"removed": [grant_removed], "review": [],
                                                     "admin_consents": [{"client_app": "Evil Sync", "scope": "Mail.Read",
                                                                         "id": "A1"}]})},
        "clean-mailbox": {"detail": json.dumps({"trusted_senders": {"review": [{"kind": TRUSTED_SENDER, "mailbox": ADELE,
                                                                                "entry": "x.example", "reason": "no event"}]}})},
        "reset-password": {"detail": json.dumps({"sign_in": {"blocked": True, "policy": "until-close", "blocked_at": "t1"}})},
        "close": {"detail": json.dumps({"sign_in": {"restored": True, "at": "t2", "by": "close (until-close)"}})},
    }
    summary = footholds.summary(rows)
    assert "removed FullAccess of mallory@contoso.com on adele@contoso.com, granted 2024-05-01T13:00:00Z" in summary["removed"]
    assert any("consent grant of app 'Evil Sync' to Microsoft Graph (Mail.Read)" in line for line in summary["removed"])
    assert any("sign-in blocked" in line for line in summary["removed"])
    assert any("re-enabled at t2" in line for line in summary["removed"])
    assert summary["kept"] == ["kept FullAccess of megan@contoso.com on adele@contoso.com, granted 2024-01-01T00:00:00Z (before the cut-off)"]
    review = " | ".join(summary["review"])
    assert "NOT REMOVED FullAccess of mallory@contoso.com" in review and "403 Forbidden" in review
    assert "could not read held_send_as" in review and "trusted sender 'x.example'" in review
    assert "admin consent (AllPrincipals) of app 'Evil Sync'" in review and "never touched" in review
