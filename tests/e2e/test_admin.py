"""The admin surface over real HTTP: the token, /api/status, POST /api/sync."""

from __future__ import annotations

import logging
import re

import pytest
import requests

from gitsync import __version__
from gitsync.dev.relay import DevRelay

from .harness import ADMIN_TOKEN, InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_without_admin_token_status_is_not_served_and_startup_says_so(relay_server: DevRelay, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gitsync")
    write_connectors(tmp_path, [])
    with InProcessService(relay_server, tmp_path, admin_token=None) as svc:
        for method, path in (("GET", "/api/status"), ("POST", "/api/sync")):
            reply = requests.request(method, f"{svc.url}{path}", headers={"Authorization": "Bearer x"}, timeout=5)
            assert reply.status_code == 404
            assert reply.json() == {"error": f"{path} is disabled: set ADMIN_TOKEN to enable it"}
        assert requests.get(f"{svc.url}/health", timeout=5).json()["version"] == __version__
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ADMIN_TOKEN not set: /api/status and POST /api/sync are not served" in m for m in warnings)
    gitsync_lines = [r.getMessage() for r in caplog.records if r.name.startswith("gitsync")]
    assert gitsync_lines[0].startswith(f"relay-git-sync {__version__} starting")


def test_status_needs_the_token_and_speaks_iso_times(relay_server: DevRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"a\n"}, "the startup commit")
        assert requests.get(f"{svc.url}/api/status", timeout=5).status_code == 401
        wrong = requests.get(f"{svc.url}/api/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}, timeout=5)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        assert ADMIN_TOKEN not in wrong.text
        body = svc.admin.get(f"{svc.url}/api/status", timeout=5).json()
    assert body["version"] == __version__ and body["health"] == "ok"
    entry = body["folders"][0]
    assert ISO.match(entry["last_success"]) and ISO.match(entry["last_sync"])
    assert entry["failures"] == 0 and entry["last_error"] is None


def test_post_sync_runs_a_full_sync_of_one_folder_or_all(relay_server: DevRelay, tmp_path):
    one, two = relay_server.add_folder(), relay_server.add_folder()
    one.put_markdown("a.md", "a\n")
    two.put_markdown("b.md", "b\n")
    write_connectors(tmp_path, [one, two])
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, two) == {"b.md": b"b\n"}, "the startup commits")
        # edits no webhook announces: only a full sync finds them
        one.edit_markdown("a.md", "a2\n")
        two.edit_markdown("b.md", "b2\n")
        reply = svc.admin.post(f"{svc.url}/api/sync", json={"relay_id": one.relay_id, "folder_id": one.folder_id},
                               timeout=5)
        assert reply.status_code == 202
        assert reply.json()["folders"] == [{"relay_id": one.relay_id, "folder_id": one.folder_id}]
        wait_for(lambda: head_files(tmp_path, one) == {"a.md": b"a2\n"}, "the requested sync")
        assert head_files(tmp_path, two) == {"b.md": b"b\n"}
        assert svc.admin.post(f"{svc.url}/api/sync", timeout=5).status_code == 202  # no body: all
        wait_for(lambda: head_files(tmp_path, two) == {"b.md": b"b2\n"}, "the sync of all folders")

        for body, status, message in (
            ({"relay_id": one.relay_id}, 400, "relay_id and folder_id go together"),
            ({"relay_id": "nope", "folder_id": one.folder_id}, 400, "relay_id"),
            ([1], 400, "body must be a JSON object"),
            ({"confirm_deletions": "yes"}, 400, "confirm_deletions must be true or false"),
            ({"relay_id": one.relay_id, "folder_id": two.relay_id}, 404, "no connector for relay"),
        ):
            reply = svc.admin.post(f"{svc.url}/api/sync", json=body, timeout=5)
            assert reply.status_code == status and message in reply.json()["error"], (body, reply.text)
        assert requests.post(f"{svc.url}/api/sync", timeout=5).status_code == 401


def test_post_sync_can_confirm_a_held_deletion(relay_server: DevRelay, tmp_path):
    folder = relay_server.add_folder()
    for i in range(6):
        folder.put_markdown(f"n{i}.md", f"{i}\n")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path, mass_delete_min=2) as svc:
        wait_for(lambda: len(head_files(tmp_path, folder)) == 6, "the startup commit")
        for i in range(5):
            folder.delete(f"n{i}.md")
        svc.admin.post(f"{svc.url}/api/sync", json={"relay_id": folder.relay_id, "folder_id": folder.folder_id},
                       timeout=5)
        wait_for(lambda: svc.service.status()["folders"][0]["held_deletion"] is not None, "the held deletion")
        health = requests.get(f"{svc.url}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["reasons"][0]["kind"] == "held_deletion"
        svc.admin.post(f"{svc.url}/api/sync", json={"relay_id": folder.relay_id, "folder_id": folder.folder_id,
                                                     "confirm_deletions": True}, timeout=5)
        wait_for(lambda: head_files(tmp_path, folder) == {"n5.md": b"5\n"}, "the confirmed deletion")
        assert svc.service.status()["folders"][0]["held_deletion"] is None
        assert requests.get(f"{svc.url}/health", timeout=5).json()["status"] == "ok"
