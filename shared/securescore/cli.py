"""``responder score [--json] [--days N] [--svg FILE]``: the stored Secure Score trend.

Prints one line per stored day (date, score/max, %, day-over-day delta, regressions marked)
and a sparkline, or the trend as JSON (``{"days", "latest", "regressions", "stored_days"}``);
``--svg FILE`` also writes the chart. Reads the configured storage: Azure, or the local
emulator. When the storage endpoint is on this machine and nothing listens there, it says
so in one line and exits 2 instead of waiting through the SDK's retries.

Wiring into the operator CLI (``shared/cli.py``) is one call::

    add_score_command(sub, _storage_env)

Storage clients come from shared/bootstrap.py (``open_storage``), like every other command's.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TextIO
from urllib.parse import urlsplit

from azure.core.exceptions import ServiceRequestError

from ..errors import ConfigError
from .chart import render_trend_svg, sparkline
from .service import trend

if TYPE_CHECKING:  # the adapters are imported when the command runs, not when the CLI starts
    from ..bootstrap import Storage

logger = logging.getLogger(__name__)

DEFAULT_DAYS = 30


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_listening(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def emulator_down(table_url: str) -> str | None:
    """A one-line reason when the table endpoint is local and nothing listens; else None."""
    parts = urlsplit(table_url or "")
    host = parts.hostname
    if host is None or not is_loopback(host):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if is_listening(host, port):
        return None
    return (
        f"the local storage emulator at {host}:{port} is not running "
        "(start the local stack with `responder dev`, or run Azurite)"
    )


def _fmt(value: Any, spec: str = "g") -> str:
    return "-" if value is None else format(value, spec)


def render_table(data: Mapping[str, Any]) -> str:
    rows = data.get("days") or []
    if not rows:
        return "no Secure Score snapshots stored yet (the daily timer, or `responder dev` at start-up, takes them)"
    findings = {f["date"]: f for f in data.get("regressions") or []}
    lines = [
        f"Secure Score: {len(rows)} day(s) shown of {data.get('stored_days', len(rows))} stored",
        f"{'date':<12}{'score / max':>20}{'%':>8}{'delta':>9}",
    ]
    for row in rows:
        score = f"{_fmt(row.get('current'))} / {_fmt(row.get('max'))}"
        pct = f"{row['percentage']:.1f}%" if row.get("percentage") is not None else "-"
        delta = "" if row.get("delta") is None else ("0" if abs(row["delta"]) < 0.005 else f"{row['delta']:+g}")
        mark = ""
        finding = findings.get(row["date"])
        if finding:
            mark = "  ! regression: " + "; ".join(finding.get("reasons") or [])
        elif row.get("regression"):
            mark = "  ! regression"
        lines.append(f"{row['date']:<12}{score:>20}{pct:>8}{delta:>9}{mark}")
    pcts = [row.get("percentage") for row in rows]
    known = [p for p in pcts if p is not None]
    span = f"  {known[0]:.1f}% -> {known[-1]:.1f}%" if known else ""
    lines += ["", f"trend  {sparkline(pcts)}{span}"]
    latest = data.get("latest") or {}
    if latest:
        changes = latest.get("changes") or []
        text = ", ".join(f"{c['control']} {c['before']:g}->{c['after']:g} ({c['delta']:+g})" for c in changes[:6])
        if len(changes) > 6:
            text += f", ... {len(changes) - 6} more"
        since = latest.get("compared_with")
        lines.append(
            f"latest {latest['date']}: {_fmt(latest.get('current'))} / {_fmt(latest.get('max'))}"
            + (f"; control changes since {since}: {text or 'none'}" if since else "")
        )
    if findings:
        lines.append(f"regressions in this window: {len(findings)}")
        for finding in findings.values():
            fell = ", ".join(f"{c['control']} {c['before']:g}->{c['after']:g}" for c in (finding.get("controls") or [])[:5])
            lines.append(f"  {finding['date']}  {finding['delta']:+g} points" + (f"  {fell}" if fell else ""))
    return "\n".join(lines)


async def _load(storage: Storage, days: int) -> dict[str, Any]:
    try:
        return await trend(storage.scores, days)
    finally:
        await storage.close()


def run_score(
    env: Mapping[str, str],
    *,
    json_output: bool = False,
    days: int = DEFAULT_DAYS,
    svg: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the trend from the storage ``env`` names; exit code 0 ok, 2 storage unreachable
    or bad arguments."""
    out = out or sys.stdout
    err = err or sys.stderr
    if days < 1:
        print("responder: --days must be at least 1", file=err)
        return 2
    from ..bootstrap import open_storage

    try:
        storage = open_storage(env)
    except ConfigError as exc:
        print(f"responder: {exc}", file=err)
        return 2
    down = emulator_down(storage.table_url)
    if down:
        asyncio.run(storage.close())
        print(f"responder: {down}", file=err)
        return 2
    try:
        data = asyncio.run(_load(storage, days))
    except ServiceRequestError as exc:
        print(f"responder: storage is not reachable at {urlsplit(storage.table_url).netloc} ({exc.__class__.__name__})", file=err)
        return 2
    if svg:
        path = Path(svg)
        try:
            path.write_text(render_trend_svg(data), encoding="utf-8")
        except OSError as exc:
            print(f"responder: cannot write {svg}: {exc.strerror or exc}", file=err)
            return 2
        print(f"chart written to {path} ({len(data['days'])} day(s))", file=err if json_output else out)
    if json_output:
        print(json.dumps(data, indent=2), file=out)
    else:
        print(render_table(data), file=out)
    return 0


def add_score_command(sub: Any, storage_env: Callable[[], Mapping[str, str]]) -> argparse.ArgumentParser:
    """Register ``score`` on the operator CLI's subparsers; ``storage_env`` is shared/cli's
    ``_storage_env`` (it raises the CLI's one-line error when no storage is configured)."""
    parser = sub.add_parser("score", help="Secure Score trend: table with sparkline, --json, --svg FILE")
    parser.add_argument("--json", action="store_true", help="print the trend as JSON")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"how many stored days (default {DEFAULT_DAYS})")
    parser.add_argument("--svg", metavar="FILE", help="also write the chart as SVG to FILE")

    def cmd_score(args: argparse.Namespace) -> int:
        return run_score(storage_env(), json_output=args.json, days=args.days, svg=args.svg)

    parser.set_defaults(fn=cmd_score)
    return parser
