"""The Relay Server stand-in: endpoints, auth, builder semantics (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import zlib

import pytest
import requests
from pycrdt import Doc, Map, Text

from gitsync.dev.relay import DevRelay, sample_vault, tiny_pdf, tiny_png
from tests.fixtures_relay import TEST_API_KEY
from tests.relay_faults import FaultyRelay

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


def _get(relay: DevRelay, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("headers", AUTH)
    return requests.get(relay.url + path, timeout=5, **kwargs)


def _doc(data: bytes) -> Doc:
    doc: Doc = Doc()
    doc.apply_update(data)
    return doc


def test_as_update_both_paths_and_content_type(relay_server: DevRelay):
    folder = relay_server.add_folder()
    for path in (f"/d/{folder.compound_id}/as-update", f"/doc/{folder.compound_id}/as-update"):
        resp = _get(relay_server, path)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == "application/octet-stream"
    assert relay_server.fetch_count(folder.compound_id) == 2


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": TEST_API_KEY}]
)
def test_api_key_enforced(relay_server: DevRelay, headers):
    folder = relay_server.add_folder()
    resp = _get(relay_server, f"/d/{folder.compound_id}/as-update", headers=headers)
    assert resp.status_code == 401
    assert _get(relay_server, "/ready", headers={}).status_code == 200


def test_post_update_and_read_only_key():
    with DevRelay(api_key="rw", read_only_key="ro") as relay:
        folder = relay.add_folder()
        folder.put_markdown("a.md", "one")
        cid = folder.doc_compound_id("a.md")
        doc = _doc(relay.get_update(cid))
        before = doc.get_state()
        doc.get("contents", type=Text).insert(3, " two")
        diff = doc.get_update(before)
        url = f"{relay.url}/d/{cid}/update"
        denied = requests.post(url, data=diff, headers={"Authorization": "Bearer ro"}, timeout=5)
        assert denied.status_code == 403
        ok = requests.post(url, data=diff, headers={"Authorization": "Bearer rw"}, timeout=5)
        assert ok.status_code == 200
        assert folder.text("a.md") == "one two"
        bad = requests.post(
            url, data=b"\xff\xff", headers={"Authorization": "Bearer rw"}, timeout=5
        )
        assert bad.status_code == 400


def test_blob_url_is_signed_and_refuses_auth_header(relay_server: DevRelay):
    folder = relay_server.add_folder()
    doc_id = folder.put_attachment("p.png", tiny_png(), "image/png")
    digest = folder.entries()["/p.png"]["hash"]
    answer = _get(
        relay_server, f"/f/{folder.relay_id}-{doc_id}/download-url", params={"hash": digest}
    )
    url = answer.json()["downloadUrl"]
    assert requests.get(url, timeout=5).content == tiny_png()
    assert requests.get(url, headers=AUTH, timeout=5).status_code == 400
    tampered = re.sub(r"sig=.*", "sig=" + "0" * 64, url)
    assert requests.get(tampered, timeout=5).status_code == 403


def test_edit_markdown_is_a_small_diff(relay_server: DevRelay):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "héllo 👋 " * 200)
    cid = folder.doc_compound_id("a.md")
    before = _doc(relay_server.get_update(cid))
    folder.edit_markdown("a.md", "héllo 👋 " * 100 + "X" + "héllo 👋 " * 100)
    after = _doc(relay_server.get_update(cid))
    diff = after.get_update(before.get_state())
    assert len(diff) < 100
    assert folder.text("a.md") == "héllo 👋 " * 100 + "X" + "héllo 👋 " * 100


def test_rename_and_delete_folder_take_children(relay_server: DevRelay):
    folder = relay_server.add_folder()
    doc_id = folder.put_markdown("a/b/c.md", "x")
    folder.rename("a", "z")
    entries = folder.entries()
    assert {"/z", "/z/b", "/z/b/c.md"} <= set(entries)
    assert not any(p.startswith("/a") for p in entries)
    assert entries["/z/b/c.md"]["id"] == doc_id
    assert folder.legacy_docs() == {"/z/b/c.md": doc_id}
    folder.delete("z")
    assert folder.entries() == {}
    assert folder.legacy_docs() == {}


def test_nested_entries_and_legacy_only(relay_server: DevRelay):
    folder = relay_server.add_folder()
    folder.nested_entries = True
    folder.put_markdown("n.md", "nested")
    legacy_id = folder.put_markdown("old.md", "legacy", legacy_only=True)
    doc = _doc(relay_server.get_update(folder.compound_id))
    meta = doc.get("filemeta_v0", type=Map)
    assert isinstance(meta["/n.md"], Map)
    assert "/old.md" not in meta
    assert doc.get("docs", type=Map)["/old.md"] == legacy_id


def test_canvas_layout(relay_server: DevRelay):
    folder = relay_server.add_folder()
    folder.put_canvas(
        "c.canvas",
        {
            "nodes": [
                {"id": "t", "type": "text", "text": "hi", "x": 0, "y": 0, "width": 1, "height": 1}
            ],
            "edges": [{"id": "e", "fromNode": "t", "toNode": "t"}],
        },
    )
    folder.set_canvas_text("c.canvas", "t", "live")
    doc = _doc(relay_server.get_update(folder.doc_compound_id("c.canvas")))
    assert doc.get("nodes", type=Map).to_py()["t"]["text"] == "hi"
    assert str(doc.get("t", type=Text)) == "live"
    assert set(doc.get("edges", type=Map).to_py()) == {"e"}


def test_touch_changes_bytes_not_content(relay_server: DevRelay):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "same")
    cid = folder.doc_compound_id("a.md")
    before = relay_server.get_update(cid)
    folder.touch("a.md")
    assert relay_server.get_update(cid) != before
    assert folder.text("a.md") == "same"


def test_webhook_payload_shape():
    body = DevRelay.webhook_payload("r-d", user=None)
    assert body["eventType"] == "document.updated"
    assert re.fullmatch(r"evt_[A-Za-z0-9_-]{21}", body["eventId"])
    assert body["payload"]["doc_id"] == "r-d"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["payload"]["timestamp"])


def test_sample_vault_and_generated_files(relay_server: DevRelay):
    folder = relay_server.add_folder()
    made = sample_vault(folder)
    types = {p: e["type"] for p, e in folder.entries().items()}
    assert types["/assets/pixel.png"] == "image"
    assert types["/assets/tiny.pdf"] == "pdf"
    assert types["/boards/plan.canvas"] == "canvas"
    assert types["/notes/archive"] == "folder"
    assert len(made) >= 7
    png = tiny_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    length, kind = struct.unpack(">I4s", png[8:16])
    assert (
        kind == b"IHDR"
        and zlib.crc32(png[12 : 16 + length])
        == struct.unpack(">I", png[16 + length : 20 + length])[0]
    )
    pdf = tiny_pdf()
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    xref = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[xref:].startswith(b"xref")


def test_stop_closes_kept_alive_connections():
    relay = DevRelay(api_key="k")
    url = relay.start()
    with requests.Session() as session:
        assert session.get(url + "/ready", timeout=5).status_code == 200
        relay.stop()  # returns although the session still holds a connection
    port = url.rsplit(":", 1)[1]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
    relay.stop()  # idempotent


def test_webhooks_are_sent_to_the_configs_whose_prefix_matches(relay_server):
    """The stand-in's RELAY_SERVER_WEBHOOK_CONFIG: one POST per change, routed by prefix."""
    import json as _json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, str, dict]] = []
    got = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (stdlib name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Authorization"], _json.loads(body)))
            self.send_response(202)
            self.end_headers()
            got.set()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        mine, other = relay_server.add_folder(), relay_server.add_folder()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        relay_server.set_webhooks([{"url": f"{base}/a", "auth_token": "tok", "prefix": mine.relay_id},
                                   {"url": f"{base}/b", "auth_token": "tok", "prefix": "no-such-prefix"}])
        other.put_markdown("x.md", "x")  # another relay: no delivery
        mine.put_markdown("a.md", "a")
        wanted = {mine.compound_id, mine.doc_compound_id("a.md")}  # the folder index and the note
        deadline = time.monotonic() + 30
        while {doc for _, doc, _ in relay_server.deliveries} != wanted and time.monotonic() < deadline:
            got.wait(0.1)
            got.clear()
        assert {doc for _, doc, _ in relay_server.deliveries} == wanted
        assert all(path == "/a" and auth == "Bearer tok" for path, auth, _ in received)
        assert all(body["eventType"] == "document.updated" and body["payload"]["doc_id"].startswith(mine.relay_id)
                   for _, _, body in received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _users(relay: DevRelay, cid: str) -> dict:
    """The ``users`` map as served over HTTP, plain."""
    doc = _doc(_get(relay, f"/d/{cid}/as-update").content)
    return doc.get("users", type=Map).to_py() or {}


def _clocks(relay: DevRelay, cid: str) -> dict[int, int]:
    from gitsync.authors import decode_state_vector

    return decode_state_vector(_doc(_get(relay, f"/d/{cid}/as-update").content).get_state())


def test_edits_register_their_client_under_a_named_user(relay_server: DevRelay):
    from gitsync.dev.relay import DEMO_USER

    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "hello", user="user-ada")
    cid = folder.doc_compound_id("a.md")
    users = _users(relay_server, cid)
    assert list(users) == ["user-ada"] and users["user-ada"]["ds"] == []
    (ada_client,) = users["user-ada"]["ids"]
    assert _clocks(relay_server, cid)[int(ada_client)] == 5  # the content; registration is not hers
    assert "user-ada" in _users(relay_server, folder.compound_id)  # the index entry too
    folder.edit_markdown("a.md", "hello world")  # the default user
    assert set(_users(relay_server, cid)) == {"user-ada", DEMO_USER}
    folder.edit_markdown("a.md", "hello", user="user-bob")  # a deletion only: recorded in bob's ds
    bob = _users(relay_server, cid)["user-bob"]
    assert len(bob["ids"]) == 1 and len(bob["ds"]) == 1
    # his client wrote his new user entry (map, ids, ds) and the ds record: a deletion counts
    assert _clocks(relay_server, cid)[int(bob["ids"][0])] == 4
    before = _get(relay_server, f"/d/{cid}/as-update").content
    folder.edit_markdown("a.md", "hello", user="user-bob")  # no change: nothing registered
    assert _get(relay_server, f"/d/{cid}/as-update").content == before
    folder.put_markdown("b.md", "anonymous", user=None)
    assert _users(relay_server, folder.doc_compound_id("b.md")) == {}


def test_apply_update_registers_the_clients_it_advanced(relay_server: DevRelay):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "", user=None)
    cid = folder.doc_compound_id("a.md")
    writer = Doc(client_id=4242)
    writer.get("contents", type=Text).insert(0, "typed")
    relay_server.apply_update(cid, writer.get_update(), user="user-zoe")
    assert _users(relay_server, cid) == {"user-zoe": {"ids": [4242.0], "ds": []}}


