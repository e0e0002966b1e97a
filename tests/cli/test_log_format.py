"""``--log-format`` / ``RELAY_GIT_LOG_FORMAT`` for every command that logs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli import cli
from tests.cli.test_sync import base_env, sync_args


@pytest.mark.parametrize("how", ["flag", "env"])
def test_sync_logs_json_lines(relay_server, tmp_path, how):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    relay_server.fail_next(1)  # one retried request: a WARNING with relay context
    env = base_env(relay_server, tmp_path)
    args = sync_args(folder)
    if how == "flag":
        args += ["--log-format", "json"]
    else:
        env["RELAY_GIT_LOG_FORMAT"] = "json"
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(r["level"] == "WARNING" and r["logger"] == "gitsync.relay" for r in records)
    assert any(r.get("relay") == folder.relay_id for r in records)
    assert relay_server.api_key not in result.stderr
    assert "1 created" in result.stdout  # what the command prints stays text


def test_log_format_is_offered_and_checked():
    flat = " ".join(CliRunner().invoke(cli, ["status", "--help"]).output.split())
    assert "--log-format [text|json]" in flat and "RELAY_GIT_LOG_FORMAT" in flat
    bad = CliRunner().invoke(cli, ["status", "--log-format", "xml"])
    assert bad.exit_code == 2 and "--log-format" in bad.output
