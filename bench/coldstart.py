"""Cold start: a fresh Python process imports function_app and runs the first work end to end.
Prints JSON.

    python -m bench.coldstart [--runs N] [--latency-ms L] [--json]

Azurite and the tenant simulator are started first (they are "Azure", not the worker).
Then, for each run, a new interpreter (``python -m bench.coldstart --child``) is timed:

- import_s: ``import function_app`` (every blueprint, azure-functions, msgraph-sdk, storage SDKs);
- intake_s: the alerts function on one incident request (settings, credential, storage
  clients, queue/table creation on first use, policy, enqueue of the first step);
- first_step_s: the first step's function (evidence snapshot) on the task intake queued:
  first token from the managed-identity endpoint, msgraph-sdk's first request and response
  parse, the first Exchange call, the ledger writes;
- contained_s: the reset-password step after it (sessions revoked);
- cold_first_step_s: process start to first step done (import + intake + first step).

Each function is called exactly as the host calls it: the user function registered on
``function_app.app``, given an ``azure.functions.QueueMessage`` with the decoded body.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


async def _receive(conn: str, queue: str, timeout_s: float = 30.0) -> tuple[str, bytes]:
    from azure.storage.queue.aio import QueueClient

    client = QueueClient.from_connection_string(conn, queue)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            async for message in client.receive_messages(max_messages=1, visibility_timeout=60):
                await client.delete_message(message)
                return message.id, base64.b64decode(message.content)
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    raise TimeoutError(f"nothing arrived on {queue}")


def _child(user_id: str, upn: str) -> dict[str, Any]:
    started = time.perf_counter()
    from azure.functions.queue import QueueMessage  # what the host builds: func.QueueMessage plus dequeue_count

    import function_app  # noqa: F401 - what the worker imports first

    imported = time.perf_counter()
    handlers = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}
    conn = os.environ["AzureWebJobsStorage"]

    from shared.model import IncidentRequest

    body = IncidentRequest(user_id=user_id, user_principal_name=upn, source="manual", alert_ids=("coldstart",),
                           reason="cold start benchmark").to_json().encode()

    async def flow() -> dict[str, float]:
        marks = {}
        await handlers["alerts"](QueueMessage(id="coldstart-alert", body=body, dequeue_count=1))
        marks["intake"] = time.perf_counter()
        for step, mark in (("snapshot", "first_step"), ("reset-password", "contained")):
            queue = f"step-{step}"
            message_id, task = await _receive(conn, queue)
            waited = time.perf_counter()
            await handlers["step_" + step.replace("-", "_")](QueueMessage(id=message_id, body=task, dequeue_count=1))
            marks[mark] = time.perf_counter()
            marks[mark + "_receive"] = waited
        return marks

    marks = asyncio.run(flow())
    receive_first = marks["first_step_receive"] - marks["intake"]
    receive_contain = marks["contained_receive"] - marks["first_step"]
    return {
        "import_s": round(imported - started, 3),
        "intake_s": round(marks["intake"] - imported, 3),
        # the benchmark's own queue read is not the worker's work: leave it out
        "first_step_s": round(marks["first_step"] - marks["first_step_receive"], 3),
        "contained_s": round(marks["contained"] - marks["contained_receive"], 3),
        "cold_first_step_s": round(marks["first_step"] - started - receive_first, 3),
        "cold_contained_s": round(marks["contained"] - started - receive_first - receive_contain, 3),
    }


def _settings(env: dict[str, str]) -> dict[str, str]:
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    return {**os.environ, **sample, **env, "PYTHONPATH": str(REPO)}


def run(runs: int, latency_ms: float, progress) -> dict[str, Any]:
    from localdev.stack import LocalStack

    results = []
    with LocalStack(with_host=False) as stack:
        sim = stack.simulator.client
        users = sim.add_users(runs, prefix="cold", compromised=True)
        if latency_ms:
            sim.set_faults({svc: {"latency_ms": latency_ms} for svc in ("graph", "exo")})
        env = _settings(stack.env)
        for user in users:
            proc = subprocess.run([sys.executable, "-m", "bench.coldstart", "--child", user["id"], user["userPrincipalName"]],
                                  cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"cold start child failed: {proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            progress(f"run {len(results)}: {results[-1]}")
    keys = results[0].keys()
    return {
        "runs": runs,
        "latency_ms": latency_ms,
        **{k: round(statistics.median(r[k] for r in results), 3) for k in keys},
        "max": {k: max(r[k] for r in results) for k in keys},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=100.0, help="added to every Graph / Exchange call")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("USER_ID", "UPN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run(args.runs, args.latency_ms, progress)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
