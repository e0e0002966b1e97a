"""/health tells the truth: ok only when folders sync and push; degraded past the grace
period; 503 for what cannot heal by itself."""

from __future__ import annotations

import logging

import pytest
import requests

from tests.fixtures_ssh import GitRemote
from tests.relay_faults import FaultyRelay

from .harness import InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def health(svc: InProcessService) -> tuple[int, dict]:
    reply = requests.get(f"{svc.url}/health", timeout=5)
    return reply.status_code, reply.json()


def test_a_refused_api_key_is_unhealthy(relay_server: FaultyRelay, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gitsync.loops")
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder], transport="webhook")
    with InProcessService(relay_server, tmp_path, relay_server_api_key="not-the-key") as svc:
        wait_for(lambda: svc.service.initial_sync_done.is_set(), "the startup sync")
        code, body = health(svc)
    assert code == 503 and body["status"] == "unhealthy"
    (reason,) = body["reasons"]
    assert (reason["relay_id"], reason["folder_id"], reason["kind"]) == (folder.relay_id, folder.folder_id, "read")
    assert reason["permanent"] is True and "API key" in reason["message"]
    line = next(r for r in caplog.records if r.getMessage().startswith("initial sync complete"))
    assert line.getMessage() == "initial sync complete folders=1 failed=1" and line.levelno == logging.WARNING


def test_a_working_service_is_ok_and_the_startup_line_is_info(relay_server: FaultyRelay, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gitsync.loops")
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: svc.service.initial_sync_done.is_set(), "the startup sync")
        code, body = health(svc)
    assert code == 200 and body["status"] == "ok" and "reasons" not in body
    line = next(r for r in caplog.records if r.getMessage().startswith("initial sync complete"))
    assert line.getMessage() == "initial sync complete folders=1 failed=0" and line.levelno == logging.INFO


def test_an_unreachable_relay_degrades_past_the_grace_period_and_heals(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder])
    # grace 0: the first failure counts (the grace period itself is tested on the tracker)
    with InProcessService(relay_server, tmp_path, health_grace=0, relay_retries=0) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"a\n"}, "the startup commit")
        assert health(svc) == (200, health(svc)[1]) and health(svc)[1]["status"] == "ok"
        relay_server.fail_next(10_000, status=503)
        folder.edit_markdown("a.md", "b\n")
        svc.post(relay_server, folder.doc_compound_id("a.md"))
        wait_for(lambda: health(svc)[1]["status"] == "degraded", "degraded")
        code, body = health(svc)
        assert code == 200 and body["reasons"][0]["kind"] == "read" and not body["reasons"][0]["permanent"]
        relay_server.clear_faults()
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"b\n"}, "the retried edit")
        wait_for(lambda: health(svc)[1]["status"] == "ok", "healed")


def test_a_refused_websocket_is_unhealthy(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder], transport="websocket")
    relay_server.refuse_sockets(401)
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: health(svc)[0] == 503, "the refused websocket")
        body = health(svc)[1]
    assert [r["kind"] for r in body["reasons"]] == ["websocket"]
    assert "HTTP 401" in body["reasons"][0]["message"]


@pytest.mark.ssh
def test_a_permanently_rejected_push_is_unhealthy(relay_server: FaultyRelay, git_remote: GitRemote, tmp_path):
    from tests.test_publish import server_hook

    server_hook(git_remote, "pre-receive", "echo 'GH001: Large files detected' >&2\nexit 1\n")
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder], url=git_remote.url, known_hosts=[git_remote.known_hosts_line])
    with InProcessService(relay_server, data_dir, ssh_private_key=git_remote.client_private_key) as svc:
        wait_for(lambda: health(svc)[0] == 503, "the rejected push")
        body = health(svc)[1]
        status = svc.service.status()["folders"][0]
    assert body["status"] == "unhealthy"
    assert [(r["kind"], r["permanent"]) for r in body["reasons"]] == [("push", True)]
    assert "declined" in body["reasons"][0]["message"]
    assert status["push"]["permanent"] is True and status["unpushed_commits"] == 1
