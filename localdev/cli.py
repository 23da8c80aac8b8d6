"""The local stack's ``responder`` commands: ``responder demo``, ``responder dev``,
``responder token`` and ``responder console-url``.

Registered through the ``breach_responder.cli`` entry point (pyproject.toml), which the
operator CLI (shared/cli.py) loads at start-up: the product never imports localdev. This
module also tells the CLI where a running ``responder dev`` keeps its storage and serves its
API (``.localdev/stack.json``), so ``responder inject|status|approve|reject|storm`` work
against it. ``responder token --as UPN --role ROLE [--role ROLE ...]`` (dev stack only) prints
an access token the local Easy Auth accepts, issued by the stack's tenant simulator for that
dev principal: ``export RESPONDER_TOKEN=$(responder token --as you@contoso.onmicrosoft.com
--role Incident.Approve)``.
Heavy imports (the stack, the demo) happen only when a command runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def add_commands(sub: Any) -> None:
    demo = sub.add_parser("demo", help="run the end-to-end demo on the embedded local stack")
    demo.add_argument("--json", action="store_true", help="print a machine-readable summary")
    demo.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for incidents to finish")
    demo.add_argument("--eventhub", metavar="FILE", help="drive the demo from an Event Hub-shaped file "
                      "(e.g. localdev/samples/entra-userriskevents-demo.json) instead of the alerts queue")
    demo.set_defaults(fn=cmd_demo)

    dev = sub.add_parser("dev", help="run the local stack in the foreground until Ctrl-C")
    dev.add_argument("--port", type=int, default=7071, help="local Functions host port (0 = any free port)")
    dev.set_defaults(fn=cmd_dev)

    token = sub.add_parser("token", help="print an operator access token for a dev principal (dev stack only)")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--as", dest="upn", metavar="UPN", help="the user the token is for (any UPN)")
    who.add_argument("--app", metavar="NAME", help="an application (e.g. a Logic App's managed identity) instead of a user")
    token.add_argument("--role", action="append", default=[], metavar="ROLE",
                       help="an app role: Incident.Submit, Incident.Read, Incident.Approve (repeatable)")
    token.add_argument("--lifetime", type=int, default=3600, help="seconds the token is valid (default 3600)")
    token.set_defaults(fn=cmd_token)

    console = sub.add_parser("console-url", help="print a URL that signs a dev principal in to the console (dev stack only)")
    console.add_argument("--as", dest="upn", metavar="UPN", required=True, help="the user to sign in as (any UPN)")
    console.add_argument("--role", action="append", default=[], metavar="ROLE",
                         help="an app role: Incident.Read, Incident.Approve (repeatable)")
    console.add_argument("--path", default="/api/console", help="where to land after signing in (a path of the host)")
    console.set_defaults(fn=cmd_console_url)


def api_url() -> str | None:
    """The URL of a running ``responder dev``'s local Functions host, or None."""
    from .stack import read_state

    state = read_state()
    return str(state["host_url"]) if state and state.get("host_url") else None


def storage_settings() -> dict[str, str] | None:
    """The app settings of a running ``responder dev`` (its storage included), or None."""
    from .stack import read_state

    state = read_state()
    if state is None:
        return None
    return {**state.get("settings", {}), "AzureWebJobsStorage": state["storage"]}


def cmd_dev(args: argparse.Namespace) -> int:
    from .stack import LocalStack

    stack = LocalStack(host_port=args.port)
    with stack:
        stack.write_state()
        info = stack.describe()
        print(f"local stack running (Ctrl-C to stop)\n  functions  {info['host_url']}/api\n  console    {info['console_url']}\n"
              f"  simulator  {info['simulator_url']}\n"
              f"  state file .localdev/stack.json\n  try: responder inject --user adele.vance@contoso.onmicrosoft.com && responder status\n"
              f"  operator token: export RESPONDER_TOKEN=$(responder token --as you@contoso.onmicrosoft.com --role Incident.Approve)\n"
              f"  console sign-in: responder console-url --as you@contoso.onmicrosoft.com --role Incident.Read --role Incident.Approve",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


# A sign-in link is a short-lived, single-use token (the local Easy Auth refuses longer ones):
# it is not a credential to keep, and it is never a long-lived token in a URL.
CONSOLE_LOGIN_LIFETIME_S = 120


def console_login_url(host_url: str, simulator_url: str, upn: str, roles: list[str], path: str = "/api/console") -> str:
    """A URL of the local host that signs ``upn`` in (a session cookie) and opens ``path``."""
    from urllib.parse import urlencode

    from .simulator.client import SimulatorClient

    token = SimulatorClient(simulator_url).operator_token(upn, roles, lifetime_s=CONSOLE_LOGIN_LIFETIME_S)
    return f"{host_url}/.auth/login/dev?" + urlencode({"token": token, "post_login_redirect_uri": path})


def cmd_console_url(args: argparse.Namespace) -> int:
    from shared.principal import Role

    from .simulator.client import SimulatorError
    from .stack import read_state

    state = read_state()
    if state is None or not state.get("simulator_url"):
        print("responder: no running `responder dev` (console sign-in links exist on the local stack only; in Azure "
              "open https://<app>/api/console/signin)", file=sys.stderr)
        return 2
    known = {r.value for r in Role}
    unknown = [r for r in args.role if r not in known]
    if unknown or not args.path.startswith("/") or args.path.startswith("//"):
        print(f"responder: unknown role(s) {', '.join(unknown)} or a path that is not a path of the host", file=sys.stderr)
        return 2
    try:
        print(console_login_url(state["host_url"], state["simulator_url"], args.upn, args.role, args.path))
    except SimulatorError as exc:
        print(f"responder: the simulator refused: {exc.body}", file=sys.stderr)
        return 2
    print(f"(valid for {CONSOLE_LOGIN_LIFETIME_S} s, once)", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(json_output=args.json, timeout_s=args.timeout, eventhub_file=args.eventhub)


def cmd_token(args: argparse.Namespace) -> int:
    from shared.principal import Role

    from .simulator.client import SimulatorClient, SimulatorError
    from .stack import read_state

    state = read_state()
    if state is None or not state.get("simulator_url"):
        print("responder: no running `responder dev` (tokens are issued by the local stack's tenant simulator only)",
              file=sys.stderr)
        return 2
    known = {r.value for r in Role}
    unknown = [r for r in args.role if r not in known]
    if unknown:
        print(f"responder: unknown role(s) {', '.join(unknown)} (the app's roles: {', '.join(sorted(known))})",
              file=sys.stderr)
        return 2
    try:
        token = SimulatorClient(state["simulator_url"]).operator_token(args.upn, args.role, app=args.app,
                                                                       lifetime_s=args.lifetime)
    except SimulatorError as exc:
        print(f"responder: the simulator refused: {exc.body}", file=sys.stderr)
        return 2
    print(token)
    return 0