def test_compaction_dedups_ids_clears_ds_and_keeps_the_content(relay_server: DevRelay):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "hello", user="user-ada")
    cid = folder.doc_compound_id("a.md")
    folder.edit_markdown("a.md", "he", user="user-ada")  # a deletion: a ds record
    with relay_server.edit(cid, user=None) as doc:  # a reconnect listed her first id again
        ids = doc.get("users", type=Map)["user-ada"]["ids"]
        ids.append(ids[0])
    users = _users(relay_server, cid)["user-ada"]
    assert len(users["ids"]) == 3 and len(users["ds"]) == 1
    clients = set(_clocks(relay_server, cid))
    relay_server.compact_users(cid)
    users = _users(relay_server, cid)["user-ada"]
    assert len(users["ids"]) == 2 and len(set(users["ids"])) == 2 and users["ds"] == []
    assert folder.text("a.md") == "he"
    assert len(set(_clocks(relay_server, cid)) - clients) == 1  # written by a client nobody claims


def test_the_stand_in_carries_no_fault_injection():
    """Faults live in the tests (tests/relay_faults.py), built on the stand-in's hooks."""
    knobs = {"fail_next", "clear_faults", "set_raw", "set_blob_bytes", "set_download_url",
             "frame_response", "pause", "resume", "hold", "release", "refuse_sockets",
             "drop_sockets", "send_to_sockets"}
    assert knobs & set(dir(DevRelay)) == set()
    assert knobs <= set(dir(FaultyRelay))
