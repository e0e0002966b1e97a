"""RelayClient against the Relay Server stand-in over real HTTP on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from pycrdt import Doc, Map, Text

from gitsync.dev.relay import tiny_pdf, tiny_png
from gitsync.ids import InvalidId
from gitsync.relay import (
    BadResponse,
    NotFound,
    RelayClient,
    RelayError,
    Unauthorized,
    Unavailable,
)
from tests.fixtures_relay import TEST_API_KEY
from tests.relay_faults import FaultyRelay

FAST = {"backoff": 0.001, "timeout": 5}


@pytest.fixture
def client(relay_server: FaultyRelay) -> Iterator[RelayClient]:
    c = RelayClient(relay_server.url, TEST_API_KEY, retries=3, **FAST)
    yield c
    c.close()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback address with a bound but non-listening socket: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    sock.close()


def _decode(update: bytes) -> Doc:
    doc: Doc = Doc()
    doc.apply_update(update)
    return doc


# -- documents ---------------------------------------------------------------------------


def test_get_update_round_trip(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    folder.put_markdown("notes/a.md", "héllo wörld 👋\nline two")

    note = _decode(client.get_update(folder.doc_compound_id("notes/a.md")))
    assert str(note.get("contents", type=Text)) == "héllo wörld 👋\nline two"

    meta = _decode(client.get_update(folder.compound_id)).get("filemeta_v0", type=Map).to_py()
    assert meta["/notes/a.md"]["id"] == folder.doc_id("notes/a.md")
    assert meta["/notes/a.md"]["type"] == "markdown"
    assert meta["/notes"]["type"] == "folder"
    assert relay_server.fetch_count(folder.compound_id) == 1


def test_get_update_sees_edits(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one two three")
    folder.edit_markdown("a.md", "one 2 three")
    note = _decode(client.get_update(folder.doc_compound_id("a.md")))
    assert str(note.get("contents", type=Text)) == "one 2 three"


def test_never_written_document_is_empty_update(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    folder.put_markdown("empty.md", "")
    assert client.get_update(folder.doc_compound_id("empty.md")) == b"\x00\x00"


def test_unknown_document_raises_not_found(relay_server: FaultyRelay, client: RelayClient):
    cid = f"{uuid.uuid4()}-{uuid.uuid4()}"
    with pytest.raises(NotFound) as info:
        client.get_update(cid)
    assert info.value.status == 404
    assert f"/d/{cid}/as-update" in str(info.value)
    assert relay_server.fetch_count(cid) == 1  # 4xx is not retried


def test_invalid_compound_id_raises_before_any_request(relay_server, client: RelayClient):
    with pytest.raises(InvalidId):
        client.get_update("not-an-id")
    assert relay_server.total_fetches == 0


def test_wrong_key_raises_unauthorized_without_key(relay_server: FaultyRelay):
    folder = relay_server.add_folder()
    secret = "wrong-secret-key-4711"
    with RelayClient(relay_server.url, secret, **FAST) as c:
        with pytest.raises(Unauthorized) as info:
            c.get_update(folder.compound_id)
    message = str(info.value)
    assert "RELAY_SERVER_API_KEY" in message
    assert secret not in message
    assert info.value.status == 401


@pytest.mark.parametrize(
    ("status", "error"), [(400, BadResponse), (403, Unauthorized), (401, Unauthorized)]
)
def test_client_errors_are_not_retried(relay_server, client, status, error):
    folder = relay_server.add_folder()
    relay_server.fail_next(1, status=status)
    with pytest.raises(error):
        client.get_update(folder.compound_id)
    assert relay_server.fetch_count(folder.compound_id) == 1


def test_two_server_errors_then_success(relay_server: FaultyRelay, client: RelayClient, caplog):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "x")
    relay_server.fail_next(2)
    with caplog.at_level(logging.WARNING, logger="gitsync.relay"):
        assert client.get_update(folder.compound_id)
    assert relay_server.fetch_count(folder.compound_id) == 3
    assert caplog.text.count("will retry") == 2


def test_rate_limit_is_retried(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    relay_server.fail_next(1, status=429)
    assert client.get_update(folder.compound_id)
    assert relay_server.fetch_count(folder.compound_id) == 2


def test_persistent_server_error_raises_unavailable(relay_server: FaultyRelay):
    folder = relay_server.add_folder()
    relay_server.fail_next(100, status=503)
    with RelayClient(relay_server.url, TEST_API_KEY, retries=2, **FAST) as c:
        with pytest.raises(Unavailable) as info:
            c.get_update(folder.compound_id)
    message = str(info.value)
    assert f"/d/{folder.compound_id}/as-update" in message
    assert "HTTP 503" in message
    assert "3 attempts" in message
    assert info.value.status == 503
    assert relay_server.fetch_count(folder.compound_id) == 3


def test_connection_refused_raises_unavailable(refused_url: str):
    cid = f"{uuid.uuid4()}-{uuid.uuid4()}"
    with RelayClient(refused_url, TEST_API_KEY, retries=1, **FAST) as c:
        with pytest.raises(Unavailable) as info:
            c.get_update(cid)
        assert c.ready() is False
    assert "connection refused" in str(info.value)
    assert f"/d/{cid}/as-update" in str(info.value)
    assert info.value.status is None


def test_stop_event_cuts_retry_wait_short(relay_server: FaultyRelay):
    folder = relay_server.add_folder()
    stop = threading.Event()
    stop.set()
    relay_server.fail_next(1)
    with RelayClient(relay_server.url, TEST_API_KEY, backoff=3600, stop_event=stop) as c:
        with pytest.raises(Unavailable, match="shutting down"):
            c.get_update(folder.compound_id)
    assert relay_server.fetch_count(folder.compound_id) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"error": "document not loaded"}', "application/json"),
        (b"<html><body>502 Bad Gateway</body></html>", "text/html; charset=utf-8"),
        (b"upstream error", "text/plain"),
    ],
)
def test_error_body_where_bytes_expected_raises_bad_response(
    relay_server: FaultyRelay, client: RelayClient, body: bytes, content_type: str
):
    folder = relay_server.add_folder()
    relay_server.set_raw(folder.compound_id, body, content_type=content_type)
    with pytest.raises(BadResponse) as info:
        client.get_update(folder.compound_id)
    assert content_type.split(";")[0] in str(info.value)
    assert f"/d/{folder.compound_id}/as-update" in str(info.value)


def test_corrupt_bytes_are_returned_undecoded(relay_server: FaultyRelay, client: RelayClient):
    """Bytes with the right content type pass through; decoding is ydoc's job."""
    folder = relay_server.add_folder()
    relay_server.set_raw(folder.compound_id, b"\xff\xfe garbage")
    assert client.get_update(folder.compound_id) == b"\xff\xfe garbage"


