"""The ledger's point operations over the Table service REST API, on one pooled aiohttp session.

Every step reads its incident, claims its row, finishes it and moves the incident on: four table
operations, and a storm's ~55 per user. Through ``azure-data-tables`` each costs 0.8-1.1 ms of CPU
(azure-core runs its policy pipeline, request ids, tracing and a generated (de)serializer around
each request; docs/benchmarks.md), several times the request itself. Here the four point operations
are plain requests on one ``HttpClient`` (``shared/adapters/http.py``), the same wire calls the SDK
makes (Table service REST API, version 2019-02-02, JSON with minimal metadata):

* ``get_entity``     GET    {table}(PartitionKey='…',RowKey='…')          200 + entity, 404
* ``create_entity``  POST   {table}  ``Prefer: return-no-content``        204, 409 exists
* ``update_entity``  PATCH (merge) / PUT (replace) {table}(…)  ``If-Match``: the ETag or ``*``
                     204, 412 changed (ETag) or 404 (``*``: no such entity)
* ``upsert_entity``  PATCH (merge) / PUT (replace) {table}(…) without ``If-Match``   204

Queries, listings and table creation stay on the SDK client (``RestTable`` hands every other
attribute to it), and so does a connection signed with a SAS. Entities are converted with the
SDK's own functions (``_add_entity_properties`` / ``_convert_to_entity``; azure-data-tables is
pinned in requirements.txt), so a row reads back exactly as through the SDK: the same Python types
and ``metadata`` (``etag``, ``timestamp``). Authorization, retries and errors are
``storagerest.py``'s (the account key or the managed identity; the SDK's exceptions). Keys are
percent-encoded with quotes doubled, as the SDK does; entity contents are never logged.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Optional
from urllib.parse import quote

from azure.core import MatchConditions
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables._deserialize import _convert_to_entity
from azure.data.tables._serialize import _add_entity_properties

from .http import Reply
from .storagerest import StorageEndpoint, authorization_of

logger = logging.getLogger(__name__)

__all__ = ["TableEndpoint", "RestTable", "endpoint_of", "entity_path"]

API_VERSION = "2019-02-02"
_JSON = "application/json"
_HEADERS = {"DataServiceVersion": "3.0", "Accept": "application/json;odata=minimalmetadata"}


def _odata_error_code(reply: Reply) -> str:
    """The Table service names its error in the JSON body as well as in x-ms-error-code."""
    try:
        return str(reply.json()["odata.error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


class TableEndpoint(StorageEndpoint):
    """An account's table endpoint (``https://acct.table.core.windows.net``, or Azurite's
    ``http://127.0.0.1:port/devstoreaccount1``)."""

    def __init__(self, url: str, auth: Any) -> None:
        super().__init__(auth, API_VERSION, error_code=_odata_error_code)
        self.url = url.rstrip("/")

    async def send(self, method: str, path: str, *, body: Optional[dict[str, Any]] = None,
                   headers: Optional[Mapping[str, str]] = None, expect: tuple[int, ...] = (200, 201, 204)) -> Reply:
        content = json.dumps(body, separators=(",", ":")).encode("utf-8") if body is not None else None
        return await self.call(method, self.url + path, content=content, headers={**_HEADERS, **(headers or {})},
                               content_type=_JSON if content is not None else "", expect=expect)


def entity_path(table: str, partition_key: str, row_key: str) -> str:
    """``/table(PartitionKey='…',RowKey='…')``: quotes doubled, then every character but the unreserved
    ones percent-encoded (the SDK's encoding)."""
    def literal(value: str) -> str:
        if not isinstance(value, str):
            raise TypeError("PartitionKey or RowKey must be of type string.")
        return quote(value.replace("'", "''"), safe="")

    return f"/{quote(table, safe='')}(PartitionKey='{literal(partition_key)}',RowKey='{literal(row_key)}')"


def _metadata(reply: Reply) -> dict[str, Any]:
    """What the SDK returns for a write: the response's date, ETag and version."""
    return {"date": reply.headers.get("Date"), "etag": reply.headers.get("ETag"),
            "version": reply.headers.get("x-ms-version")}


def _keys(entity: Mapping[str, Any]) -> tuple[str, str]:
    try:
        return entity["PartitionKey"], entity["RowKey"]
    except KeyError as exc:
        raise ValueError("an entity needs a PartitionKey and a RowKey") from exc


class RestTable:
    """One table: the four point operations over REST, everything else on the SDK's TableClient."""

    def __init__(self, endpoint: TableEndpoint, sdk_client: Any) -> None:
        self._endpoint = endpoint
        self._sdk = sdk_client
        self.table_name: str = sdk_client.table_name

    def __getattr__(self, name: str) -> Any:  # query_entities, list_entities, create_table, ...
        return getattr(self._sdk, name)

    async def get_entity(self, partition_key: str, row_key: str) -> TableEntity:
        reply = await self._endpoint.send("GET", entity_path(self.table_name, partition_key, row_key), expect=(200,))
        entity: TableEntity = _convert_to_entity(reply.json())
        if not entity.metadata.get("etag"):
            entity._metadata["etag"] = reply.headers.get("ETag")  # pylint: disable=protected-access
        return entity

    async def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        _keys(entity)
        reply = await self._endpoint.send("POST", f"/{quote(self.table_name, safe='')}",
                                          body=_add_entity_properties(entity),
                                          headers={"Prefer": "return-no-content"}, expect=(201, 204))
        return _metadata(reply)

    async def update_entity(self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE, *,
                            etag: Optional[str] = None,
                            match_condition: MatchConditions = MatchConditions.Unconditionally) -> dict[str, Any]:
        if match_condition == MatchConditions.IfNotModified:
            if not etag:
                raise ValueError("IfNotModified must be specified with etag.")
            if_match = etag
        elif match_condition == MatchConditions.Unconditionally:
            if etag:
                raise ValueError("Etag is not supported for an Unconditional operation.")
            if_match = "*"
        else:
            raise ValueError(f"Unsupported match condition: {match_condition}")
        return await self._write(entity, mode, {"If-Match": if_match})

    async def upsert_entity(self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE) -> dict[str, Any]:
        return await self._write(entity, mode, {})

    async def _write(self, entity: Mapping[str, Any], mode: UpdateMode, headers: dict[str, str]) -> dict[str, Any]:
        partition_key, row_key = _keys(entity)
        if mode not in (UpdateMode.MERGE, UpdateMode.REPLACE):
            raise ValueError(f"mode must be UpdateMode.MERGE or UpdateMode.REPLACE, not {mode!r}")
        method = "PATCH" if mode == UpdateMode.MERGE else "PUT"
        reply = await self._endpoint.send(method, entity_path(self.table_name, partition_key, row_key),
                                          body=_add_entity_properties(entity), headers=headers, expect=(204,))
        return _metadata(reply)


def endpoint_of(service_client: Any) -> Optional[TableEndpoint]:
    """The REST endpoint of an SDK TableServiceClient, authorized as it is (None for a SAS)."""
    found = authorization_of(service_client, table=True)
    return TableEndpoint(*found) if found else None
