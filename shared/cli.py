"""``responder``: the operator CLI (also ``python -m shared.cli``).

  responder demo [--json]            run the embedded local stack end to end and report
  responder dev                      run the local stack in the foreground until Ctrl-C
  responder inject --user UPN_OR_ID  put an incident request on the alerts queue
  responder status [INCIDENT_ID] [--json]
  responder approve INCIDENT_ID      release a held incident
  responder ingest FILE [--source S] [--dry-run] [--json]   ingest an alert payload file
  responder score [--json] [--days N] [--svg FILE]          Secure Score trend, sparkline, chart
  responder poison list|replay QUEUE [--id ID] [--json]    poison messages with their reason; replay them

Storage comes from AzureWebJobsStorage (or the identity-based settings) when set, else
from a running ``responder dev``. Exit codes: 0 ok, 1 the run/incident failed, 2 usage or
configuration error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any, Sequence

from .errors import ConfigError
from .model import IncidentRequest, MessageError
from .validation import ValidationError, is_guid

logger = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "dry-run")


class CliError(Exception):
    """A one-line reason for stderr; exit code 2."""


# -- storage access ------------------------------------------------------------------------


def _storage_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.get("AzureWebJobsStorage") or env.get("AzureWebJobsStorage__queueServiceUri"):
        return env
    from localdev.stack import read_state  # dev tooling: only needed when no storage is configured

    state = read_state()
    if state is None:
        raise CliError(
            "no storage configured: set AzureWebJobsStorage (or the identity-based settings), "
            "or start the local stack with `responder dev`"
        )
    env.update(state.get("settings", {}))
    env["AzureWebJobsStorage"] = state["storage"]
    return env


class _Store:
    """Ledger + queue sender over the configured storage, for CLI commands."""

    def __init__(self, env: dict[str, str]) -> None:
        from .adapters.ledger import Ledger
        from .adapters.queues import QueueSender
        from .adapters.storage import build_storage

        credential = None
        if not env.get("AzureWebJobsStorage"):
            from .adapters.credentials import build_credential

            credential = build_credential()
        self.clients = build_storage(env, credential=credential)
        self.ledger = Ledger(self.clients.tables)
        self.queues = QueueSender(self.clients.queues)
        self.alerts_queue = env.get("ALERTS_QUEUE", "alerts")

    async def close(self) -> None:
        await self.clients.close()


async def _with_store(fn, *args):
    store = _Store(_storage_env())
    try:
        return await fn(store, *args)
    except Exception as exc:
        from azure.core.exceptions import ServiceRequestError

        if isinstance(exc, ServiceRequestError):
            raise CliError(f"storage is not reachable ({exc.__class__.__name__}); is the local stack running?") from None
        raise
    finally:
        await store.close()


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
        + (f"  ({view.get('held_reason')})" if view.get("state") == "held" and view.get("held_reason") else "")
        + (f"  stopped at {view.get('stopped_at')}: {view.get('stop_reason')}" if view.get("state") == "failed" else "")
    ]
    # What needs a person comes first (on-premises password reset, held containment).
    if view.get("action_required"):
        lines.append(f"  ACTION REQUIRED - {view['action_required']}")
    if view.get("state") == "held" and view.get("held_containment"):
        lines.append(f"  held; containment: {view['held_containment']}")
    lines.append(f"  {'step':<16}{'state':<11}{'tries':>5}{'ms':>8}  detail")
    for step in view.get("steps", []):
        lines.append(
            f"  {step['name']:<16}{step['state']:<11}{step.get('attempts', 0):>5}{step.get('duration_ms', 0):>8}  {_summary(step)[:90]}"
        )
    return "\n".join(lines)


def compact(view: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": view["incident_id"],
        "user": view.get("user"),
        "state": view.get("state"),
        "steps": [{"name": s["name"], "state": s["state"]} for s in view.get("steps", [])],
    }
    for key in ("held_reason", "held_containment", "action_required", "stopped_at", "stop_reason", "final_risk_state"):
        if view.get(key):
            out[key] = view[key]
    return out


# -- commands --------------------------------------------------------------------------------


async def _inject(store: _Store, request: IncidentRequest) -> str:
    await store.queues.ensure([store.alerts_queue])
    return await store.queues.send(store.alerts_queue, request.to_json())


async def _status(store: _Store, incident_id: str | None) -> Any:
    from .status import incident_view, list_views

    await store.ledger.ensure()
    if incident_id:
        return await incident_view(store.ledger, incident_id)
    return await list_views(store.ledger)


async def _approve(store: _Store, incident_id: str) -> Any:
    from .deps import Deps
    from .intake import approve
    from .settings import Settings

    deps = Deps(settings=Settings.from_env({**os.environ, "RESPONDER_MODE": "auto"}), ledger=store.ledger, queues=store.queues, graph=None)
    return await approve(deps, incident_id, approved_by=os.environ.get("USER", "cli"))


def cmd_inject(args: argparse.Namespace) -> int:
    request = _request_for(args.user, args.risk, args.alert_id or [], args.reason or "")
    message_id = asyncio.run(_with_store(_inject, request))
    out = {"queued": True, "message_id": message_id, "request": request.to_dict()}
    print(json.dumps(out) if args.json else f"queued incident request for {request.user_key} (message {message_id})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    result = asyncio.run(_with_store(_status, args.incident_id))
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


def cmd_approve(args: argparse.Namespace) -> int:
    result = asyncio.run(_with_store(_approve, args.incident_id))
    print(f"{args.incident_id}: {result.outcome}" + (f" ({result.reason})" if result.reason else ""))
    return 0 if result.outcome == "approved" else 1


INGEST_SOURCES = ("auto", "entra-diagnostics", "defender-stream", "graph-riskyusers", "graph-alerts", "manual")


def _request_row(request: IncidentRequest) -> dict[str, Any]:
    data = request.to_dict()
    return {k: data[k] for k in ("user_id", "user_principal_name", "source", "risk_level", "alert_ids", "detected_at", "reason")}


async def _ingest(store: _Store, payload: bytes, source: str) -> Any:
    from .deps import Deps
    from .ingest import DefenderPending, ingest_payload
    from .settings import Settings

    await store.ledger.ensure()
    await store.queues.ensure([store.alerts_queue])
    settings = Settings.from_env(_storage_env())
    deps = Deps(settings=settings, ledger=store.ledger, queues=store.queues, graph=None)
    report = await ingest_payload(deps, payload, source=source, where="cli-ingest",
                                  pending=DefenderPending(store.ledger.t["defenderpending"]))
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
        report = asyncio.run(_with_store(_ingest, payload, args.source))
    except PayloadError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    print(json.dumps(report) if args.json else
          f"ingested: {report['incidents']}; rejected {report['rejected']}, ignored {report['ignored']}, pending {report['pending']}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from localdev.stack import LocalStack

    stack = LocalStack(host_port=args.port)
    with stack:
        stack.write_state()
        info = stack.describe()
        print(f"local stack running (Ctrl-C to stop)\n  functions  {info['host_url']}/api\n  simulator  {info['simulator_url']}\n"
              f"  state file .localdev/stack.json\n  try: responder inject --user adele.vance@contoso.onmicrosoft.com && responder status",
              flush=True)
        try:
            while True:
                import time

                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from localdev.demo import run_demo

    return run_demo(json_output=args.json, timeout_s=args.timeout, eventhub_file=args.eventhub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="responder", description="Breach Responder operator CLI")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the end-to-end demo on the embedded local stack")
    demo.add_argument("--json", action="store_true", help="print a machine-readable summary")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for incidents to finish")
    demo.add_argument("--eventhub", metavar="FILE", help="drive the demo from an Event Hub-shaped file "
                      "(e.g. localdev/samples/entra-userriskevents-demo.json) instead of the alerts queue")
    demo.set_defaults(fn=cmd_demo)

    dev = sub.add_parser("dev", help="run the local stack in the foreground until Ctrl-C")
    dev.add_argument("--port", type=int, default=7071, help="local Functions host port (0 = any free port)")
    dev.set_defaults(fn=cmd_dev)

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

    from .poison import add_poison_command

    add_poison_command(sub)

    approve = sub.add_parser("approve", help="approve a held incident")
    approve.add_argument("incident_id")
    approve.set_defaults(fn=cmd_approve)
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
