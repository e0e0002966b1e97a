"""``cli.py status`` and ``cli.py sync`` next to a running service: the same view online
and offline, failures kept across a stop, a sync asked of the service instead of refused."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import cli
from tests.e2e.harness import ADMIN_TOKEN, InProcessService, head_files, wait_for, write_connectors
from tests.relay_faults import FaultyRelay

pytestmark = pytest.mark.slow


def run(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, args, env=env or {}, catch_exceptions=False)


def folder_lines(output: str) -> list[str]:
    """The per-folder part of the human view (the header differs online and offline)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if " -> " in line)
    return lines[start:]


def test_status_online_and_offline_print_the_same_view_and_keep_failures(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path, relay_retries=0) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"a\n"}, "the startup commit")
        relay_server.fail_next(10_000, status=503)
        folder.edit_markdown("a.md", "b\n")
        svc.post(relay_server, folder.doc_compound_id("a.md"))
        wait_for(lambda: svc.service.status()["folders"][0]["failures"] >= 2, "two failures in a row")
        svc.service.queue.close()  # no more retries: the count stays put while we compare
        online = run(["status", "--url", svc.url], {"ADMIN_TOKEN": ADMIN_TOKEN})
        assert online.exit_code == 0, online.output
        raw = json.loads(run(["status", "--url", svc.url, "--json"], {"ADMIN_TOKEN": ADMIN_TOKEN}).output)
        failures = raw["folders"][0]["failures"]
        assert f"failures: {failures} in a row" in online.output
        assert "service: running" in online.output and "HTTP 503" in online.output
        offline = run(["status", "--data-dir", str(tmp_path)])
        assert offline.exit_code == 0, offline.output
        assert f"failures: {failures} in a row" in offline.output
        common = [line for line in folder_lines(online.output) if line.startswith(("  files:", "  failures:"))]
        assert common and all(line in offline.output for line in common)
        relay_server.clear_faults()
    # stopped: the last failure is still there, read from the data directory
    stopped = run(["status", "--data-dir", str(tmp_path)])
    assert f"failures: {failures} in a row" in stopped.output and "HTTP 503" in stopped.output
    data = json.loads(run(["status", "--data-dir", str(tmp_path), "--json"]).output)
    assert data["folders"][0]["failures"] == failures and data["folders"][0]["last_error_at"].endswith("Z")
    assert ADMIN_TOKEN not in online.output + stopped.output


def test_status_url_without_the_token_says_what_to_set(relay_server: FaultyRelay, tmp_path):
    write_connectors(tmp_path, [])
    with InProcessService(relay_server, tmp_path) as svc:
        result = run(["status", "--url", svc.url])
    assert result.exit_code == 1 and "set ADMIN_TOKEN" in result.output


def test_sync_while_the_service_runs_asks_it(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path, [folder])
    env = {"RELAY_SERVER_URL": relay_server.url, "RELAY_SERVER_API_KEY": relay_server.api_key,
           "RELAY_GIT_DATA_DIR": str(tmp_path)}
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"a\n"}, "the startup commit")
        folder.edit_markdown("a.md", "changed without a webhook\n")
        args = ["sync", "--relay-id", folder.relay_id, "--folder-id", folder.folder_id]
        refused = run(args, env)  # no token: the old refusal, now saying what to set
        assert refused.exit_code == 1
        assert "in use by another process" in refused.output and "ADMIN_TOKEN" in refused.output
        port = svc.url.rsplit(":", 1)[1]
        asked = run(args, {**env, "ADMIN_TOKEN": ADMIN_TOKEN, "PORT": port})
        assert asked.exit_code == 0, asked.output
        assert "full sync queued on the service" in asked.output
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"changed without a webhook\n"},
                 "the sync the CLI asked for")
        folder.edit_markdown("a.md", "again\n")
        by_url = run(["sync", "--all", "--url", svc.url], {"ADMIN_TOKEN": ADMIN_TOKEN})
        assert by_url.exit_code == 0, by_url.output
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"again\n"}, "the sync of all folders")
        assert run(["sync", "--all", "--url", svc.url, "--no-push"], {"ADMIN_TOKEN": ADMIN_TOKEN}).exit_code == 2
        wrong = run(["sync", "--all", "--url", svc.url], {"ADMIN_TOKEN": "wrong-token-0123456789"})
        assert wrong.exit_code == 1 and "refused the admin token" in wrong.output
