"""FolderSocket against the Relay stand-in's real websocket on 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator

import pytest
from pycrdt import Text

from gitsync import yframes
from gitsync.dev.relay import FolderHandle
from gitsync.ids import compound_id
from gitsync.wsclient import (
    FolderSocket,
    HeadsUnavailable,
    TransportState,
    redact_token,
    socket_url,
)
from tests.e2e.harness import wait_for
from tests.fixtures_relay import TEST_API_KEY
from tests.relay_faults import FaultyRelay


class Recorder:
    """Collects events and connects; tests wait on them."""

    def __init__(self):
        self.events: list[tuple[str, yframes.Event]] = []
        self.connects = 0
        self.lock = threading.Lock()
        self.fail = False

    def on_event(self, doc_id: str, event: yframes.Event) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("journal unwritable")
        with self.lock:
            self.events.append((doc_id, event))

    def on_connect(self) -> None:
        with self.lock:
            self.connects += 1

    def docs(self) -> list[str]:
        with self.lock:
            return [doc for doc, _ in self.events]


def ready(sock: FolderSocket, folder: FolderHandle) -> None:
    """Connected, and the server has taken the subscription: frames are handled in
    order, so once a heads answer is back the subscribe sent before it is in effect."""
    assert sock.wait_connected(10)
    sock.heads([folder.compound_id])


@pytest.fixture
def make_socket(relay_server: FaultyRelay) -> Iterator:
    made: list[FolderSocket] = []

    def make(folder: FolderHandle, *, key: str = TEST_API_KEY, recorder: Recorder | None = None,
             **options) -> tuple[FolderSocket, Recorder]:
        rec = recorder or Recorder()
        options = {"backoff_base": 0.02, "backoff_cap": 0.2, "heads_timeout": 10.0, **options}
        sock = FolderSocket(relay_server.url, key, folder.relay_id, folder.folder_id,
                            on_event=rec.on_event, on_connect=rec.on_connect, **options)
        made.append(sock)
        sock.start()
        return sock, rec

    yield make
    for sock in made:
        sock.stop()


def test_socket_url_and_token_redaction():
    relay, folder = str(uuid.uuid4()), str(uuid.uuid4())
    doc = f"{relay}-{folder}"
    assert socket_url("http://127.0.0.1:8080", relay, folder, "a b&c") == (
        f"ws://127.0.0.1:8080/d/{doc}/ws/{doc}?token=a%20b%26c")
    assert socket_url("https://relay.example.com/base/", relay, folder, "k").startswith(
        f"wss://relay.example.com/base/d/{doc}/ws/{doc}?token=")
    with pytest.raises(ValueError):
        socket_url("ftp://x", relay, folder, "k")
    assert redact_token("GET /d/x/ws/x?token=s3cret HTTP/1.1") == "GET /d/x/ws/x?token=REDACTED HTTP/1.1"


def test_events_of_the_folder_reach_on_event(relay_server, make_socket):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one")
    sock, rec = make_socket(folder)
    ready(sock, folder)
    wait_for(lambda: rec.connects == 1, "on_connect")
    cid = folder.doc_compound_id("a.md")
    folder.edit_markdown("a.md", "two")
    wait_for(lambda: cid in rec.docs(), "the edit's event")
    event = next(e for d, e in rec.events if d == cid)
    assert event.event_type == "document.updated" and event.channel == folder.compound_id
    assert event.update  # the change as a Yjs update
    folder.rename("a.md", "b.md")  # the folder document itself changes
    wait_for(lambda: folder.compound_id in rec.docs(), "the folder's event")
    status = sock.status()
    assert status.state == TransportState.CONNECTED and status.events >= 2
    assert status.reconnects == 0 and status.last_event is not None


def test_documents_routed_elsewhere_send_no_event_here(relay_server, make_socket):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one")
    folder.put_markdown("b.md", "one")
    relay_server.route(folder.doc_compound_id("a.md"), None)  # loaded without a channel
    sock, rec = make_socket(folder)
    ready(sock, folder)
    folder.edit_markdown("a.md", "two")
    folder.edit_markdown("b.md", "two")  # sent after a.md's would have been
    wait_for(lambda: folder.doc_compound_id("b.md") in rec.docs(), "b.md's event")
    assert folder.doc_compound_id("a.md") not in rec.docs()


def _add_docs(relay: FaultyRelay, folder: FolderHandle, n: int) -> list[str]:
    guids = []
    for i in range(n):
        cid = compound_id(folder.relay_id, str(uuid.uuid4()))
        relay.route(cid, folder.compound_id)
        with relay.edit(cid) as doc:
            doc.get("contents", type=Text).insert(0, f"note {i}")
        guids.append(cid)
    return guids


def test_heads_in_batches_of_100(relay_server, make_socket):
    folder = relay_server.add_folder()
    guids = _add_docs(relay_server, folder, 250)
    stranger = compound_id(folder.relay_id, str(uuid.uuid4()))
    relay_server.forget_head(guids[0])
    sock, _ = make_socket(folder)
    ready(sock, folder)
    relay_server.reset_counters()
    heads = sock.heads(guids + [stranger, guids[1]])
    assert relay_server.heads_queries == 3  # 251 distinct guids: 100 + 100 + 51
    assert set(heads) == set(guids[1:])
    before = heads[guids[1]]
    with relay_server.edit(guids[1]) as doc:
        del doc.get("contents", type=Text)[0:2]  # a pure deletion
    after = sock.heads([guids[1], guids[2]])
    assert not yframes.same_head(before.snapshot, after[guids[1]].snapshot)
    assert yframes.same_head(heads[guids[2]].snapshot, after[guids[2]].snapshot)
    assert after[guids[1]].last_seen >= before.last_seen > 0
    assert sock.status().heads_queries == 5


def test_heads_need_a_connection(relay_server, make_socket):
    folder = relay_server.add_folder()
    relay_server.refuse_sockets(503)
    sock, _ = make_socket(folder)
    wait_for(lambda: relay_server.socket_attempts >= 1, "a connection attempt")
    with pytest.raises(HeadsUnavailable, match="not connected"):
        sock.heads([folder.compound_id])
    wait_for(lambda: sock.status().state == TransportState.BACKING_OFF, "backing off")
    assert "HTTP 503" in (sock.status().last_error or "")


@pytest.mark.parametrize("scoped", [False, True])
def test_a_refused_key_is_clear_and_backs_off_long(relay_server, make_socket, caplog, scoped):
    caplog.set_level(logging.DEBUG)
    folder = relay_server.add_folder()
    key = relay_server.issue_doc_token(relay_server.add_folder().compound_id) if scoped else "wrong-key"
    sock, rec = make_socket(folder, key=key, unauthorized_backoff=300.0)
    wait_for(lambda: sock.status().state == TransportState.UNAUTHORIZED, "the unauthorized state")
    status = sock.status()
    assert f"HTTP {403 if scoped else 401}" in status.last_error
    assert "RELAY_SERVER_API_KEY" in status.last_error
    assert rec.connects == 0 and not sock.connected
    assert sock.retry_delay(0, unauthorized=True) >= 240  # not the short backoff
    assert key not in caplog.text and key not in str(status.as_dict())


def test_the_token_never_reaches_the_logs(relay_server, make_socket, caplog):
    caplog.set_level(logging.DEBUG)  # the websockets library logs the request line here
    folder = relay_server.add_folder()
    sock, _ = make_socket(folder)
    ready(sock, folder)
    assert "token=REDACTED" in caplog.text
    assert TEST_API_KEY not in caplog.text and TEST_API_KEY not in repr(sock)


def test_a_dropped_socket_reconnects(relay_server, make_socket):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one")
    sock, rec = make_socket(folder)
    ready(sock, folder)
    assert relay_server.drop_sockets() == 1
    wait_for(lambda: rec.connects == 2 and sock.connected, "the reconnect")
    assert sock.status().reconnects == 1
    ready(sock, folder)
    folder.edit_markdown("a.md", "two")
    wait_for(lambda: folder.doc_compound_id("a.md") in rec.docs(), "an event after the reconnect")


def test_a_malformed_frame_closes_and_reconnects(relay_server, make_socket):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one")
    sock, rec = make_socket(folder)
    ready(sock, folder)
    assert relay_server.send_to_sockets(b"\x04\x05ab") == 1  # an event cut short
    wait_for(lambda: rec.connects == 2 and sock.connected, "the reconnect")
    status = sock.status()
    assert status.malformed_frames == 1 and status.reconnects == 1
    assert "malformed frame" in status.last_error
    ready(sock, folder)
    folder.edit_markdown("a.md", "two")
    wait_for(lambda: folder.doc_compound_id("a.md") in rec.docs(), "events still flow")


def test_an_unknown_tag_is_ignored(relay_server, make_socket):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one")
    sock, rec = make_socket(folder)
    ready(sock, folder)
    relay_server.send_to_sockets(yframes.encode(yframes.Unknown(0x42, b"\x03new")))
    folder.edit_markdown("a.md", "two")  # sent after the unknown frame
    wait_for(lambda: folder.doc_compound_id("a.md") in rec.docs(), "the event")
    status = sock.status()
    assert status.unknown_frames == 1 and status.reconnects == 0 and status.malformed_frames == 0


def test_an_event_not_taken_reconnects(relay_server, make_socket):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one")
    sock, rec = make_socket(folder)
    ready(sock, folder)
    rec.fail = True
    folder.edit_markdown("a.md", "two")
    wait_for(lambda: rec.connects == 2 and sock.connected, "the reconnect")
    assert "not taken" in sock.status().last_error


def test_a_read_only_key_listens(relay_server, make_socket):
    with FaultyRelay(api_key="rw", read_only_key="ro") as relay:
        folder = relay.add_folder()
        folder.put_markdown("a.md", "one")
        before = relay.get_update(folder.compound_id)
        rec = Recorder()
        sock = FolderSocket(relay.url, "ro", folder.relay_id, folder.folder_id,
                            on_event=rec.on_event, backoff_base=0.02)
        sock.start()
        try:
            ready(sock, folder)
            folder.edit_markdown("a.md", "two")
            wait_for(lambda: folder.doc_compound_id("a.md") in rec.docs(), "the event")
            assert relay.get_update(folder.compound_id) == before  # a silent reader
        finally:
            sock.stop()
        assert sock.status().state == TransportState.STOPPED


def test_path_ids_must_match_and_a_token_is_required(relay_server):
    import requests

    folder = relay_server.add_folder()
    base = f"{relay_server.url}/d/{folder.compound_id}/ws/"
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    other = relay_server.add_folder().compound_id
    assert requests.get(base + other + f"?token={TEST_API_KEY}", headers=headers, timeout=5).status_code == 400
    assert requests.get(base + folder.compound_id, headers=headers, timeout=5).status_code == 401


def test_every_stand_in_mutation_publishes_an_event(relay_server, make_socket):
    from gitsync.dev.relay import tiny_png

    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one")
    sock, rec = make_socket(folder)
    ready(sock, folder)

    def expect(action, *docs):
        counts = {d: rec.docs().count(d) for d in docs}
        action()
        for doc in docs:
            wait_for(lambda doc=doc: rec.docs().count(doc) > counts[doc], f"an event for {doc}")

    fid = folder.compound_id
    expect(lambda: folder.edit_markdown("a.md", "two"), folder.doc_compound_id("a.md"))
    expect(lambda: folder.put_markdown("b.md", "new"), fid)
    assert folder.doc_compound_id("b.md") in rec.docs()  # its creation
    canvas = {"nodes": [{"id": "n1", "type": "text", "text": "x", "x": 0, "y": 0,
                         "width": 1, "height": 1}], "edges": []}
    expect(lambda: folder.put_canvas("c.canvas", canvas), fid)
    expect(lambda: folder.set_canvas_text("c.canvas", "n1", "y"), folder.doc_compound_id("c.canvas"))
    expect(lambda: folder.put_attachment("p.png", tiny_png(), "image/png"), fid)
    expect(lambda: folder.rename("b.md", "d/b.md"), fid)
    expect(lambda: folder.mkdir("empty"), fid)
    expect(lambda: folder.delete("d"), fid)
    expect(lambda: folder.touch("a.md"), folder.doc_compound_id("a.md"))
    sock.heads([fid])  # a barrier: every event sent before its answer has arrived
    unchanged = len(rec.docs())
    folder.edit_markdown("a.md", "two")  # no change: no event, like the real server
    folder.touch()
    sock.heads([fid])
    assert rec.docs()[unchanged:] == [fid]
