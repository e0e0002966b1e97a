"""The always-on service end to end: webhooks in, commits out, crashes and shutdowns."""

from __future__ import annotations

import threading

import pytest

from gitsync.engine import Engine
from tests.relay_faults import FaultyRelay

from .harness import GunicornService, InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def test_webhook_edit_reaches_a_commit(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"}, "the startup sync commit")
        folder.edit_markdown("a.md", "two\n")
        reply = svc.post(relay_server, folder.doc_compound_id("a.md"))
        assert reply.status_code == 202 and reply.json()["status"] in ("queued", "merged")
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"two\n"}, "the edit commit")
        # A new file: its content webhook may arrive before the folder's.
        folder.put_markdown("new.md", "fresh\n")
        assert svc.post(relay_server, folder.doc_compound_id("new.md")).status_code == 202
        wait_for(lambda: head_files(tmp_path, folder).get("new.md") == b"fresh\n", "the new file")
        status = svc.service.status()
        assert status["initial_sync"] == "done"
        assert status["folders"][0]["last_error"] is None


def test_unknown_relay_is_acknowledged_and_ignored(relay_server, tmp_path, caplog):
    folder = relay_server.add_folder()
    other = relay_server.add_folder()
    other.put_markdown("x.md", "x")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path) as svc:
        with caplog.at_level("DEBUG", logger="gitsync.service"):
            for _ in range(3):
                reply = svc.post(relay_server, other.doc_compound_id("x.md"))
                assert reply.status_code == 200 and reply.json()["status"] == "ignored"
        assert svc.service.status()["counts"]["ignored"] == 3
    warnings = [r for r in caplog.records if "no connector for relay" in r.getMessage()
                and r.levelname == "WARNING"]
    assert len(warnings) == 1 and other.relay_id in warnings[0].getMessage()  # once per relay


def test_burst_of_200_webhooks_costs_at_most_2_fetches_and_the_first_is_at_once(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("busy.md", "start\n")
    write_connectors(tmp_path, [folder])
    # An interval far longer than the burst: the first fetch must not wait for it.
    with InProcessService(relay_server, tmp_path, commit_interval=0.5, debounce=600.0) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"busy.md": b"start\n"}, "startup sync")
        cid = folder.doc_compound_id("busy.md")
        folder.edit_markdown("busy.md", "final text\n")
        relay_server.reset_counters()
        for _ in range(200):
            assert svc.post(relay_server, cid).status_code == 202
        # Leading edge: committed long before the 600 s interval ends.
        wait_for(lambda: head_files(tmp_path, folder) == {"busy.md": b"final text\n"}, "the burst commit")
        assert 1 <= relay_server.fetch_count(cid) <= 2
        # The webhooks after the first fetch started wait as one re-run for the interval's
        # end; a shutdown drain (expedite) runs it now.
        assert svc.service.queue.snapshot()["deferred"] + svc.service.queue.pending_count <= 1
        svc.service.queue.expedite()
        assert svc.service.queue.wait_idle(timeout=30)
        assert svc.service.queue.snapshot()["deferred"] == 0
        assert 1 <= relay_server.fetch_count(cid) <= 2


class _OverlapDetectingEngine(Engine):
    """Records when two threads write into one folder at once (the folder lock forbids it)."""

    overlaps = 0
    active: dict = {}
    guard = threading.Lock()

    def _write_file(self, connector, *args, **kwargs):
        cls = type(self)
        with cls.guard:
            cls.active[connector.key] = cls.active.get(connector.key, 0) + 1
            if cls.active[connector.key] > 1:
                cls.overlaps += 1
        try:
            threading.Event().wait(0.002)  # widen the window a little
            return super()._write_file(connector, *args, **kwargs)
        finally:
            with cls.guard:
                cls.active[connector.key] -= 1


def test_five_folders_in_parallel_without_interleaving(relay_server, tmp_path, monkeypatch):
    folders = [relay_server.add_folder() for _ in range(5)]
    for n, folder in enumerate(folders):
        for i in range(8):
            folder.put_markdown(f"f{n}/doc{i}.md", f"v0 {n} {i}\n")
    write_connectors(tmp_path, folders)
    monkeypatch.setattr("gitsync.oneshot.Engine", _OverlapDetectingEngine)
    with InProcessService(relay_server, tmp_path, workers=6) as svc:
        wait_for(lambda: svc.service.initial_sync_done.is_set(), "startup sync")
        for n, folder in enumerate(folders):
            for i in range(8):
                folder.edit_markdown(f"f{n}/doc{i}.md", f"v1 {n} {i}\n")

        def send(folder):
            for i in range(8):
                assert svc.post(relay_server, folder.doc_compound_id(f"f{folders.index(folder)}/doc{i}.md")).status_code == 202

        threads = [threading.Thread(target=send, args=(f,)) for f in folders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n, folder in enumerate(folders):
            want = {f"f{n}/doc{i}.md": f"v1 {n} {i}\n".encode() for i in range(8)}
            wait_for(lambda folder=folder, want=want: head_files(tmp_path, folder) == want, f"folder {n}")
    assert _OverlapDetectingEngine.overlaps == 0


def test_gunicorn_serves_webhooks_and_sigterm_drains(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder])
    # Commit interval and debounce of 30 s: only the SIGTERM drain can commit this in time.
    svc = GunicornService(relay_server, data_dir, commit_interval=30, extra_env={"RELAY_GIT_DEBOUNCE": "30"})
    try:
        health = svc.wait_healthy()
        assert "initial_sync" in health
        wait_for(lambda: svc.status()["initial_sync"] == "done", "startup sync")
        folder.edit_markdown("a.md", "edited under gunicorn\n")
        assert svc.post(relay_server, folder.doc_compound_id("a.md")).status_code == 202
        assert svc.terminate() == 0, svc.output()
        assert head_files(data_dir, folder) == {"a.md": b"edited under gunicorn\n"}
    finally:
        svc.close()


