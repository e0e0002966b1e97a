"""Logs: gunicorn's lines and ours in one format; JSON lines for log shippers, scrubbed."""

from __future__ import annotations

import json

import pytest
from dulwich.repo import Repo

from gitsync.dev.relay import DevRelay

from .harness import SECRET, GunicornService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow

API_KEY = "API-KEY-MARKER-7f3a9c"


def run_service(tmp_path, log_format: str) -> tuple[str, DevRelay, object]:
    """Start gunicorn, sync a folder, push, take one webhook, SIGTERM; returns the log."""
    relay = DevRelay(api_key=API_KEY)
    relay.start()
    try:
        folder = relay.add_folder()
        folder.put_markdown("notes/a b.md", "one\n")
        bare = tmp_path / "remote.git"
        Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
        data_dir = tmp_path / "data"
        write_connectors(data_dir, [folder], url=str(bare))
        svc = GunicornService(relay, data_dir, commit_interval=0.3,
                              extra_env={"RELAY_GIT_LOG_FORMAT": log_format})
        try:
            svc.wait_healthy()
            wait_for(lambda: svc.status()["initial_sync"] == "done", "startup sync")
            folder.edit_markdown("notes/a b.md", "two\n")
            assert svc.post(relay, folder.doc_compound_id("notes/a b.md")).status_code == 202
            wait_for(lambda: head_files(data_dir, folder) == {"notes/a b.md": b"two\n"},
                     "the edit to be committed")
            assert svc.terminate() == 0, svc.output()
            return svc.output(), relay, folder
        finally:
            svc.close()
    finally:
        relay.stop()


def test_json_logs_are_one_object_per_line_gunicorn_included(tmp_path):
    output, relay, folder = run_service(tmp_path, "json")
    lines = output.splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    loggers = {r["logger"] for r in records}
    assert "gunicorn.error" in loggers  # gunicorn's own lines
    assert any(r["message"].startswith("Booting worker") for r in records)
    assert any(r["logger"].startswith("gitsync.") for r in records)
    # Context written as key=value in messages becomes fields.
    commits = [r for r in records if r["message"].startswith("commit made")]
    assert commits and all(r["relay"] == folder.relay_id and r["folder"] == folder.folder_id
                           and len(r["commit"]) >= 7 for r in commits)
    assert any(r.get("path") for r in records)
    # The secret filter runs before the JSON formatter.
    assert API_KEY not in output and SECRET not in output


def test_text_logs_share_one_format_with_gunicorn(tmp_path):
    output, _, _ = run_service(tmp_path, "text")
    gunicorn_lines = [line for line in output.splitlines() if " gunicorn.error: " in line]
    assert any("Starting gunicorn" in line for line in gunicorn_lines)
    # gunicorn's default format ("[2026-...] [pid] [INFO] ...") is gone.
    assert not any(line.startswith("[") for line in output.splitlines())
    assert API_KEY not in output and SECRET not in output
