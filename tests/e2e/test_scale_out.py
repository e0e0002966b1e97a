"""Scale-out: several service instances with disjoint connectors against one Relay Server.

By relay: the server's webhook configs route by document-id prefix (the relay id), so
each instance hears only its relays. By folder: each instance lists only its folders;
with websockets it listens only to those."""

from __future__ import annotations

import pytest

from gitsync.dev.relay import DevRelay

from .harness import SECRET, InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def test_two_instances_split_by_relay_prefix(relay_server: DevRelay, tmp_path):
    first = relay_server.add_folder()
    relay_a = first.relay_id
    ours = [first, relay_server.add_folder(relay_id=relay_a)]  # relay A, two folders
    theirs = relay_server.add_folder()  # relay B
    for n, folder in enumerate([*ours, theirs]):
        folder.put_markdown("note.md", f"v1 {n}\n")
    write_connectors(tmp_path / "a", ours, transport="webhook")
    write_connectors(tmp_path / "b", [theirs], transport="webhook")
    with InProcessService(relay_server, tmp_path / "a") as a, InProcessService(relay_server, tmp_path / "b") as b:
        relay_server.set_webhooks([
            {"url": f"{a.url}/webhooks", "auth_token": SECRET, "prefix": f"{relay_a}-"},
            {"url": f"{b.url}/webhooks", "auth_token": SECRET, "prefix": f"{theirs.relay_id}-"},
        ])
        for n, folder in enumerate(ours):
            wait_for(lambda f=folder, n=n: head_files(tmp_path / "a", f) == {"note.md": f"v1 {n}\n".encode()},
                     "instance a's startup sync")
        wait_for(lambda: head_files(tmp_path / "b", theirs) == {"note.md": b"v1 2\n"}, "instance b's startup sync")
        assert a.service.queue.wait_idle(timeout=30) and b.service.queue.wait_idle(timeout=30)

        relay_server.reset_counters()
        for n, folder in enumerate([*ours, theirs]):
            folder.edit_markdown("note.md", f"v2 {n}\n")  # announced by the stand-in's webhooks only
        for n, folder in enumerate(ours):
            wait_for(lambda f=folder, n=n: head_files(tmp_path / "a", f) == {"note.md": f"v2 {n}\n".encode()},
                     "instance a's edit")
        wait_for(lambda: head_files(tmp_path / "b", theirs) == {"note.md": b"v2 2\n"}, "instance b's edit")

        # each instance heard only its relay, and only synced its own folders
        for url, doc, status in list(relay_server.deliveries):
            assert status == 202, (url, doc, status)
            assert doc.startswith(f"{relay_a}-") == url.startswith(a.url)
        assert a.service.status()["counts"]["ignored"] == 0 and b.service.status()["counts"]["ignored"] == 0
        assert {f["folder_id"] for f in a.service.status()["folders"]} == {f.folder_id for f in ours}
        assert [f["folder_id"] for f in b.service.status()["folders"]] == [theirs.folder_id]
    assert not (tmp_path / "a" / "repos" / theirs.relay_id).exists()
    assert sorted(p.name for p in (tmp_path / "b" / "repos").iterdir()) == [theirs.relay_id]


def test_two_instances_split_one_relay_by_folder_over_websockets(relay_server: DevRelay, tmp_path):
    first = relay_server.add_folder()
    second = relay_server.add_folder(relay_id=first.relay_id)
    first.put_markdown("one.md", "1\n")
    second.put_markdown("two.md", "2\n")
    write_connectors(tmp_path / "a", [first], transport="websocket")
    write_connectors(tmp_path / "b", [second], transport="websocket")
    with InProcessService(relay_server, tmp_path / "a") as a, InProcessService(relay_server, tmp_path / "b") as b:
        wait_for(lambda: head_files(tmp_path / "a", first) == {"one.md": b"1\n"}, "a's startup sync")
        wait_for(lambda: head_files(tmp_path / "b", second) == {"two.md": b"2\n"}, "b's startup sync")
        wait_for(lambda: relay_server.socket_count(first.compound_id) == 1
                 and relay_server.socket_count(second.compound_id) == 1, "one socket per folder")
        first.edit_markdown("one.md", "1b\n")
        second.edit_markdown("two.md", "2b\n")
        wait_for(lambda: head_files(tmp_path / "a", first) == {"one.md": b"1b\n"}, "a's edit")
        wait_for(lambda: head_files(tmp_path / "b", second) == {"two.md": b"2b\n"}, "b's edit")
        assert a.service.status()["counts"]["ignored"] == 0 and b.service.status()["counts"]["ignored"] == 0
    assert not (tmp_path / "a" / "repos" / first.relay_id / second.folder_id).exists()
    assert not (tmp_path / "b" / "repos" / first.relay_id / first.folder_id).exists()
