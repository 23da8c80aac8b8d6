"""The app's queue sends over REST (shared/adapters/queues.QueueEndpoint) against Azurite: what the SDK
would have stored, byte for byte (base64 bodies, stored text as it is), the message id the service
gave, a delayed message invisible until its time, a queue created by its first message, and the
endpoint chosen as the SDK client is authorized (key, identity, or the SDK alone for a SAS)."""
from __future__ import annotations

import base64
import time
import uuid

import pytest
from azure.core.credentials import AccessToken
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueServiceClient

from shared.adapters.queues import QueueSender, queue_endpoint_of
from shared.adapters.storagerest import SharedKey, TokenAuth

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture
async def senders(azurite):
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    rest = queue_endpoint_of(service)
    assert rest is not None
    yield service, QueueSender(service, rest=rest), QueueSender(service)
    await rest.close()
    await service.close()


def name() -> str:
    return "qs" + uuid.uuid4().hex[:20]


async def test_a_body_sent_over_rest_is_stored_as_the_sdk_stores_it(senders):
    service, rest_sender, sdk_sender = senders
    queue = name()
    await sdk_sender.ensure([queue])
    body = '{"version": 1, "step": "close", "note": "<&> \'quoted\' — ü"}'
    sent_id = await rest_sender.send(queue, body)
    await sdk_sender.send(queue, body)
    stored = await rest_sender.peek(queue, 32)
    assert [m.text for m in stored] == [body, body]
    assert stored[0].content == stored[1].content == base64.b64encode(body.encode()).decode()
    decoding = service.get_queue_client(queue, message_decode_policy=TextBase64DecodePolicy())
    received = [m async for m in decoding.receive_messages(max_messages=32)]
    assert sent_id in {m.id for m in received} and {m.content for m in received} == {body}


async def test_stored_text_goes_as_it_is_and_a_delayed_message_waits(senders):
    _, rest_sender, _ = senders
    queue = name()
    await rest_sender.send_stored(queue, "not base64 <text>")  # the queue does not exist yet: created
    [kept] = await rest_sender.peek(queue, 32)
    assert kept.content == "not base64 <text>"
    await rest_sender.send(queue, "later", visibility_timeout=600)
    assert await rest_sender.approximate_count(queue) == 2
    assert [m.content for m in await rest_sender.peek(queue, 32)] == ["not base64 <text>"]  # the other waits


class _Credential:
    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        return AccessToken("t", int(time.time()) + 3600)


def test_the_endpoint_follows_how_the_sdk_client_is_authorized():
    keyed = QueueServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURITE_KEY};EndpointSuffix=core.windows.net")
    endpoint = queue_endpoint_of(keyed)
    assert endpoint is not None and isinstance(endpoint.auth, SharedKey)
    assert endpoint.url == "https://acct.queue.core.windows.net"
    identity = QueueServiceClient("https://acct.queue.core.windows.net", credential=_Credential())
    endpoint = queue_endpoint_of(identity)
    assert endpoint is not None and isinstance(endpoint.auth, TokenAuth)
    sas = QueueServiceClient.from_connection_string(
        "QueueEndpoint=https://acct.queue.core.windows.net/;SharedAccessSignature=sv=2020-08-04&sig=abc")
    assert queue_endpoint_of(sas) is None
