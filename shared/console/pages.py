"""The console's HTML, rendered on the server from the operator read models (pure: no I/O).

Readable without JavaScript (static/console.js only refreshes the list and submits the state filter),
keyboard-usable (real links, buttons and form controls in document order; a skip link; visible focus
in console.css) and labelled for screen readers (landmarks, captions, ``<th scope>``, labels, an
``aria-live`` status). Every value that reaches the page is escaped here: incident data is
attacker-influenced (rule names, forwarding addresses, alert ids, reasons, display names). No inline
script or style anywhere: the Content-Security-Policy (functions/console.py) forbids both.
"""
from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urlencode

from ..timestamps import parse_timestamp
from .csrf import FIELD

ROOT = "/api/console"
STATES = ("held", "queued", "running", "succeeded", "failed", "dry-run", "rejected", "expired", "new")
REFRESH_SECONDS = 15  # how often the list refreshes itself (?refresh=N: 2..300)
NO_ROWS = '<tr><td colspan="{}">{}</td></tr>'
# Outcome codes a form post redirects with (?msg=): fixed texts, never the request's own words.
MESSAGES = {
    "approved": "Approved: the incident is released and runs now.",
    "approval-recorded": "Your approval is recorded; a different approver must also approve.",
    "rejected": "Rejected: the incident ended without any change.",
    "forbidden": "Refused: the submitter of an incident cannot approve it.",
    "already-approved": "You already approved this incident; a different approver is needed.",
    "not-held": "Nothing to approve or reject: the incident is not held.",
    "expired": "The incident had been held too long and expired without changes.",
    "not-found": "No such incident.",
    "undo-queued": "Undo requested: the worker reverses the changes now; each reversal appears below.",
    "undo-refused": "Undo refused (see the reason on the page).",
    "reason-required": "A reason is required to reject.",
    "csrf": "Refused: the form's security token was missing or wrong. Reload the page and try again.",
}


def e(value: Any) -> str:
    """Escape for HTML text and double-quoted attributes."""
    if value is None:
        return ""
    return html.escape(str(value), quote=True)


def incident_href(incident_id: str) -> str:
    return f"{ROOT}/incidents/{quote(str(incident_id), safe='')}"


def age(created_at: str | None, now: datetime) -> str:
    try:
        seconds = int((now - parse_timestamp(created_at or "")).total_seconds())
    except ValueError:
        return "?"
    if seconds < 90:
        return f"{max(seconds, 0)} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 36 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _badge(state: Any) -> str:
    return f'<span class="badge state-{e(state)}">{e(state)}</span>'


def layout(title: str, body: str, *, who: str = "", roles: Iterable[str] = (), refresh: int = 0) -> str:
    signed_in = ""
    if who:
        signed_in = (f'<p class="who">Signed in as <strong>{e(who)}</strong> ({e(", ".join(sorted(roles)) or "no role")}) '
                     f'· <a href="/.auth/logout?post_logout_redirect_uri={quote(ROOT + "/signin", safe="")}">Sign out</a></p>')
    body_attrs = f' data-refresh="{int(refresh)}"' if refresh else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{e(title)} · Breach Responder</title>"
        f"<link rel=\"stylesheet\" href=\"{ROOT}/static/console.css\">"
        f"<script src=\"{ROOT}/static/console.js\" defer></script></head>"
        f"<body{body_attrs}>"
        "<a class=\"skip\" href=\"#main\">Skip to content</a>"
        f"<header><p class=\"brand\"><a href=\"{ROOT}\">Breach Responder</a></p>"
        f"<nav aria-label=\"Console\"><ul><li><a href=\"{ROOT}\">Incidents</a></li>"
        f"<li><a href=\"{ROOT}?state=held\">Held</a></li><li><a href=\"{ROOT}#secure-score\">Secure Score</a></li></ul></nav>"
        f"{signed_in}</header>"
        f"<main id=\"main\" tabindex=\"-1\">{body}</main></body></html>\n"
    )


# -- the incidents list -------------------------------------------------------------------------------

