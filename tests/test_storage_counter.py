"""The benchmarks' storage counter (localdev/storagecount.py): requests are counted one per HTTP
request in the byte stream, whatever the segmentation, and tallied by service, method and resource."""
from __future__ import annotations

from localdev.storagecount import _RequestCounter


def _request(line: str, body: bytes = b"") -> bytes:
    return f"{line} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def test_requests_are_counted_and_tallied_by_kind_however_the_bytes_arrive():
    stream = (_request("GET /devstoreaccount1/step-reset-password/messages?numofmessages=32")
              + _request("DELETE /devstoreaccount1/step-reset-password/messages/abc-1?popreceipt=x")
              + _request("PATCH /devstoreaccount1/Incidents(PartitionKey='a',RowKey='b')", b'{"state": "running"}')
              + _request("POST /devstoreaccount1/$batch", b"--batch\r\n\r\n"))
    for size in (1, 7, len(stream)):
        counter = _RequestCounter()
        for start in range(0, len(stream), size):
            counter.feed(stream[start:start + size])
        assert counter.count == 4
        assert dict(counter.kinds) == {"GET step-reset-password/messages": 1,
                                       "DELETE step-reset-password/messages/{id}": 1,
                                       "PATCH incidents()": 1, "POST $batch": 1}
