"""``responder``: the operator CLI (also ``python -m shared.cli``).

  responder inject --user UPN_OR_ID  put an incident request on the alerts queue
  responder status [INCIDENT_ID] [--json]
  responder approve INCIDENT_ID      approve a held incident (as the signed-in principal)
  responder reject INCIDENT_ID --reason TEXT   end a held incident without changes
  responder storm status|reset       the storm breaker; reset it (recorded with who did it)
  responder enable-sign-in INCIDENT_ID   re-enable an account the incident blocked (BLOCK_SIGN_IN)
  responder undo INCIDENT_ID [--confirm-forwarding ADDR ...] [--yes]   reverse a false positive
  responder ingest FILE [--source S] [--dry-run] [--json]   ingest an alert payload file
  responder score [--json] [--days N] [--svg FILE]          Secure Score trend, sparkline, chart
  responder poison list|replay QUEUE [--id ID] [--json]    poison messages with their reason; replay them

Plugins add commands: every ``breach_responder.cli`` entry point (see ``CliPlugin``) is
loaded at start-up. The local stack registers ``responder demo`` and ``responder dev`` that
way (localdev/cli.py), so the product never imports dev tooling.

Storage comes from AzureWebJobsStorage (or the identity-based settings) when set, else from
a plugin that knows one (a running ``responder dev``). Clients are built by
shared/bootstrap.py, like the worker's.

Decisions (approve, reject, storm, enable-sign-in, undo) go through the app's HTTP API as a signed-in principal, so
the app checks the role and records who decided: ``RESPONDER_API_URL`` (the function app's URL;
a running ``responder dev`` provides its own), and a token: ``RESPONDER_TOKEN`` when set (locally:
``responder token --as UPN --role Incident.Approve``), else the developer's Azure CLI sign-in for
``RESPONDER_API_SCOPE`` (``api://<client id>/.default``, azd output ``RESPONDER_API_SCOPE``).
Exit codes: 0 ok, 1 the run/incident/decision failed, 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, Sequence, TypeVar

from .errors import ConfigError
from .model import IncidentRequest, MessageError
from .states import IncidentState
from .validation import ValidationError, is_guid

logger = logging.getLogger(__name__)

PLUGIN_GROUP = "breach_responder.cli"
T = TypeVar("T")

if TYPE_CHECKING:  # typing only: the adapters are imported when a command needs storage
    from .bootstrap import Storage


class CliError(Exception):
    """A one-line reason for stderr; exit code 2."""


class CliPlugin(Protocol):
    """What a ``breach_responder.cli`` entry point provides (a module or an object)."""

    def add_commands(self, sub: Any) -> None:
        """Add sub-commands to the ``responder`` sub-parsers (each sets ``fn``)."""

    def storage_settings(self) -> dict[str, str] | None:
        """App settings of a storage this plugin knows (e.g. a running local stack), or None."""

    def api_url(self) -> str | None:
        """The base URL of an app this plugin runs (e.g. the local stack's host), or None."""


def load_plugins() -> list[CliPlugin]:
    plugins: list[CliPlugin] = []
    for point in sorted(entry_points(group=PLUGIN_GROUP), key=lambda p: p.name):
        try:
            plugins.append(point.load())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the operator CLI down
            logger.warning("responder plugin %s could not be loaded: %s", point.name, exc.__class__.__name__)
    return plugins


# -- storage access ------------------------------------------------------------------------


def _storage_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.get("AzureWebJobsStorage") or env.get("AzureWebJobsStorage__queueServiceUri"):
        return env
    for plugin in load_plugins():
        settings = plugin.storage_settings()
        if settings:
            return {**env, **settings}
    raise CliError(
        "no storage configured: set AzureWebJobsStorage (or the identity-based settings), "
        "or start the local stack with `responder dev`"
    )


async def _with_storage(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    from azure.core.exceptions import ServiceRequestError

    from .bootstrap import open_storage

    env = _storage_env()
    storage = open_storage(env)
    try:
        return await fn(storage, env, *args)
    except ServiceRequestError as exc:
        raise CliError(f"storage is not reachable ({exc.__class__.__name__}); is the local stack running?") from None
    finally:
        await storage.close()


def _request_for(user: str, risk: str = "high", alert_ids: Sequence[str] = (), reason: str = "") -> IncidentRequest:
    try:
        if is_guid(user):
            return IncidentRequest(user_id=user, user_principal_name=None, source="manual", risk_level=risk,
                                   alert_ids=tuple(alert_ids), reason=reason or "manual injection")
        return IncidentRequest(user_id=None, user_principal_name=user, source="manual", risk_level=risk,
                               alert_ids=tuple(alert_ids), reason=reason or "manual injection")
    except (MessageError, ValidationError) as exc:
        raise CliError(str(exc)) from None


# -- rendering -------------------------------------------------------------------------------


def _summary(step: dict[str, Any]) -> str:
    detail = step.get("detail") or {}
    if step.get("error"):
        return step["error"]
    if isinstance(detail, dict):
        return str(detail.get("summary") or detail.get("reason") or "")
    return ""


def render_incident(view: dict[str, Any]) -> str:
    lines = [
        f"incident {view['incident_id']}  user {view.get('user')}  state {view.get('state')}"
        + (f"  ({view.get('held_reason')})" if view.get("state") == IncidentState.HELD and view.get("held_reason") else "")
        + (f"  stopped at {view.get('stopped_at')}: {view.get('stop_reason')}" if view.get("state") == IncidentState.FAILED else "")
    ]
    # What needs a person comes first (on-premises password reset, held containment).
    if view.get("action_required"):
        lines.append(f"  ACTION REQUIRED - {view['action_required']}")
    if view.get("state") == IncidentState.HELD and view.get("held_containment"):
        lines.append(f"  held; containment: {view['held_containment']}")
    if view.get("protection"):
        lines.append(f"  {view['protection']}")
    who = []
    if view.get("submitted_by"):
        who.append(f"submitted by {view['submitted_by'].get('upn') or view['submitted_by'].get('object_id')}")
    if view.get("approvals") or view.get("state") == IncidentState.HELD:
        names = ", ".join(a.get("upn") or a.get("object_id", "?") for a in view.get("approvals", [])) or "none"
        who.append(f"approvals {len(view.get('approvals', []))}/{view.get('approvals_required') or 1}: {names}")
    if view.get("rejected_by"):
        who.append(f"rejected by {view['rejected_by'].get('upn')}: {view.get('reject_reason', '')}")
    if who:
        lines.append("  " + "; ".join(who))
    if view.get("sign_in_action"):
        lines.append(f"  ACTION REQUIRED - {view['sign_in_action']}")
    found = view.get("footholds") or {}
    if found.get("review"):
        lines.append("  for review:")
        lines += [f"    - {line}" for line in found["review"]]
    if found.get("removed"):
        lines.append("  removed:")
        lines += [f"    - {line}" for line in found["removed"]]
    if found.get("kept"):
        lines.append("  kept:")
        lines += [f"    - {line}" for line in found["kept"]]
    lines.append(f"  {'step':<20}{'state':<11}{'tries':>5}{'ms':>8}  detail")
    for step in view.get("steps", []):
        lines.append(
            f"  {step['name']:<20}{step['state']:<11}{step.get('attempts', 0):>5}{step.get('duration_ms', 0):>8}  {_summary(step)[:90]}"
        )
    return "\n".join(lines)


def compact(view: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": view["incident_id"],
        "user": view.get("user"),
        "state": view.get("state"),
        "steps": [{"name": s["name"], "state": s["state"]} for s in view.get("steps", [])],
    }
    for key in ("held_reason", "held_containment", "action_required", "stopped_at", "stop_reason", "final_risk_state",
                "protection", "approvals", "approvals_required", "submitted_by", "rejected_by", "sign_in", "sign_in_action"):
        if view.get(key):
            out[key] = view[key]
    found = view.get("footholds") or {}
    if any(found.values()):
        out["footholds"] = found
    return out


# -- commands --------------------------------------------------------------------------------


def _alerts_queue(env: dict[str, str]) -> str:
    return env.get("ALERTS_QUEUE", "alerts")


async def _inject(storage: Storage, env: dict[str, str], request: IncidentRequest) -> str:
    queue = _alerts_queue(env)
    await storage.queues.ensure([queue])
    return await storage.queues.send(queue, request.to_json())


async def _status(storage: Storage, env: dict[str, str], incident_id: str | None) -> Any:
    from .status import incident_view, list_views

    await storage.ledger.ensure()
    if incident_id:
        return await incident_view(storage.ledger, incident_id)
    return await list_views(storage.ledger)


def cmd_inject(args: argparse.Namespace) -> int:
    request = _request_for(args.user, args.risk, args.alert_id or [], args.reason or "")
    message_id = asyncio.run(_with_storage(_inject, request))
    out = {"queued": True, "message_id": message_id, "request": request.to_dict()}
    print(json.dumps(out) if args.json else f"queued incident request for {request.user_key} (message {message_id})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    result = asyncio.run(_with_storage(_status, args.incident_id))
    if args.incident_id and result is None:
        raise CliError(f"no incident {args.incident_id}")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    views = [result] if args.incident_id else result
    if not views:
        print("no incidents")
    for view in views:
        print(render_incident(view))
    return 0


# -- the HTTP API (decisions are made as a signed-in principal) -----------------------------


def _api_url() -> str:
    url = os.environ.get("RESPONDER_API_URL", "").strip()
    if not url:
        url = next((u for u in (plugin.api_url() for plugin in load_plugins()) if u), "")
    if not url:
        raise CliError("no app to talk to: set RESPONDER_API_URL (azd output FUNCTION_APP_URL) or start `responder dev`")
    return url.rstrip("/")


def _token() -> str:
    token = os.environ.get("RESPONDER_TOKEN", "").strip()
    if token:
        return token
    scope = os.environ.get("RESPONDER_API_SCOPE", "").strip()
    if not scope:
        raise CliError("not signed in: set RESPONDER_TOKEN (locally: `responder token --as UPN --role Incident.Approve`) "
                       "or RESPONDER_API_SCOPE (api://<client id>/.default) to use your Azure CLI sign-in")
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential

    try:
        credential = DefaultAzureCredential(exclude_managed_identity_credential=True)
        return credential.get_token(scope).token
    except ClientAuthenticationError as exc:
        raise CliError(f"could not sign in for {scope}: {str(exc).splitlines()[0][:200]} (run `az login`)") from None


def call_api(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One call to the app's API with the operator's bearer token: (status, JSON body)."""
    import urllib.error
    import urllib.request

    url = _api_url() + path
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {_token()}", "Content-Type": "application/json", "Accept": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}) if url.startswith("http://127.0.0.1")
                                         or url.startswith("http://localhost") else urllib.request.ProxyHandler())
    try:
        with opener.open(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach {url.split('?')[0]}: {getattr(exc, 'reason', exc)}") from None
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        payload = {"error": raw.decode("utf-8", "replace")[:200]}
    return status, payload if isinstance(payload, dict) else {"value": payload}


def _decision(status: int, payload: dict[str, Any], incident_id: str) -> int:
    if status in (401, 403) and "outcome" not in payload:
        print(f"{incident_id}: refused ({status}): {payload.get('error', '')}")
        return 1
    outcome = payload.get("outcome", f"HTTP {status}")
    line = f"{incident_id}: {outcome}"
    if payload.get("approvals_required"):
        who = ", ".join(a.get("upn", "?") for a in payload.get("approvals", []))
        line += f" ({len(payload.get('approvals', []))} of {payload['approvals_required']} approvals: {who})"
    if payload.get("reason") or payload.get("error"):
        line += f" - {payload.get('reason') or payload.get('error')}"
    print(line)
    return 0 if outcome in ("approved", "approval-recorded", "rejected") else 1


def cmd_approve(args: argparse.Namespace) -> int:
    status, payload = call_api("POST", f"/api/incidents/{args.incident_id}/approve")
    return _decision(status, payload, args.incident_id)


def cmd_reject(args: argparse.Namespace) -> int:
    status, payload = call_api("POST", f"/api/incidents/{args.incident_id}/reject", {"reason": args.reason})
    return _decision(status, payload, args.incident_id)


def cmd_storm(args: argparse.Namespace) -> int:
    status, payload = call_api("GET", "/api/storm") if args.action == "status" else call_api("POST", "/api/storm/reset")
    if status != 200:
        print(f"storm {args.action}: refused ({status}): {payload.get('error', '')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    state = "TRIPPED" if payload.get("tripped") else "not tripped"
    print(f"storm breaker {state}: {payload.get('incidents_in_window')} new incident(s) in the last "
          f"{payload.get('window_minutes')} min (threshold {payload.get('threshold')}) {payload.get('by_source') or ''}")
    if payload.get("tripped"):
        print(f"  tripped at {payload.get('tripped_at')}: {payload.get('reason')}")
    if payload.get("last_reset_by"):
        print(f"  last reset by {payload['last_reset_by'].get('upn')} at {payload.get('last_reset_at')}")
    return 0


def cmd_enable_sign_in(args: argparse.Namespace) -> int:
    """Through the API as the signed-in principal (Incident.Approve): the app queues the operator
    task for the worker, which holds the managed identity, and records who asked."""
    if not (args.incident_id.startswith("inc-") and args.incident_id[4:].isalnum() and len(args.incident_id) <= 64):
        raise CliError(f"malformed incident id {args.incident_id[:70]!r}")
    status, payload = call_api("POST", f"/api/incidents/{args.incident_id}/enable-sign-in")
    outcome = payload.get("outcome") or f"refused ({status})"
    reason = payload.get("reason") or payload.get("error") or ""
    if args.json:
        print(json.dumps({"incident_id": args.incident_id, "outcome": outcome, "reason": reason}))
    else:
        print(f"{args.incident_id}: {outcome}" + (f" ({reason})" if reason else "")
              + (" - the worker re-enables the account and records it on the incident" if outcome == "queued" else ""))
    return 0 if outcome == "queued" else 1


def cmd_undo(args: argparse.Namespace) -> int:
    """Show what an undo would reverse (GET .../undo), have each cleared forwarding address confirmed one
    by one (``--confirm-forwarding ADDR`` or an interactive y/N), then ask the app (POST .../undo)."""
    if not (args.incident_id.startswith("inc-") and args.incident_id[4:].isalnum() and len(args.incident_id) <= 64):
        raise CliError(f"malformed incident id {args.incident_id[:70]!r}")
    status, offer = call_api("GET", f"/api/incidents/{args.incident_id}/undo")
    if status != 200:
        print(f"{args.incident_id}: refused ({status}): {offer.get('error', '')}", file=sys.stderr)
        return 1
    if not offer.get("possible"):
        print(f"{args.incident_id}: nothing to undo - {offer.get('reason')}")
        return 1
    print(f"Undo {args.incident_id} (false positive) reverses:")
    for line in offer.get("reversals") or []:
        print(f"  - {line}")
    print("Not undone:")
    for line in offer.get("not_undone") or []:
        print(f"  - {line}")
    confirmed = []
    given = {a.lower() for a in args.confirm_forwarding}
    interactive = sys.stdin.isatty() and not args.yes
    for address in offer.get("forwarding") or []:
        if address.lower() in given:
            confirmed.append(address)
        elif interactive and input(f"Restore mailbox forwarding to {address}? [y/N] ").strip().lower() in ("y", "yes"):
            confirmed.append(address)
        else:
            print(f"  forwarding to {address}: NOT restored (not confirmed)")
    if interactive and input("Go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
        print("nothing done")
        return 1
    if not interactive and not args.yes:
        raise CliError("not a terminal: pass --yes (and --confirm-forwarding ADDR for each address to restore)")
    status, payload = call_api("POST", f"/api/incidents/{args.incident_id}/undo", {"confirm_forwarding": confirmed})
    outcome = payload.get("outcome") or f"refused ({status})"
    reason = payload.get("reason") or payload.get("error") or ""
    print(f"{args.incident_id}: {outcome}" + (f" ({reason})" if reason else "")
          + (" - the worker reverses each change; `responder status` shows the undo rows" if outcome == "queued" else ""))
    return 0 if outcome == "queued" else 1


INGEST_SOURCES = ("auto", "entra-diagnostics", "defender-stream", "graph-riskyusers", "graph-alerts", "manual")


def _request_row(request: IncidentRequest) -> dict[str, Any]:
    data = request.to_dict()
    return {k: data[k] for k in ("user_id", "user_principal_name", "source", "risk_level", "alert_ids", "detected_at", "reason")}


async def _ingest(storage: Storage, env: dict[str, str], payload: bytes, source: str) -> Any:
    from .bootstrap import operator_deps
    from .ingest import ingest_payload
    from .settings import Settings

    await storage.ledger.ensure()
    await storage.queues.ensure([_alerts_queue(env)])
    deps = operator_deps(storage, Settings.from_env(env))
    report = await ingest_payload(deps, payload, source=source, where="cli-ingest")
    return report.as_dict()


def cmd_ingest(args: argparse.Namespace) -> int:
    from .normalize import PayloadError, parse_payload
    from .settings import Settings

    try:
        with open(args.file, "rb") as handle:
            payload = handle.read()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    if args.dry_run:
        settings = Settings.from_env()
        try:
            parsed = parse_payload(payload, args.source, min_risk_level=settings.min_risk_level)
        except PayloadError as exc:
            raise CliError(f"{args.file}: {exc}") from None
        rows = [_request_row(r) for r in parsed.requests]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['user_principal_name'] or row['user_id']}  {row['source']}  {row['risk_level']}  {row['detected_at']}  {','.join(row['alert_ids'])}")
        for bad in parsed.rejected:
            print(f"rejected record {bad.index}: {bad.reason}", file=sys.stderr)
        return 0
    try:
        report = asyncio.run(_with_storage(_ingest, payload, args.source))
    except PayloadError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    print(json.dumps(report) if args.json else
          f"ingested: {report['incidents']}; rejected {report['rejected']}, ignored {report['ignored']}, pending {report['pending']}")
    return 0


def cmd_poison(args: argparse.Namespace) -> int:
    """``responder poison list|replay QUEUE [--id ID] [--json]``."""
    from .poison import UnknownQueueError, check_queue, list_poison, render_listing, replay

    alerts = _alerts_queue(_storage_env())
    try:
        check_queue(args.queue, alerts)
    except UnknownQueueError as exc:
        raise CliError(str(exc)) from None

    async def listing(storage: Storage, env: dict[str, str]) -> list[dict[str, Any]]:
        return await list_poison(storage.ledger, storage.queues, args.queue, alerts)

    async def put_back(storage: Storage, env: dict[str, str]) -> list[str]:
        return await replay(storage.queues, args.queue, args.id, alerts)

    if args.action == "list":
        entries = asyncio.run(_with_storage(listing))
        print(json.dumps(entries, indent=2) if args.json else render_listing(args.queue, entries))
        return 0
    try:
        ids = asyncio.run(_with_storage(put_back))
    except LookupError as exc:
        raise CliError(str(exc.args[0] if exc.args else exc)) from None
    if args.json:
        print(json.dumps({"queue": args.queue, "replayed": ids}))
    elif ids:
        print(f"replayed {len(ids)} message(s) from {args.queue}-poison onto {args.queue}: {', '.join(ids)}")
    else:
        print(f"{args.queue}-poison is empty: nothing to replay")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="responder", description="Breach Responder operator CLI")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    inject = sub.add_parser("inject", help="queue an incident request for a user (manual injection)")
    inject.add_argument("--user", required=True, help="UPN or Entra object id")
    inject.add_argument("--risk", default="high", choices=("low", "medium", "high", "unknown", "none"))
    inject.add_argument("--alert-id", action="append", help="alert id to attach (repeatable)")
    inject.add_argument("--reason", help="short reason recorded on the incident")
    inject.add_argument("--json", action="store_true")
    inject.set_defaults(fn=cmd_inject)

    status = sub.add_parser("status", help="show incidents and their step ledger")
    status.add_argument("incident_id", nargs="?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(fn=cmd_status)

    ingest = sub.add_parser("ingest", help="ingest an alert payload file (Event Hub, Graph or manual shape)")
    ingest.add_argument("file")
    ingest.add_argument("--source", default="auto", choices=INGEST_SOURCES)
    ingest.add_argument("--dry-run", action="store_true", help="parse only: touch no queue or table")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(fn=cmd_ingest)

    from .securescore.cli import add_score_command

    add_score_command(sub, _storage_env)

    poison = sub.add_parser("poison", help="show poison messages with their reason, or replay them")
    poison.add_argument("action", choices=("list", "replay"))
    poison.add_argument("queue", help="the source queue: alerts or step-<name> (not the -poison queue)")
    poison.add_argument("--id", help="replay only this poison message id (see `poison list`)")
    poison.add_argument("--json", action="store_true")
    poison.set_defaults(fn=cmd_poison)

    approve = sub.add_parser("approve", help="approve a held incident (as the signed-in principal)")
    approve.add_argument("incident_id")
    approve.set_defaults(fn=cmd_approve)

    reject = sub.add_parser("reject", help="end a held incident without any change")
    reject.add_argument("incident_id")
    reject.add_argument("--reason", required=True, help="why (recorded on the incident)")
    reject.set_defaults(fn=cmd_reject)

    storm = sub.add_parser("storm", help="the storm breaker: status, or reset it")
    storm.add_argument("action", choices=("status", "reset"))
    storm.add_argument("--json", action="store_true")
    storm.set_defaults(fn=cmd_storm)

    enable = sub.add_parser("enable-sign-in", help="re-enable an account the incident blocked (BLOCK_SIGN_IN)")
    enable.add_argument("incident_id")
    enable.add_argument("--json", action="store_true")
    enable.set_defaults(fn=cmd_enable_sign_in)

    undo = sub.add_parser("undo", help="reverse a false positive's changes (as the signed-in principal)")
    undo.add_argument("incident_id")
    undo.add_argument("--confirm-forwarding", action="append", default=[], metavar="ADDR",
                      help="restore mailbox forwarding to this address (repeat for each; others are not restored)")
    undo.add_argument("--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)")
    undo.set_defaults(fn=cmd_undo)

    for plugin in load_plugins():
        plugin.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except (CliError, ConfigError) as exc:
        print(f"responder: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