def test_ready(relay_server: FaultyRelay, client: RelayClient):
    assert client.ready() is True


def test_repr_hides_key(relay_server: FaultyRelay):
    with RelayClient(relay_server.url, "super-secret-key", **FAST) as c:
        assert "super-secret-key" not in repr(c)
        assert "REDACTED" in repr(c)
    with RelayClient("https://user:pw@relay.example", "k") as c:
        assert "pw" not in repr(c)


def test_client_is_shared_by_threads(relay_server: FaultyRelay):
    folder = relay_server.add_folder()
    texts = {f"n{i}.md": f"note {i} ✓" for i in range(40)}
    for path, text in texts.items():
        folder.put_markdown(path, text)
    with RelayClient(relay_server.url, TEST_API_KEY, pool_size=8, **FAST) as c:

        def read(path: str) -> str:
            doc = _decode(c.get_update(folder.doc_compound_id(path)))
            return str(doc.get("contents", type=Text))

        with ThreadPoolExecutor(max_workers=8) as pool:
            got = dict(zip(texts, pool.map(read, texts), strict=True))
    assert got == texts


# -- attachments -------------------------------------------------------------------------


def test_download_attachment_verifies_hash(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    data = tiny_png()
    doc_id = folder.put_attachment("img/pixel.png", data, "image/png")
    entry = folder.entries()["/img/pixel.png"]
    assert entry["hash"] == hashlib.sha256(data).hexdigest()
    assert entry["type"] == "image"
    # The blob endpoint answers 400 to any Authorization header (like S3), so a
    # successful download proves the API key was not sent to the presigned URL.
    got = client.download_attachment(folder.relay_id, doc_id, entry["hash"])
    assert got == data
    assert relay_server.blob_fetch_count(entry["hash"]) == 1


def test_hash_mismatch_raises_bad_response(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    doc_id = folder.put_attachment("doc.pdf", tiny_pdf(), "application/pdf")
    digest = folder.entries()["/doc.pdf"]["hash"]
    relay_server.set_blob_bytes(digest, b"something else")
    with pytest.raises(BadResponse) as info:
        client.download_attachment(folder.relay_id, doc_id, digest)
    assert "content does not match the hash in the folder index" in str(info.value)
    # The computed hash stays out of the message (status would publish it).
    assert hashlib.sha256(b"something else").hexdigest() not in str(info.value)


def test_invalid_hash_raises_bad_response_without_request(relay_server, client):
    folder = relay_server.add_folder()
    doc_id = folder.put_attachment("a.bin", b"abc")
    with pytest.raises(BadResponse, match="sha256"):
        client.download_attachment(folder.relay_id, doc_id, "not-a-hash")
    assert relay_server.blob_fetch_count("not-a-hash") == 0


def test_unknown_hash_raises_not_found(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    doc_id = folder.put_attachment("a.bin", b"abc")
    with pytest.raises(NotFound):
        client.download_attachment(folder.relay_id, doc_id, "0" * 64)


def test_falls_back_to_folder_form_of_file_id(relay_server: FaultyRelay, client: RelayClient):
    relay_server.require_folder_file_ids = True
    folder = relay_server.add_folder()
    data = b"\x00binary\xffdata"
    doc_id = folder.put_attachment("f.bin", data)
    digest = folder.entries()["/f.bin"]["hash"]

    with pytest.raises(NotFound) as info:
        client.download_attachment(folder.relay_id, doc_id, digest)
    assert f"/f/{folder.relay_id}-{doc_id}/download-url" in str(info.value)

    got = client.download_attachment(folder.relay_id, doc_id, digest, folder_id=folder.folder_id)
    assert got == data


def test_blob_server_errors_are_retried(relay_server: FaultyRelay, client: RelayClient):
    folder = relay_server.add_folder()
    doc_id = folder.put_attachment("f.bin", b"payload")
    digest = folder.entries()["/f.bin"]["hash"]
    relay_server.fail_next(2, path_prefix="/blob/")
    assert client.download_attachment(folder.relay_id, doc_id, digest) == b"payload"
    assert relay_server.blob_fetch_count(digest) == 1  # faults answer before counting


def test_no_secret_in_errors_or_logs(relay_server: FaultyRelay, refused_url: str, caplog):
    """API key, presigned URL and its signature never reach a message or a log line."""
    caplog.set_level(logging.DEBUG)
    folder = relay_server.add_folder()
    doc_id = folder.put_attachment("f.bin", b"payload")
    digest = folder.entries()["/f.bin"]["hash"]
    presigned = requests.get(
        f"{relay_server.url}/f/{folder.relay_id}-{doc_id}/download-url",
        params={"hash": digest},
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=5,
    ).json()["downloadUrl"]
    signature = presigned.split("sig=", 1)[1]

    messages: list[str] = []
    c = RelayClient(relay_server.url, TEST_API_KEY, retries=1, **FAST)
    try:
        relay_server.fail_next(2, path_prefix="/blob/")
        with pytest.raises(Unavailable) as info:
            c.download_attachment(folder.relay_id, doc_id, digest)
        messages.append(str(info.value))

        relay_server.fail_next(1, status=403, path_prefix="/blob/")
        with pytest.raises(BadResponse) as info3:
            c.download_attachment(folder.relay_id, doc_id, digest)
        messages.append(str(info3.value))

        relay_server.set_blob_bytes(digest, b"tampered")
        with pytest.raises(BadResponse) as info2:
            c.download_attachment(folder.relay_id, doc_id, digest)
        messages.append(str(info2.value))

        relay_server.fail_next(2)
        with pytest.raises(Unavailable) as info4:
            c.get_update(folder.compound_id)
        messages.append(str(info4.value))
        messages.append(repr(c))
    finally:
        c.close()
    with RelayClient(refused_url, TEST_API_KEY, retries=1, **FAST) as down:
        with pytest.raises(Unavailable) as info5:
            down.download_attachment(folder.relay_id, doc_id, digest)
        messages.append(str(info5.value))

    assert all(m for m in messages)
    for text in [*messages, caplog.text]:
        assert TEST_API_KEY not in text
        assert presigned not in text
        assert signature not in text
        assert "sig=" not in text
    assert "will retry" in caplog.text  # the log was really captured


def test_errors_share_one_base():
    for error in (NotFound, Unauthorized, Unavailable, BadResponse):
        assert issubclass(error, RelayError)
