"""The service's loops (gitsync.loops) as /api/status shows them."""

from __future__ import annotations

from gitsync.loops import FolderPhase

from .harness import InProcessService, wait_for, write_connectors


def _loops(svc: InProcessService) -> dict[str, str]:
    return svc.service.status()["loops"]


def _folder_state(svc: InProcessService) -> str:
    return svc.service.status()["folders"][0]["state"]


def test_status_shows_what_each_loop_and_folder_is_doing(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder])
    relay_server.pause()  # the startup sync waits on the relay
    with InProcessService(relay_server, tmp_path, workers=2) as svc:
        try:
            wait_for(lambda: _folder_state(svc) == FolderPhase.INITIAL_SYNC, "the startup sync to begin")
            assert _loops(svc) == {"worker-0": "idle", "worker-1": "idle", "publisher-0": "waiting",
                                   "publisher-1": "waiting", "reconciler": "startup"}
            relay_server.resume()
            wait_for(lambda: _loops(svc)["reconciler"] == "waiting", "the reconciler to wait")
            wait_for(lambda: _folder_state(svc) == FolderPhase.IDLE, "the folder to be in step")

            relay_server.pause()  # a webhook's fetch now waits on the relay
            folder.edit_markdown("a.md", "two\n")
            assert svc.post(relay_server, folder.doc_compound_id("a.md")).status_code == 202
            wait_for(lambda: "syncing" in _loops(svc).values(), "a worker to sync")
            assert _folder_state(svc) == FolderPhase.SYNCING
            relay_server.resume()
            wait_for(lambda: _folder_state(svc) == FolderPhase.IDLE, "the edit to be applied")
            wait_for(lambda: all(state == "idle" for name, state in _loops(svc).items()
                                 if name.startswith("worker")), "the workers to be idle")
        finally:
            relay_server.resume()  # never stop the service on a paused relay
    assert set(_loops(svc).values()) == {"stopped"}


def test_a_repository_that_cannot_be_read_does_not_end_a_publisher_thread(relay_server, tmp_path):
    """The publishers' sweep asks every folder whether it has commits to push; a broken
    repository must make that folder fail, not the thread that asked."""
    folder = relay_server.add_folder()
    write_connectors(tmp_path, [folder], url=str(tmp_path / "remote.git"))
    repo_dir = tmp_path / "repos" / folder.relay_id / folder.folder_id
    repo_dir.mkdir(parents=True)
    (repo_dir / ".git").write_text("gitdir: /nonexistent/elsewhere\n")
    with InProcessService(relay_server, tmp_path, commit_interval=0.2) as svc:
        connector = svc.service.config.connectors[0]
        wait_for(lambda: svc.service.initial_sync_done.is_set(), "the startup sync")
        # the startup push failed; once its backoff is over, every sweep asks the repository
        wait_for(lambda: svc.service.publisher.due(connector), "the push backoff to end")
        failures = svc.service.status()["folders"][0]["failures"]
        wait_for(lambda: svc.service.status()["folders"][0]["failures"] >= failures + 2, "more attempts")
        assert all(t.is_alive() for t in svc.service.publishers.threads)
        assert "stopped" not in _loops(svc).values()
