"""The local stack's ``responder`` commands: ``responder demo`` and ``responder dev``.

Registered through the ``breach_responder.cli`` entry point (pyproject.toml), which the
operator CLI (shared/cli.py) loads at start-up: the product never imports localdev. This
module also tells the CLI where a running ``responder dev`` keeps its storage
(``.localdev/stack.json``), so ``responder inject|status|approve`` work against it.
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
        print(f"local stack running (Ctrl-C to stop)\n  functions  {info['host_url']}/api\n  simulator  {info['simulator_url']}\n"
              f"  state file .localdev/stack.json\n  try: responder inject --user adele.vance@contoso.onmicrosoft.com && responder status",
              flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(json_output=args.json, timeout_s=args.timeout, eventhub_file=args.eventhub)