def incidents_page(views: list[dict[str, Any]], *, state: str, now: datetime, who: str, roles: Iterable[str],
                   score: Mapping[str, Any] | None = None, refresh: int = REFRESH_SECONDS) -> str:
    rows = []
    for view in sorted(views, key=lambda v: str(v.get("created_at") or ""), reverse=True):
        why = view.get("held_reason") if view.get("state") == "held" else (view.get("stop_reason") or "")
        rows.append(
            "<tr>"
            f"<td>{_badge(view.get('state'))}</td>"
            f"<th scope=\"row\"><a href=\"{incident_href(view['incident_id'])}\">{e(view.get('user'))}</a>"
            f"<br><span class=\"muted\">{e(view.get('incident_id'))}</span></th>"
            f"<td>{e(view.get('source'))}</td><td>{e(view.get('risk_level'))}</td>"
            f"<td><time datetime=\"{e(view.get('created_at'))}\">{e(age(view.get('created_at'), now))}</time></td>"
            f"<td>{e(why)}</td></tr>")
    options = "".join(f"<option value=\"{e(s)}\"{' selected' if s == state else ''}>{e(s)}</option>" for s in STATES)
    table = ("<table id=\"incidents\"><caption>Incidents"
             + (f" in state {e(state)}" if state else "") + f" ({len(rows)})</caption>"
             "<thead><tr><th scope=\"col\">State</th><th scope=\"col\">User</th><th scope=\"col\">Source</th>"
             "<th scope=\"col\">Risk</th><th scope=\"col\">Age</th><th scope=\"col\">Why held / why stopped</th></tr></thead>"
             f"<tbody>{''.join(rows) or NO_ROWS.format(6, 'No incidents.')}</tbody></table>")
    body = (
        "<h1>Incidents</h1>"
        f"<form method=\"get\" action=\"{ROOT}\" class=\"filter\"><label for=\"state\">Show state</label> "
        f"<select id=\"state\" name=\"state\"><option value=\"\">all</option>{options}</select> "
        "<button type=\"submit\">Filter</button></form>"
        f"<p id=\"refresh-status\" class=\"muted\" role=\"status\" aria-live=\"polite\">Updated {e(now.strftime('%H:%M:%S'))} UTC."
        f" <a href=\"{ROOT}{'?' + urlencode({'state': state}) if state else ''}\">Reload</a></p>"
        f"{table}{score_section(score)}"
    )
    return layout("Incidents", body, who=who, roles=roles, refresh=refresh)


def score_section(score: Mapping[str, Any] | None) -> str:
    if score is None:
        return ""
    latest = score.get("latest") or {}
    regressions = score.get("regressions") or []
    rows = "".join(
        f"<tr><th scope=\"row\">{e(r.get('date'))}</th><td>{e(r.get('previous_score'))} → {e(r.get('score'))} "
        f"({e(r.get('delta'))})</td><td>{e('; '.join(str(x) for x in r.get('reasons') or []))}</td>"
        f"<td>{e(', '.join(str(c.get('control')) for c in (r.get('controls') or [])[:8]))}</td></tr>"
        for r in regressions)
    summary = (f"<p>Latest: <strong>{e(latest.get('current'))}</strong> of {e(latest.get('max'))} "
               f"({e(latest.get('percentage'))} %) on {e(latest.get('date'))}.</p>" if latest else "<p>No score stored yet.</p>")
    return (
        "<section id=\"secure-score\" aria-labelledby=\"score-h\"><h2 id=\"score-h\">Secure Score</h2>"
        f"{summary}<img class=\"chart\" src=\"/api/securescore/chart.svg?days=90\" width=\"900\" height=\"320\" "
        "alt=\"Secure Score percentage over the last 90 days; regression days are marked red and listed below.\">"
        "<table><caption>Regressions</caption><thead><tr><th scope=\"col\">Day</th><th scope=\"col\">Score</th>"
        "<th scope=\"col\">Why</th><th scope=\"col\">Controls that fell</th></tr></thead>"
        f"<tbody>{rows or NO_ROWS.format(4, 'None in this window.')}</tbody></table></section>")


# -- one incident ---------------------------------------------------------------------------------------

