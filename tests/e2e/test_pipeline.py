"""Fairness of the pipeline: no folder waits on another's network I/O or lock.

Each test holds some of the stand-in's document reads (a slow Relay Server for those
documents only) or a folder's lock, and shows that other work still gets through. With
the folder lock held across a full sync's fetches, or one FIFO fetch pool, or a
committer walking the folders in turn, these tests time out.
"""

from __future__ import annotations

import threading

from gitsync.config import Connector
from tests.e2e.harness import InProcessService, head_files, wait_for, write_connectors


def _connector(svc: InProcessService, folder) -> Connector:
    found = svc.service.config.find(folder.relay_id, folder.folder_id)
    assert found is not None
    return found


def _start_full_sync(svc: InProcessService, connector: Connector) -> threading.Thread:
    thread = threading.Thread(
        target=svc.service.engine.sync_folder, args=(connector,), kwargs={"full": True}, daemon=True
    )
    thread.start()
    return thread


def test_webhook_edits_pass_a_full_sync_stuck_on_the_relay(relay_server, tmp_path):
    small = relay_server.add_folder()
    small.put_markdown("a.md", "a0\n")
    big = relay_server.add_folder()
    for n in range(40):
        big.put_markdown(f"n{n}.md", f"{n}\n")
    big.put_markdown("hot.md", "hot0\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [small, big])
    with InProcessService(relay_server, data_dir, commit_interval=0.3) as svc:
        wait_for(lambda: svc.service.status()["initial_sync"] == "done", "startup sync")
        wait_for(lambda: head_files(data_dir, big).get("hot.md") == b"hot0\n", "first commit")
        # Every document of the big folder but hot.md now hangs on the relay: its full
        # sync has all bulk fetch threads stuck, and (before the pipeline) its lock.
        relay_server.hold(big.doc_compound_id(f"n{n}.md") for n in range(40))
        try:
            bulk = _start_full_sync(svc, _connector(svc, big))
            wait_for(lambda: relay_server.held_waiting >= 2, "the full sync to hang on the relay")

            small.edit_markdown("a.md", "a1\n")
            assert svc.post(relay_server, small.doc_compound_id("a.md")).status_code == 202
            big.edit_markdown("hot.md", "hot1\n")
            assert svc.post(relay_server, big.doc_compound_id("hot.md")).status_code == 202

            wait_for(lambda: head_files(data_dir, small).get("a.md") == b"a1\n",
                     "the other folder's edit, committed", timeout=30)
            wait_for(lambda: head_files(data_dir, big).get("hot.md") == b"hot1\n",
                     "the same folder's edit, committed", timeout=30)
            assert relay_server.held_waiting >= 1 and bulk.is_alive()  # still stuck meanwhile
        finally:
            relay_server.release()
        bulk.join(timeout=60)


def test_commits_go_on_while_another_folders_lock_is_held(relay_server, tmp_path):
    one = relay_server.add_folder()
    one.put_markdown("a.md", "a0\n")
    two = relay_server.add_folder()
    two.put_markdown("b.md", "b0\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [one, two])
    with InProcessService(relay_server, data_dir, commit_interval=0.3) as svc:
        wait_for(lambda: svc.service.status()["initial_sync"] == "done", "startup sync")
        wait_for(lambda: head_files(data_dir, two) == {"b.md": b"b0\n"}, "first commit")
        lock = svc.service.engine.lock(_connector(svc, one))
        held, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with lock:
                held.set()
                release.wait(60)

        holder = threading.Thread(target=hold_lock, daemon=True)
        holder.start()
        try:
            assert held.wait(10)
            two.edit_markdown("b.md", "b1\n")
            assert svc.post(relay_server, two.doc_compound_id("b.md")).status_code == 202
            wait_for(lambda: head_files(data_dir, two) == {"b.md": b"b1\n"},
                     "a commit of the folder whose lock is free", timeout=30)
        finally:
            release.set()
            holder.join(10)


def test_leading_edge_then_at_most_one_commit_per_interval(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "0\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder])
    with InProcessService(relay_server, data_dir) as svc:
        wait_for(lambda: head_files(data_dir, folder) == {"a.md": b"0\n"}, "first commit")
    checkout = data_dir / "repos" / folder.relay_id / folder.folder_id / "a.md"
    # A restart with nothing new: the folder has not committed for longer than any
    # interval. The interval is far longer than any wait below, so each step shows
    # which edge the schedule acts on, whatever the machine's speed.
    with InProcessService(relay_server, data_dir, commit_interval=600) as svc:
        wait_for(lambda: svc.service.status()["initial_sync"] == "done", "startup sync")
        folder.edit_markdown("a.md", "1\n")
        svc.post(relay_server, folder.doc_compound_id("a.md"))
        wait_for(lambda: head_files(data_dir, folder) == {"a.md": b"1\n"},
                 "the first edit after a quiet spell, committed at once", timeout=120)
        for n in range(2, 12):
            folder.edit_markdown("a.md", f"{n}\n")
            svc.post(relay_server, folder.doc_compound_id("a.md"))
        wait_for(lambda: checkout.read_bytes() == b"11\n", "the later edits, written")
        # Written but not committed: the next commit waits for the interval's end.
        assert head_files(data_dir, folder) == {"a.md": b"1\n"}
        assert svc.service.status()["counts"]["commits"] == 1
    # Stopping makes the final commit: nothing accepted is lost.
    assert head_files(data_dir, folder) == {"a.md": b"11\n"}
