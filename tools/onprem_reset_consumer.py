#!/usr/bin/env python3
"""Sample consumer of the on-premises password reset hand-off (ONPREM_RESET_QUEUE).

Entra refuses a cloud password reset for users mastered on premises (synced) or at a federation
identity provider; Breach Responder then revokes their sessions, carries on with the playbook and,
when ONPREM_RESET_QUEUE is set, puts one ``breach-responder/onprem-reset`` v1 message per user on
that queue (incident id, object id, UPN, onPremisesSamAccountName, onPremisesDomainName; never a
password). This script is a starting point for a hybrid worker (a domain-joined server with the
ActiveDirectory PowerShell module and PowerShell 7):

    python tools/onprem_reset_consumer.py --connection-string "$AzureWebJobsStorage" [--queue onprem-reset] [--run]

Without ``--run`` it prints, for each message, the PowerShell it would run and leaves the message
on the queue. With ``--run`` it runs it (``pwsh -NoProfile -Command``, the account and domain
passed as arguments, never spliced into the script), and deletes the message only when it
succeeded. The new password is generated inside PowerShell and never leaves it: the user must
change it at next logon and gets it through your help desk process (or a Temporary Access Pass).
Password hash sync then remediates the user's risk in Entra ID Protection.
Federated users (no on-premises account in the message) are reported, not reset: reset them at
the identity provider.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.model import MessageError, OnPremResetRequest  # noqa: E402

SAM = re.compile(r"^[A-Za-z0-9._-]{1,20}$")  # sAMAccountName: at most 20 characters
DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
RESET_SCRIPT = (
    "& { param($sam, $domain) Import-Module ActiveDirectory -ErrorAction Stop; "
    "$chars = [char[]]'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%+-=?@'; "
    "$plain = -join (1..24 | ForEach-Object { $chars | Get-Random }); "
    "Set-ADAccountPassword -Identity $sam -Server $domain -Reset "
    "-NewPassword (ConvertTo-SecureString $plain -AsPlainText -Force) -ErrorAction Stop; "
    "Set-ADUser -Identity $sam -Server $domain -ChangePasswordAtLogon $true -ErrorAction Stop; "
    "Remove-Variable plain }"
)


def command_for(body: str | bytes) -> tuple[OnPremResetRequest, list[str] | None, str]:
    """(the request, the argv that resets it or None, what to tell the operator). Refuses bad input."""
    request = OnPremResetRequest.from_json(body)
    sam, domain = request.on_premises_sam_account_name, request.on_premises_domain_name
    if not sam or not domain:
        return request, None, (f"{request.user_principal_name}: no on-premises account in the message (a federated "
                               "user?): reset the password at the identity provider")
    if not SAM.match(sam) or not DOMAIN.match(domain):
        raise MessageError(f"refusing account {sam!r} in domain {domain!r}: not a valid sAMAccountName / DNS domain")
    argv = ["pwsh", "-NoProfile", "-NonInteractive", "-Command", RESET_SCRIPT, sam, domain]
    return request, argv, f"{request.user_principal_name}: reset {domain}\\{sam} (incident {request.incident_id})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection-string", required=True, help="the storage account's connection string")
    parser.add_argument("--queue", default="onprem-reset")
    parser.add_argument("--run", action="store_true", help="run the reset (default: print it)")
    args = parser.parse_args(argv)
    from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient

    queue = QueueClient.from_connection_string(args.connection_string, args.queue,
                                               message_decode_policy=BinaryBase64DecodePolicy())
    failures = 0
    for message in queue.receive_messages(messages_per_page=16, visibility_timeout=300):
        try:
            _, command, text = command_for(message.content)
        except MessageError as exc:
            print(f"skipped message {message.id}: {exc}", file=sys.stderr)
            failures += 1
            continue
        print(text)
        if command is None or not args.run:
            if command is not None:
                print("  would run: " + " ".join(command[:4]) + " <reset script> " + " ".join(command[5:]))
            continue
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)  # noqa: S603 - no shell
        if result.returncode == 0:
            queue.delete_message(message)
            print("  done")
        else:
            failures += 1
            print(f"  failed ({result.returncode}): {result.stderr.strip()[:500]}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