def test_kill_9_after_202_loses_nothing(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder])
    svc = GunicornService(relay_server, data_dir, use_cli=True, commit_interval=30)
    try:
        svc.wait_healthy()
        wait_for(lambda: svc.status()["initial_sync"] == "done", "startup sync")
        folder.edit_markdown("a.md", "accepted then killed\n")
        assert svc.post(relay_server, folder.doc_compound_id("a.md")).status_code == 202
        svc.kill()
    finally:
        svc.close()
    assert head_files(data_dir, folder) != {"a.md": b"accepted then killed\n"}
    again = GunicornService(relay_server, data_dir, use_cli=True, commit_interval=0.3)
    try:
        again.wait_healthy()
        wait_for(lambda: head_files(data_dir, folder) == {"a.md": b"accepted then killed\n"},
                 "the accepted change after restart")
    finally:
        again.close()


def test_idle_service_does_not_contact_the_remote(relay_server, tmp_path):
    from dulwich.repo import Repo

    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder], url=str(bare))
    with InProcessService(relay_server, data_dir, commit_interval=0.1) as svc:
        wait_for(lambda: (svc.service.status()["folders"][0]["push"] or {}).get("status") in ("created", "pushed"),
                 "the first push")
        first = svc.service.status()["folders"][0]["push"]
        # several commit intervals with nothing new: the push record must not change
        ticks = svc.service.status()["counts"]["commits"]
        folder.touch("a.md")  # housekeeping only: no content change, so no commit either
        done = svc.service.queue.snapshot()["done"]
        svc.post(relay_server, folder.doc_compound_id("a.md"))
        wait_for(lambda: svc.service.queue.snapshot()["done"] > done, "the webhook to be processed")
        threading.Event().wait(0.5)  # five commit intervals
        assert svc.service.status()["folders"][0]["push"] == first
        assert svc.service.status()["counts"]["commits"] == ticks


def test_webhooks_during_the_startup_sync_never_mark_a_document_foreign(relay_server, tmp_path):
    """Found by the crash soak: a burst of webhooks for a document the service did not know
    yet used up its retries while the startup sync ran, and its later edits were dropped."""
    folder = relay_server.add_folder()
    folder.put_markdown("old.md", "old\n")
    folder.put_markdown("fresh.md", "v1\n")
    write_connectors(tmp_path, [folder])
    relay_server.pause()
    with InProcessService(relay_server, tmp_path) as svc:
        cid = folder.doc_compound_id("fresh.md")
        for _ in range(6):
            assert svc.post(relay_server, cid).status_code == 202
            threading.Event().wait(0.15)  # several retry rounds while nothing is known
        relay_server.resume()
        wait_for(lambda: head_files(tmp_path, folder).get("fresh.md") == b"v1\n", "the startup sync")
        folder.edit_markdown("fresh.md", "v2\n")
        assert svc.post(relay_server, cid).status_code == 202
        wait_for(lambda: head_files(tmp_path, folder).get("fresh.md") == b"v2\n", "the later edit")
        assert not svc.service.workers._foreign


def test_documents_of_unsynced_folders_cost_bounded_work(relay_server, tmp_path, monkeypatch):
    monkeypatch.setattr("gitsync.loops.UNKNOWN_GRACE", 0.5)
    synced = relay_server.add_folder()
    synced.put_markdown("a.md", "a\n")
    # `other` is a folder of the same relay that no connector syncs
    foreign = relay_server.add_folder(relay_id=synced.relay_id)
    foreign.put_markdown("x.md", "x\n")
    write_connectors(tmp_path, [synced])
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: svc.service.initial_sync_done.is_set(), "startup sync")
        cid = foreign.doc_compound_id("x.md")
        svc.post(relay_server, cid)
        wait_for(lambda: (synced.relay_id, foreign.doc_id("x.md")) in svc.service.workers._foreign, "the doc to be classified")
        relay_server.reset_counters()
        for _ in range(5):
            done = svc.service.queue.snapshot()["done"]
            svc.post(relay_server, cid)
            wait_for(lambda done=done: svc.service.queue.snapshot()["done"] > done, "the webhook to be processed")
        assert relay_server.fetch_count(synced.compound_id) == 0
        assert relay_server.fetch_count(cid) == 0


@pytest.mark.parametrize("env, toml, message", [
    ({"RELAY_GIT_COMMIT_INTERVAL": "abc"}, "", "RELAY_GIT_COMMIT_INTERVAL must be a number"),
    ({}, '[[git_connector]]\nrelay_id = "x"\n', "git_connector[1].shared_folder_id is required"),
    ({"SSH_PRIVATE_KEY": "garbage-KEY-MARKER"}, "", "SSH_PRIVATE_KEY"),
])
def test_gunicorn_refuses_bad_configuration_in_one_line(tmp_path, env, toml, message):
    import os
    import subprocess
    import sys

    from .harness import ROOT

    (tmp_path / "git_connectors.toml").write_text(toml)
    full_env = dict(os.environ, RELAY_GIT_DATA_DIR=str(tmp_path), RELAY_SERVER_URL="http://127.0.0.1:9",
                    RELAY_SERVER_API_KEY="k", GUNICORN_BIND="127.0.0.1:0", PYTHONPATH=str(ROOT), **env)
    proc = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
                           "--chdir", str(ROOT), "wsgi:app"], env=full_env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and "KEY-MARKER" not in proc.stderr
