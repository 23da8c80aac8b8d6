"""The local host's REST queue plumbing (localdev/host/restqueue.py) against Azurite: the same answers
as the SDK client it replaces (``StorageQueue``), Shared Key signing Azurite accepts, errors as the SDK
raises them, and no key or message text in an error."""
from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue.aio import QueueServiceClient

from localdev.host.queues import StorageQueue
from localdev.host.restqueue import QueueAccount, RestQueue, account_of

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture
async def service(azurite):
    client = QueueServiceClient.from_connection_string(azurite.connection_string)
    yield client
    await client.close()


def queue_name() -> str:
    return "rq" + uuid.uuid4().hex[:20]


@pytest.fixture
async def queue(service):
    """A fresh queue: the SDK client, the REST client over the same account, and its name."""
    name = queue_name()
    client = service.get_queue_client(name)
    account = account_of(client)
    assert account is not None
    yield client, RestQueue(account, client.url, name)
    await client.delete_queue()
    await account.close()


async def test_rest_queue_round_trip_matches_the_sdk_client(queue):
    client, rest = queue
    sdk = StorageQueue(client)
    await rest.ensure()
    rest._ensured = False
    await rest.ensure()  # an existing queue is fine
    text = "eyJ2ZXJzaW9uIjogMX0= <&> 'quoted' \"double\""
    await rest.send(text)
    [got] = await rest.receive(32, 30)
    assert got.content == text and got.dequeue_count == 1 and got.pop_receipt and got.id
    assert got.inserted_on is not None and got.expires_on > got.inserted_on and got.next_visible_on > got.inserted_on
    assert await rest.receive(32, 30) == []  # invisible while leased
    receipt = await rest.set_visibility(got.id, got.pop_receipt, 0)
    assert receipt and receipt != got.pop_receipt
    # The SDK client sees the same message, with the dequeue count the service keeps.
    [seen] = await sdk.receive(32, 30)
    assert (seen.id, seen.content, seen.dequeue_count) == (got.id, text, 2)
    await rest.delete(seen.id, seen.pop_receipt)
    with pytest.raises(ResourceNotFoundError) as gone:
        await rest.delete(seen.id, seen.pop_receipt)
    assert gone.value.status_code == 404 and gone.value.error_code == "MessageNotFound"
    # What the SDK sends, the REST client receives byte for byte.
    await sdk.send("from the sdk")
    [other] = await rest.receive(1, 30)
    assert other.content == "from the sdk"


async def test_a_batch_is_received_whole_up_to_the_asked_number(queue):
    _, rest = queue
    await rest.ensure()
    for i in range(5):
        await rest.send(f"m{i}")
    first = await rest.receive(3, 30)
    rest_of_them = await rest.receive(32, 30)
    assert len(first) == 3 and len(rest_of_them) == 2
    assert sorted(m.content for m in first + rest_of_them) == [f"m{i}" for i in range(5)]


async def test_a_wrong_key_is_refused_and_the_error_carries_neither_key_nor_text(service):
    name = queue_name()
    client = service.get_queue_client(name)
    wrong = QueueAccount(client.account_name, "d3Jvbmcta2V5LXdyb25nLWtleQ==", client.api_version)
    try:
        with pytest.raises(HttpResponseError) as refused:
            await RestQueue(wrong, client.url, name).send("secret text")
        assert refused.value.status_code == 403 and refused.value.error_code == "AuthenticationFailed"
        assert "secret text" not in str(refused.value) and "d3Jvbmc" not in str(refused.value)
    finally:
        await wrong.close()


def test_a_sas_connection_keeps_the_sdk_client():
    sas = QueueServiceClient.from_connection_string(
        "QueueEndpoint=https://acct.queue.core.windows.net/;SharedAccessSignature=sv=2020-08-04&sig=abc")
    assert account_of(sas.get_queue_client("q")) is None
    keyed = QueueServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURITE_KEY};EndpointSuffix=core.windows.net")
    assert account_of(keyed.get_queue_client("q")) is not None


def test_the_signature_is_the_documented_shared_key_string():
    # String-to-sign of the Blob/Queue/File services (learn.microsoft.com, "Authorize with Shared Key"):
    # verb, eleven standard headers (Content-Length empty when 0), x-ms-* headers sorted, then
    # /account/path and each query parameter as "\nname:value", names lower-cased and sorted.
    account = QueueAccount("devstoreaccount1", AZURITE_KEY, "2021-12-02")
    headers = {"x-ms-version": "2021-12-02", "x-ms-date": "Wed, 02 Dec 2026 15:00:00 GMT", "Content-Length": "0",
               "Content-Type": "application/xml; charset=utf-8"}
    url = "http://127.0.0.1:10001/devstoreaccount1/q/messages/id1?popreceipt=AB%2Fc%3D&visibilitytimeout=30"
    expected = ("PUT\n\n\n\n\napplication/xml; charset=utf-8\n\n\n\n\n\n\n"
                "x-ms-date:Wed, 02 Dec 2026 15:00:00 GMT\nx-ms-version:2021-12-02\n"
                "/devstoreaccount1/devstoreaccount1/q/messages/id1\npopreceipt:AB/c=\nvisibilitytimeout:30")
    digest = hmac.new(base64.b64decode(AZURITE_KEY), expected.encode(), hashlib.sha256).digest()
    assert account.sign("PUT", url, headers) == "SharedKey devstoreaccount1:" + base64.b64encode(digest).decode()