def _dl(pairs: Iterable[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs if v not in (None, "", []))
    return f"<dl>{items}</dl>" if items else ""


def _json_block(data: Any) -> str:
    return f"<pre>{e(json.dumps(data, indent=2, default=str, ensure_ascii=False)[:20000])}</pre>"


def _list(items: Iterable[Any], empty: str = "") -> str:
    items = [i for i in items if i not in (None, "")]
    if not items:
        return f"<p class=\"muted\">{e(empty)}</p>" if empty else ""
    return "<ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>"


def _ms(value: Any) -> str:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return ""
    return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def timeline(steps: list[dict[str, Any]]) -> str:
    rows = []
    for step in steps:
        detail = step.get("detail") or {}
        outcome = step.get("error") or detail.get("summary") or detail.get("reason") or ""
        rows.append(f"<tr><th scope=\"row\">{e(step.get('name'))}</th><td>{_badge(step.get('state'))}</td>"
                    f"<td>{e(step.get('attempts', ''))}</td><td>{e(step.get('started_at', ''))}</td>"
                    f"<td>{e(_ms(step.get('duration_ms')) if step.get('finished_at') else '')}</td><td>{e(outcome)}</td></tr>")
    return ("<table id=\"timeline\"><caption>Timeline: every step of the playbook</caption><thead><tr>"
            "<th scope=\"col\">Step</th><th scope=\"col\">State</th><th scope=\"col\">Attempts</th>"
            "<th scope=\"col\">Started</th><th scope=\"col\">Duration</th><th scope=\"col\">Outcome</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _rule_line(rule: Mapping[str, Any]) -> str:
    before = rule.get("before") or {}
    actions = before.get("actions")
    what = f"rule '{rule.get('name')}' ({', '.join(str(r) for r in rule.get('reasons') or [])}) via {rule.get('via')}"
    return what + (f"; actions before: {json.dumps(actions, default=str)[:400]}" if actions else "")


def changes(view: Mapping[str, Any]) -> str:
    """What the responder changed, step by step, from the ledger's details."""
    steps = {s["name"]: (s.get("detail") or {}) for s in view.get("steps") or []}
    parts: list[str] = []
    reset = steps.get("reset-password") or {}
    if reset:
        parts.append("<h3>Account</h3>" + _dl([
            ("password", reset.get("password_reset")), ("sessions revoked", reset.get("sessions_revoked")),
            ("risk confirmed compromised", reset.get("risk_confirmed")),
            ("sign-in block", (reset.get("sign_in") or {}).get("state") or (reset.get("sign_in") or {}).get("reason")),
            ("refusal", reset.get("refusal"))]))
    mfa = steps.get("enforce-mfa") or {}
    if mfa:
        removed = [f"{m.get('type')} '{m.get('displayName')}' registered {m.get('createdDateTime')}" for m in
                   mfa.get("removed_methods") or []]
        review = [f"{m.get('type')} {m.get('id')} '{m.get('name')}': {m.get('reason')}" for m in mfa.get("kept_for_review") or []]
        parts.append("<h3>MFA and authentication methods</h3>" + _dl([("MFA", mfa.get("mfa")),
                                                                     ("cut-off", (mfa.get("cutoff") or {}).get("at"))])
                     + "<h4>Removed methods</h4>" + _list(removed, "none")
                     + ("<h4>Kept for review</h4>" + _list(review) if review else ""))
    mailbox = steps.get("clean-mailbox") or {}
    if mailbox:
        forwarding = mailbox.get("forwarding") or {}
        before = forwarding.get("before") or {}
        cleared = (f"cleared (was {before.get('ForwardingSmtpAddress') or before.get('ForwardingAddress')}, "
                   f"deliver and forward {before.get('DeliverToMailboxAndForward')})" if forwarding.get("cleared")
                   else forwarding.get("note") or "not cleared")
        parts.append("<h3>Mailbox</h3>" + "<h4>Disabled inbox rules</h4>"
                     + _list([_rule_line(r) for r in mailbox.get("disabled_rules") or []], "none")
                     + _dl([("forwarding", cleared),
                            ("Outlook client-side rules", (mailbox.get("client_side_rules") or {}).get("note"))]))
    footholds = view.get("footholds") or {}
    if any(footholds.get(k) for k in ("removed", "kept", "review")):
        parts.append("<h3>Delegates, consents and trusted senders</h3><h4>Removed</h4>" + _list(footholds.get("removed") or [], "none")
                     + "<h4>Kept (dated before the compromise)</h4>" + _list(footholds.get("kept") or [], "none")
                     + "<h4>For review</h4>" + _list(footholds.get("review") or [], "none"))
    unblock = steps.get("unblock-sender") or {}
    if unblock:
        parts.append("<h3>Restricted senders</h3>" + _dl([("unblock", unblock.get("summary") or unblock.get("reason")),
                                                         ("entry", json.dumps(unblock.get("entry"), default=str)
                                                          if unblock.get("entry") else "")]))
    audit = steps.get("mailbox-audit") or {}
    if audit:
        parts.append("<h3>Mailbox audit</h3>" + _dl([("fixed", ", ".join(audit.get("fixed") or []) or "nothing"),
                                                    ("findings", "; ".join(audit.get("findings") or []))]))
    recovery = steps.get("recovery-pass") or {}
    if recovery:
        parts.append("<h3>Recovery hand-off</h3>" + _dl([
            ("Temporary Access Pass", recovery.get("recovery")), ("mailed to", recovery.get("to")),
            ("via", recovery.get("via")), ("expires", recovery.get("expires_at")), ("note", recovery.get("fallback"))]))
    close = steps.get("close") or {}
    if close:
        parts.append("<h3>Close</h3>" + _dl([("final risk", close.get("final_risk_state")),
                                            ("SOC mailed", close.get("notified")), ("risk error", close.get("risk_error"))]))
    return "".join(parts) or "<p class=\"muted\">Nothing changed (yet).</p>"


def snapshot_section(evidence: Mapping[str, Any]) -> str:
    if not evidence:
        return "<p class=\"muted\">No snapshot stored.</p>"
    return "".join(f"<details><summary>{e(name)}</summary>{_json_block(data)}</details>"
                   for name, data in sorted(evidence.items()))


def manual_actions(view: Mapping[str, Any]) -> list[str]:
    items = [view.get("action_required"), view.get("sign_in_action"), view.get("risk_error") and
             f"Identity Protection: {view.get('risk_error')}"]
    for step in view.get("steps") or []:
        detail = step.get("detail") or {}
        action = detail.get("action_required")
        if action and action != view.get("action_required"):
            items.append(action)
        for method in detail.get("kept_for_review") or []:  # enforce-mfa: methods a person must look at
            items.append(f"review {method.get('type')} {method.get('id')} '{method.get('name') or ''}': {method.get('reason')}")
    items += (view.get("footholds") or {}).get("review") or []
    return [str(i) for i in items if i]


def _form(incident_id: str, action: str, csrf: str, inner: str, label: str) -> str:
    return (f"<form method=\"post\" action=\"{incident_href(incident_id)}/{action}\" class=\"action\">"
            f"<input type=\"hidden\" name=\"{FIELD}\" value=\"{e(csrf)}\">{inner}"
            f"<button type=\"submit\" name=\"do\" value=\"{e(action)}\">{e(label)}</button></form>")


def decision_forms(view: Mapping[str, Any], *, oid: str, can_approve: bool, csrf: str, undo: Mapping[str, Any] | None) -> str:
    """The buttons a principal with Incident.Approve may use on this incident (a reader gets '')."""
    if not can_approve:
        return ""
    incident_id = str(view["incident_id"])
    submitter = (view.get("submitted_by") or {}).get("object_id") == oid and bool(oid)
    parts = []
    if view.get("state") == "held":
        approved = any(a.get("object_id") == oid for a in view.get("approvals") or [])
        if submitter:
            parts.append("<p>You submitted this incident: someone else must approve it.</p>")
        elif approved:
            parts.append("<p>You approved this incident; it needs a different approver.</p>")
        else:
            parts.append(_form(incident_id, "approve", csrf, "", "Approve"))
        reason = ("<label for=\"reason\">Reason for rejecting</label>"
                  "<textarea id=\"reason\" name=\"reason\" rows=\"2\" maxlength=\"500\" required></textarea>")
        parts.append(_form(incident_id, "reject", csrf, reason, "Reject (no change)"))
    if undo is not None and undo.get("possible"):
        if submitter:
            parts.append("<p>You submitted this incident: someone else must undo it.</p>")
        else:
            boxes = "".join(
                f"<div><input type=\"checkbox\" id=\"fwd-{i}\" name=\"forwarding\" value=\"{e(addr)}\">"
                f"<label for=\"fwd-{i}\">Restore forwarding to {e(addr)}</label></div>"
                for i, addr in enumerate(undo.get("forwarding") or []))
            items = "".join(f"<li>{e(x)}</li>" for x in undo.get("reversals") or [])
            never = "".join(f"<li>{e(x)}</li>" for x in undo.get("not_undone") or [])
            inner = ("<details><summary>What an undo reverses (a false positive), and what it does not</summary>"
                     f"<p>Reversed, each as a ledger row:</p><ul>{items}</ul>"
                     f"<p>Not undone:</p><ul>{never}</ul></details>"
                     + (f"<fieldset><legend>Forwarding: restore only addresses you confirm</legend>{boxes}</fieldset>"
                        if boxes else ""))
            parts.append(_form(incident_id, "undo", csrf, inner, "Undo (false positive)"))
    elif undo is not None and undo.get("reason"):
        parts.append(f"<p class=\"muted\">Undo: {e(undo['reason'])}</p>")
    if not parts:
        return ""
    return f"<section aria-labelledby=\"act-h\" class=\"actions\"><h2 id=\"act-h\">Decide</h2>{''.join(parts)}</section>"


def incident_page(view: Mapping[str, Any], *, evidence: Mapping[str, Any], who: str, oid: str, roles: Iterable[str],
                  can_approve: bool, csrf: str, message: str = "", undo: Mapping[str, Any] | None = None) -> str:
    incident_id = str(view["incident_id"])
    note = MESSAGES.get(message, "")
    flash = f"<p class=\"flash\" role=\"status\">{e(note)}</p>" if note else ""
    approvals = view.get("approvals") or []
    needed = view.get("approvals_required")
    approval_rows = "".join(f"<li>{e(a.get('upn'))} at <time>{e(a.get('at'))}</time></li>" for a in approvals)
    submitted = view.get("submitted_by") or {}
    actions = manual_actions(view)
    undo_rows = view.get("undo") or []
    body = (
        f"<h1>{e(view.get('user'))} {_badge(view.get('state'))}</h1>{flash}"
        + _dl([("incident", incident_id), ("display name", view.get("display_name")), ("object id", view.get("user_id")),
               ("created", view.get("created_at")), ("finished", view.get("finished_at")), ("mode", view.get("mode")),
               ("protection", view.get("protection")), ("why held", view.get("held_reason") if view.get("state") == "held" else ""),
               ("stopped at", view.get("stopped_at")), ("why stopped", view.get("stop_reason")),
               ("rejected because", view.get("reject_reason"))])
        + decision_forms(view, oid=oid, can_approve=can_approve, csrf=csrf, undo=undo)
        + ("<section aria-labelledby=\"manual-h\" class=\"manual\"><h2 id=\"manual-h\">Manual actions required</h2>"
           + _list(actions) + "</section>" if actions else "")
        + "<section aria-labelledby=\"alerts-h\"><h2 id=\"alerts-h\">What opened it</h2>"
        + _dl([("source", view.get("source")), ("risk", view.get("risk_level")), ("reason", view.get("reason")),
               ("detected", view.get("detected_at")), ("submitted by", submitted.get("upn") or view.get("submitted_via"))])
        + "<h3>Alerts</h3>" + _list(view.get("alert_ids") or [], "no alert ids") + "</section>"
        + "<section aria-labelledby=\"approvals-h\"><h2 id=\"approvals-h\">Approvals</h2>"
        + (f"<p>{len(approvals)} of {e(needed or 1)} needed.</p>" if approvals or needed or view.get("state") == "held"
           else "<p>None needed (not held).</p>")
        + (f"<ul>{approval_rows}</ul>" if approval_rows else "")
        + (f"<p>Rejected by {e((view.get('rejected_by') or {}).get('upn'))} at {e(view.get('rejected_at'))}.</p>"
           if view.get("rejected_by") else "") + "</section>"
        + "<section aria-labelledby=\"timeline-h\"><h2 id=\"timeline-h\">Timeline</h2>" + timeline(view.get("steps") or [])
        + "</section>"
        + "<div class=\"columns\"><section aria-labelledby=\"changes-h\"><h2 id=\"changes-h\">What changed</h2>"
        + changes(view) + "</section><section aria-labelledby=\"before-h\"><h2 id=\"before-h\">Before (snapshot)</h2>"
        + snapshot_section(evidence) + "</section></div>"
        + (("<section aria-labelledby=\"undo-h\"><h2 id=\"undo-h\">Undo</h2>"
            + _list([f"{r.get('name')}: {r.get('state')} {r.get('summary') or r.get('error') or ''}" for r in undo_rows])
            + "</section>") if undo_rows else "")
        + (("<section aria-labelledby=\"notices-h\"><h2 id=\"notices-h\">SOC mails</h2>"
            + _list([f"{k}: {v.get('state')} at {v.get('at')}" for k, v in (view.get("notices") or {}).items()])
            + "</section>") if view.get("notices") else "")
        + f"<p><a href=\"{ROOT}\">All incidents</a></p>"
    )
    return layout(f"Incident {incident_id}", body, who=who, roles=roles)


# -- sign-in and errors -----------------------------------------------------------------------------------

def signin_page(login_url: str) -> str:
    body = ("<h1>Sign in</h1><p>The console shows incidents (personal data) to people holding the "
            "<strong>Incident.Read</strong> app role; approving needs <strong>Incident.Approve</strong>.</p>"
            f"<p><a class=\"button\" href=\"{e(login_url)}\">Sign in with Microsoft Entra ID</a></p>")
    return layout("Sign in", body)


def error_page(status: int, message: str, *, signin: bool = False) -> str:
    link = f"<p><a href=\"{ROOT}/signin\">Sign in</a></p>" if signin else f"<p><a href=\"{ROOT}\">Incidents</a></p>"
    return layout(f"{status}", f"<h1>{e(status)}</h1><p>{e(message)}</p>{link}")
