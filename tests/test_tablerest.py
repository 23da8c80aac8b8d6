"""The ledger's REST point operations (shared/adapters/tablerest.py) against Azurite: every value reads
back as through the SDK (types, keys with quotes and escapes, metadata), rows written by one read the
same through the other, errors are the SDK's exceptions with status and error code, a wrong key is
refused without leaking it, and the bearer token is fetched once and renewed before it expires."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import datetime, timezone

import pytest
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableServiceClient

from shared.adapters.storagerest import SharedKey, TokenAuth
from shared.adapters.tablerest import RestTable, TableEndpoint, endpoint_of, entity_path

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Keys as the ledger makes them (shared/adapters/ledger.key keeps @.-_+'!~*() and escapes the rest as %XX)
# and a few it never makes: a space, a comma, non-ASCII.
ODD_KEYS = ["adele.vance@contoso.onmicrosoft.com", "o'brien%2Fx", "(a)!~*+", "sp ace,comma", "Zoë-ünïcode"]


@pytest.fixture
async def tables(azurite):
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    name = "rt" + uuid.uuid4().hex[:16]
    await service.create_table(name)
    endpoint = endpoint_of(service)
    assert endpoint is not None
    sdk = service.get_table_client(name)
    yield sdk, RestTable(endpoint, sdk)
    await service.delete_table(name)
    await endpoint.close()
    await service.close()


def row(pk: str, rk: str, **fields) -> dict:
    return {"PartitionKey": pk, "RowKey": rk, **fields}


async def test_a_row_written_over_rest_reads_back_as_the_sdk_reads_it(tables):
    sdk, rest = tables
    when = datetime(2026, 12, 3, 6, 0, 1, 250000, tzinfo=timezone.utc)
    fields = {"state": "running", "attempts": 3, "big": EntityProperty(2**40, EdmType.INT64), "ok": True, "ratio": 0.25, "at": when,
              "blob": b"\x00\x01", "gone": None, "detail": '{"x": "it\'s"}'}
    for i, pk in enumerate(ODD_KEYS):
        meta = await rest.create_entity(row(pk, ODD_KEYS[-1 - i], **fields))
        assert meta["etag"]
        via_sdk = await sdk.get_entity(pk, ODD_KEYS[-1 - i])
        via_rest = await rest.get_entity(pk, ODD_KEYS[-1 - i])
        assert dict(via_rest) == dict(via_sdk)
        assert via_rest.metadata["etag"] == via_sdk.metadata["etag"] == meta["etag"]
        assert via_rest.metadata["timestamp"] == via_sdk.metadata["timestamp"]
        assert via_rest["attempts"] == 3 and via_rest["at"] == when and "gone" not in via_rest
    # And what the SDK writes, the REST client reads.
    await sdk.create_entity(row("sdk", "row", state="held", n=7))
    got = await rest.get_entity("sdk", "row")
    assert (got["state"], got["n"]) == ("held", 7)


async def test_merge_replace_and_upsert_change_what_they_should(tables):
    sdk, rest = tables
    meta = await rest.create_entity(row("p", "r", a="1", b="2"))
    meta = await rest.update_entity(row("p", "r", b="3", c="4"), mode=UpdateMode.MERGE, etag=meta["etag"],
                                    match_condition=MatchConditions.IfNotModified)
    assert {k: v for k, v in (await sdk.get_entity("p", "r")).items()} == row("p", "r", a="1", b="3", c="4")
    await rest.update_entity(row("p", "r", only="this"), mode=UpdateMode.REPLACE)
    assert dict(await sdk.get_entity("p", "r")) == row("p", "r", only="this")
    await rest.upsert_entity(row("p", "new", x="1"))  # insert
    await rest.upsert_entity(row("p", "new", y="2"))  # merge
    assert dict(await sdk.get_entity("p", "new")) == row("p", "new", x="1", y="2")
    await rest.upsert_entity(row("p", "new", z="3"), mode=UpdateMode.REPLACE)
    assert dict(await sdk.get_entity("p", "new")) == row("p", "new", z="3")


async def test_errors_are_the_sdks_exceptions_with_status_and_code(tables):
    _, rest = tables
    first = await rest.create_entity(row("p", "r", v="1"))
    with pytest.raises(ResourceExistsError) as exists:
        await rest.create_entity(row("p", "r", v="2"))
    assert exists.value.status_code == 409 and exists.value.error_code == "EntityAlreadyExists"
    await rest.update_entity(row("p", "r", v="3"), etag=first["etag"], match_condition=MatchConditions.IfNotModified)
    with pytest.raises(ResourceModifiedError) as stale:  # the ETag of the first write is no longer current
        await rest.update_entity(row("p", "r", v="4"), etag=first["etag"], match_condition=MatchConditions.IfNotModified)
    assert stale.value.status_code == 412 and stale.value.error_code == "UpdateConditionNotSatisfied"
    assert (await rest.get_entity("p", "r"))["v"] == "3"
    with pytest.raises(ResourceNotFoundError) as missing:
        await rest.get_entity("p", "nope")
    assert missing.value.status_code == 404 and missing.value.error_code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError):  # an unconditional update needs the entity
        await rest.update_entity(row("p", "nope", v="1"))
    with pytest.raises(ValueError):
        await rest.update_entity(row("p", "r", v="5"), match_condition=MatchConditions.IfNotModified)
    with pytest.raises(ValueError):
        await rest.create_entity({"PartitionKey": "p"})


async def test_queries_and_listings_stay_on_the_sdk_client(tables):
    sdk, rest = tables
    for i in range(3):
        await rest.create_entity(row("q", f"r{i}", i=i))
    got = [e async for e in rest.query_entities("PartitionKey eq @pk", parameters={"pk": "q"})]
    assert [e["i"] for e in got] == [0, 1, 2]
    assert rest.table_name == sdk.table_name


async def test_a_wrong_key_is_refused_and_the_error_carries_no_key_nor_content(azurite, tables):
    sdk, _ = tables
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    wrong = TableEndpoint(service.url, SharedKey("devstoreaccount1", "d3Jvbmcta2V5LXdyb25nLWtleQ==", table=True))
    try:
        with pytest.raises(HttpResponseError) as refused:
            await RestTable(wrong, sdk).create_entity(row("p", "r", secret="hunter2"))
        # (Azure answers AuthenticationFailed, Azurite's table service AuthorizationFailure)
        assert refused.value.status_code == 403 and refused.value.error_code in ("AuthenticationFailed",
                                                                                  "AuthorizationFailure")
        assert "hunter2" not in str(refused.value) and "d3Jvbmc" not in str(refused.value)
    finally:
        await wrong.close()
        await service.close()


def test_keys_are_quoted_with_single_quotes_doubled():
    assert entity_path("steps", "o'brien", "a b") == "/steps(PartitionKey='o%27%27brien',RowKey='a%20b')"
    assert entity_path("t", "x@y.z", "%2F") == "/t(PartitionKey='x%40y.z',RowKey='%252F')"
    with pytest.raises(TypeError):
        entity_path("t", 1, "r")  # type: ignore[arg-type]


def test_the_signature_is_the_documented_table_shared_key_string():
    # Table service Shared Key (learn.microsoft.com, "Authorize with Shared Key", Table service):
    # VERB, Content-MD5, Content-Type, Date (x-ms-date), CanonicalizedResource = /account + encoded path.
    auth = SharedKey("devstoreaccount1", AZURITE_KEY, table=True)
    headers = {"x-ms-date": "Thu, 03 Dec 2026 06:00:00 GMT", "Content-Type": "application/json"}
    expected = ("PATCH\n\napplication/json\nThu, 03 Dec 2026 06:00:00 GMT\n"
                "/devstoreaccount1/devstoreaccount1/steps(PartitionKey='a',RowKey='b')")
    digest = hmac.new(base64.b64decode(AZURITE_KEY), expected.encode(), hashlib.sha256).digest()
    url = "http://127.0.0.1:10002/devstoreaccount1/steps(PartitionKey='a',RowKey='b')"
    assert auth.table_signature("PATCH", url, headers) == \
        "SharedKey devstoreaccount1:" + base64.b64encode(digest).decode()


def test_a_sas_connection_keeps_the_sdk_and_an_identity_uses_its_token():
    sas = TableServiceClient.from_connection_string(
        "TableEndpoint=https://acct.table.core.windows.net/;SharedAccessSignature=sv=2020-08-04&sig=abc")
    assert endpoint_of(sas) is None
    keyed = TableServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURITE_KEY};EndpointSuffix=core.windows.net")
    endpoint = endpoint_of(keyed)
    assert endpoint is not None and isinstance(endpoint.auth, SharedKey)
    identity = TableServiceClient("https://acct.table.core.windows.net", credential=_Credential(3600))
    endpoint = endpoint_of(identity)
    assert endpoint is not None and isinstance(endpoint.auth, TokenAuth)


class _Credential:
    def __init__(self, lifetime_s: int) -> None:
        self.lifetime_s = lifetime_s
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **_: object) -> AccessToken:
        self.scopes.append(scopes[0])
        return AccessToken(f"token-{len(self.scopes)}", int(time.time()) + self.lifetime_s)

    def get_token_info(self, *scopes: str, **_: object):  # pragma: no cover - not used by TokenAuth
        raise NotImplementedError


async def test_the_token_is_fetched_once_for_storage_and_renewed_near_its_expiry():
    lasting = _Credential(3600)
    auth = TokenAuth(lasting)
    for _ in range(3):
        headers: dict[str, str] = {}
        await auth.authorize("GET", "/t", headers)
        assert headers["Authorization"] == "Bearer token-1"
    assert lasting.scopes == ["https://storage.azure.com/.default"]
    expiring = _Credential(200)  # less than the five minutes of margin: fetched again each time
    auth = TokenAuth(expiring)
    for expected in ("Bearer token-1", "Bearer token-2"):
        headers = {}
        await auth.authorize("GET", "/t", headers)
        assert headers["Authorization"] == expected
