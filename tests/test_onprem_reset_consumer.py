"""The sample hybrid-worker consumer of ONPREM_RESET_QUEUE (tools/onprem_reset_consumer.py): it reads
what reset-password hands off, through real Azurite, and builds a reset that takes the account and
domain as arguments (never spliced into the script); bad input is refused."""
from __future__ import annotations

import importlib.util
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from shared.adapters.queues import QueueSender
from shared.adapters.storage import build_storage
from shared.model import MessageError, OnPremResetRequest

SPEC = importlib.util.spec_from_file_location("onprem_reset_consumer",
                                              Path(__file__).resolve().parents[1] / "tools" / "onprem_reset_consumer.py")
consumer = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(consumer)


def request(**kw) -> OnPremResetRequest:
    fields = {"incident_id": "inc-0123456789abcdef0123", "user_id": "79c7b19a-9920-5bf4-93ba-0f40c64d7d9f",
              "user_principal_name": "synced.user@contoso.onmicrosoft.com", "on_premises_sam_account_name": "syncuser",
              "on_premises_domain_name": "corp.contoso.com", "reason": "Entra refused the cloud password reset"}
    fields.update(kw)
    return OnPremResetRequest(**fields)


def test_the_reset_takes_the_account_and_domain_as_arguments():
    _, argv, text = consumer.command_for(request().to_json())
    assert argv[-2:] == ["syncuser", "corp.contoso.com"]
    assert "syncuser" not in argv[-3] and "corp.contoso.com" not in argv[-3]
    assert "ChangePasswordAtLogon" in argv[-3] and "corp.contoso.com\\syncuser" in text


def test_a_federated_user_is_reported_not_reset():
    _, argv, text = consumer.command_for(request(on_premises_sam_account_name="", on_premises_domain_name="").to_json())
    assert argv is None and "identity provider" in text


@pytest.mark.parametrize("sam,domain", [("x; Remove-Item C:\\ -Recurse", "corp.contoso.com"),
                                        ("syncuser", "corp.contoso.com; calc"), ("a" * 21, "corp.contoso.com")])
def test_an_account_or_domain_that_is_not_one_is_refused(sam, domain):
    with pytest.raises(MessageError):
        consumer.command_for(request(on_premises_sam_account_name=sam, on_premises_domain_name=domain).to_json())


async def test_the_consumer_reads_what_the_app_puts_on_the_queue(azurite):
    clients = build_storage({"AzureWebJobsStorage": azurite.connection_string})
    try:
        await QueueSender(clients.queues).send("onprem-reset-test", request().to_json())
    finally:
        await clients.close()
    out = io.StringIO()
    with redirect_stdout(out):
        code = consumer.main(["--connection-string", azurite.connection_string, "--queue", "onprem-reset-test"])
    assert code == 0
    assert "reset corp.contoso.com\\syncuser" in out.getvalue() and "would run: pwsh" in out.getvalue()
