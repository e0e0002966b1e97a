"""``--max-update-bytes`` / ``--max-attachment-bytes`` reach the Relay client of ``sync``."""

from __future__ import annotations

from click.testing import CliRunner

from cli import cli
from tests.cli.test_sync import base_env, head_files, sync_args


def test_sync_skips_what_is_over_the_caps_and_syncs_the_rest(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "small\n")
    folder.put_markdown("big.md", "x" * 20_000)
    folder.put_attachment("big.bin", b"\x01" * 10_000)
    env = {**base_env(relay_server, tmp_path), "RELAY_GIT_MAX_ATTACHMENT_BYTES": "8192"}
    result = CliRunner().invoke(cli, sync_args(folder, "--max-update-bytes", "16384"), env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "skipped big.md: GET /d/" in result.output
    assert "over the 16 KiB cap on document updates" in result.output
    assert "skipped big.bin: attachment" in result.output
    assert "over the 8 KiB cap on attachments" in result.output
    repo_dir = tmp_path / "repos" / folder.relay_id / folder.folder_id
    assert head_files(repo_dir) == {"a.md": b"small\n"}


def test_caps_are_listed_in_help():
    flat = " ".join(CliRunner().invoke(cli, ["serve", "--help"]).output.split())
    for text in ("--max-update-bytes", "RELAY_GIT_MAX_UPDATE_BYTES", "default: 67108864",
                 "--max-attachment-bytes", "RELAY_GIT_MAX_ATTACHMENT_BYTES", "default: 536870912"):
        assert text in flat


def test_a_cap_too_small_is_a_usage_error(relay_server, tmp_path):
    folder = relay_server.add_folder()
    result = CliRunner().invoke(cli, sync_args(folder, "--max-update-bytes", "10"),
                                env=base_env(relay_server, tmp_path))
    assert result.exit_code == 2
    assert "--max-update-bytes (RELAY_GIT_MAX_UPDATE_BYTES) must be at least 4096 bytes" in result.output


def test_private_attachment_urls_flag_is_listed_in_help():
    for command in ("serve", "sync"):
        flat = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
        assert "--allow-private-attachment-urls" in flat
        assert "RELAY_GIT_ALLOW_PRIVATE_ATTACHMENT_URLS" in flat
