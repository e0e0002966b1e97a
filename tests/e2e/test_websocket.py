"""The websocket transport end to end: stand-in edits reach commits with no webhook sent,
reconnects and restarts catch up by document heads, and both transports together fetch
an edit once."""

from __future__ import annotations

import json

import pytest

from tests.relay_faults import FaultyRelay

from .harness import InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def transport(svc: InProcessService) -> dict:
    return svc.service.status()["folders"][0]["transport"]


def connected(svc: InProcessService, relay: FaultyRelay, folder) -> bool:
    return transport(svc)["state"] == "connected" and relay.socket_count(folder.compound_id) == 1


def test_events_drive_commits_with_no_webhook(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder], transport="websocket")
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"}, "the startup commit")
        wait_for(lambda: connected(svc, relay_server, folder), "the socket")
        folder.edit_markdown("a.md", "two\n")
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"two\n"}, "the edit's commit")
        folder.put_markdown("notes/new.md", "fresh\n")
        folder.rename("a.md", "moved.md")
        wait_for(lambda: head_files(tmp_path, folder) == {"moved.md": b"two\n",
                                                          "notes/new.md": b"fresh\n"},
                 "the new file and the rename")
        status = transport(svc)
        assert status["mode"] == "websocket" and status["events"] >= 3
        assert status["connected_since"] and status["last_event"] and status["reconnects"] == 0
        assert svc.service.status()["counts"]["accepted"] >= 1


def test_an_edit_made_while_the_socket_was_down_is_caught_by_heads(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    folder.put_markdown("b.md", "stays\n")
    write_connectors(tmp_path, [folder], transport="websocket")
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder).get("a.md") == b"one\n", "the startup commit")
        wait_for(lambda: connected(svc, relay_server, folder), "the socket")
        relay_server.refuse_sockets(503)
        relay_server.drop_sockets()
        wait_for(lambda: transport(svc)["state"] != "connected"
                 and relay_server.socket_attempts >= 1, "the socket to be down")
        folder.edit_markdown("a.md", "edited while down\n")  # no socket: no event
        relay_server.reset_counters()
        relay_server.refuse_sockets(None)
        wait_for(lambda: head_files(tmp_path, folder).get("a.md") == b"edited while down\n",
                 "the catch-up after the reconnect")
        assert transport(svc)["reconnects"] >= 1
        assert relay_server.heads_queries >= 1
        assert relay_server.fetch_count(folder.doc_compound_id("b.md")) == 0  # head unchanged


def test_a_restart_fetches_only_changed_documents(relay_server, tmp_path):
    folder = relay_server.add_folder()
    for i in range(30):
        folder.put_markdown(f"n{i}.md", f"note {i}\n")
    write_connectors(tmp_path, [folder], transport="websocket")
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: len(head_files(tmp_path, folder)) == 30, "the first sync's commit")
        assert svc.service.queue.wait_idle(timeout=30)
    folder.edit_markdown("n3.md", "changed while stopped\n")
    folder.edit_markdown("n7.md", "")  # a deletion only: same state vector, new delete set
    relay_server.backfill_head(folder.doc_compound_id("n5.md"))  # indexed by its bare UUID
    relay_server.reset_counters()
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder).get("n3.md") == b"changed while stopped\n"
                 and head_files(tmp_path, folder).get("n7.md") == b"", "the restart's commit")
        assert svc.service.queue.wait_idle(timeout=30)
        content_fetches = relay_server.total_fetches - relay_server.fetch_count(folder.compound_id)
        assert content_fetches == 2
        assert relay_server.fetch_count(folder.doc_compound_id("n3.md")) == 1
        assert relay_server.fetch_count(folder.doc_compound_id("n7.md")) == 1
        assert relay_server.fetch_count(folder.compound_id) >= 1  # the folder is always re-read
        assert relay_server.heads_queries == 2  # all 30, then n5.md by its bare UUID


def test_a_refused_key_is_clear_in_status_and_the_folder_still_syncs(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder], transport="websocket")
    relay_server.refuse_sockets(401)
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"},
                 "the startup full sync (heads unavailable)")
        status = transport(svc)
        assert status["state"] == "unauthorized"
        assert "HTTP 401" in status["last_error"] and "RELAY_SERVER_API_KEY" in status["last_error"]
        body = svc.admin.get(f"{svc.url}/api/status", timeout=5).json()
        assert body["folders"][0]["transport"]["state"] == "unauthorized"
        assert relay_server.api_key not in json.dumps(body)


def test_both_transports_fetch_one_edit_once(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder], transport="both")
    with InProcessService(relay_server, tmp_path, debounce=1.0) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"}, "the startup commit")
        wait_for(lambda: connected(svc, relay_server, folder), "the socket")
        assert svc.service.queue.wait_idle(timeout=30)
        # The socket's subscription is in effect once an event has come through.
        folder.touch("a.md")
        wait_for(lambda: transport(svc)["events"] >= 1, "a first event")
        assert svc.service.queue.wait_idle(timeout=30)
        events = transport(svc)["events"]
        relay_server.reset_counters()
        cid = folder.doc_compound_id("a.md")
        folder.edit_markdown("a.md", "two\n")
        assert svc.post(relay_server, cid).status_code == 202
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"two\n"}, "the edit's commit")
        wait_for(lambda: transport(svc)["events"] > events, "the socket's event")
        assert svc.service.queue.wait_idle(timeout=30)
        assert relay_server.fetch_count(cid) == 1


def test_unknown_and_malformed_frames_do_not_stop_the_service(relay_server, tmp_path):
    from gitsync import yframes

    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder], transport="websocket")
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"}, "the startup commit")
        wait_for(lambda: connected(svc, relay_server, folder), "the socket")
        relay_server.send_to_sockets(yframes.encode(yframes.Unknown(99, b"\x01future")))
        relay_server.send_to_sockets(b"\x08\x03\xff\xff\xff")  # a heads answer that is no CBOR
        wait_for(lambda: transport(svc)["malformed_frames"] == 1
                 and transport(svc)["reconnects"] == 1 and connected(svc, relay_server, folder),
                 "the reconnect")
        assert transport(svc)["unknown_frames"] == 1
        folder.edit_markdown("a.md", "two\n")
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"two\n"}, "the edit's commit")
        assert svc.service.running
