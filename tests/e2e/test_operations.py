"""What an operator relies on: answers during a long startup sync, no secret anywhere,
status that says what is wrong."""

from __future__ import annotations

import logging

import pytest
import requests

from tests.relay_faults import FaultyRelay

from .harness import SECRET, InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def test_webhooks_are_accepted_while_the_startup_sync_runs(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    for i in range(20):
        folder.put_markdown(f"bulk/n{i}.md", f"{i}\n")
    write_connectors(tmp_path, [folder])
    relay_server.pause()  # the startup sync cannot finish until we say so
    with InProcessService(relay_server, tmp_path) as svc:
        health = requests.get(f"{svc.url}/health", timeout=5)
        assert health.status_code == 200
        assert health.json()["initial_sync"] == "running"
        reply = svc.post(relay_server, folder.doc_compound_id("bulk/n1.md"))
        assert reply.status_code == 202
        assert svc.service.status()["initial_sync"] == "running"
        relay_server.resume()
        wait_for(lambda: svc.service.initial_sync_done.is_set(), "the startup sync")
        assert requests.get(f"{svc.url}/health", timeout=5).json()["initial_sync"] == "done"


def test_no_secret_in_logs_status_or_errors(relay_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder], url="ssh://git@127.0.0.1:1/nowhere.git")
    api_key = "API-KEY-MARKER-7f3a"
    markers = [api_key, SECRET]
    # A relay that refuses our key, and a remote that cannot be reached: both fail.
    with InProcessService(relay_server, tmp_path, relay_server_api_key=api_key) as svc:
        wait_for(lambda: svc.service.status()["folders"][0]["failures"] > 0, "a failing sync")
        wrong = requests.post(f"{svc.url}/webhooks", json={}, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
        bodies = [requests.get(f"{svc.url}{path}", timeout=5).text
                  for path in ("/api/status", "/health", "/api/pubkey")]
        status = svc.service.status()
    assert "API key" in str(status["folders"][0]["last_error"]) or "RELAY_SERVER_API_KEY" in str(status)
    text = caplog.text + "".join(bodies) + wrong.text + str(status)
    for marker in markers:
        assert marker not in text


def test_webhook_during_shutdown_is_refused_not_acknowledged(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder])
    svc = InProcessService(relay_server, tmp_path)
    with svc:
        svc.service.stop(timeout=5)
        reply = svc.post(relay_server, folder.doc_compound_id("a.md"))
        assert reply.status_code == 503
        assert "shutting down" in reply.json()["error"]


def test_webhook_on_a_closed_queue_is_refused_not_reported_merged(relay_server, tmp_path):
    # The window inside stop() after the state check passed and before the answer: the
    # queue is closed, so nothing is stored and the answer must not be a 202.
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: svc.service.initial_sync_done.is_set(), "the startup sync")
        cid = folder.doc_compound_id("a.md")
        assert svc.post(relay_server, cid).status_code == 202
        svc.service.queue.close()
        for _ in range(2):  # a fresh key and one that would merge into deferred work
            reply = svc.post(relay_server, cid)
            assert reply.status_code == 503, reply.text
            assert "shutting down" in reply.json()["error"]


def test_one_broken_repository_does_not_stop_the_others(relay_server, tmp_path):
    broken, healthy = relay_server.add_folder(), relay_server.add_folder()
    broken.put_markdown("b.md", "b\n")
    healthy.put_markdown("h.md", "h\n")
    write_connectors(tmp_path, [healthy])
    remote = tmp_path / "remote.git"
    with (tmp_path / "git_connectors.toml").open("a") as toml:  # the broken one has a remote
        toml.write(f'\n[[git_connector]]\nshared_folder_id = "{broken.folder_id}"\n'
                   f'relay_id = "{broken.relay_id}"\nurl = "{remote}"\n')
    repo_dir = tmp_path / "repos" / broken.relay_id / broken.folder_id
    repo_dir.mkdir(parents=True)
    (repo_dir / ".git").write_text("gitdir: /nonexistent/elsewhere\n")
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, healthy) == {"h.md": b"h\n"}, "the healthy folder's commit")
        healthy.edit_markdown("h.md", "h2\n")
        svc.post(relay_server, healthy.doc_compound_id("h.md"))
        wait_for(lambda: head_files(tmp_path, healthy) == {"h.md": b"h2\n"}, "a later commit")
        status = {f["folder_id"]: f for f in svc.service.status()["folders"]}
        assert status[broken.folder_id]["last_error"]
        assert all(t.is_alive() for t in svc.service.threads if t.name != "reconciler")
