"""``ssh``, ``connectors`` and ``demo`` commands, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cli import cli

ROOT = Path(__file__).resolve().parents[2]
RELAY = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
FOLDER = "f47ac10b-58cc-4372-a567-0e02b2c3d479"


def ed25519_private_text() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def test_show_pubkey_prints_the_public_line():
    result = CliRunner().invoke(cli, ["ssh", "show-pubkey"], env={"SSH_PRIVATE_KEY": ed25519_private_text()})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ssh-ed25519 AAAA")
    assert "PRIVATE" not in result.output


@pytest.mark.parametrize("env, message", [
    ({}, "no SSH key configured: set SSH_PRIVATE_KEY"),
    ({"SSH_PRIVATE_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage-MARKER\n-----END OPENSSH PRIVATE KEY-----\n"},
     "SSH_PRIVATE_KEY"),
])
def test_show_pubkey_errors_are_clear(env, message):
    result = CliRunner().invoke(cli, ["ssh", "show-pubkey"], env=env)
    assert result.exit_code == 2
    assert message in result.output
    assert "garbage-MARKER" not in result.output and "Traceback" not in result.output


def write_connectors(tmp_path: Path, body: str) -> None:
    (tmp_path / "git_connectors.toml").write_text(body)


def test_connectors_list_shows_remote_and_host_key_trust(tmp_path):
    write_connectors(tmp_path, f'''
known_hosts = ["[git.example.com]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]
[[git_connector]]
shared_folder_id = "{FOLDER}"
relay_id = "{RELAY}"
url = "git@github.com:example/vault.git"
[[git_connector]]
shared_folder_id = "{RELAY}"
relay_id = "{RELAY}"
url = "ssh://git@unknown.example.org/x.git"
prefix = "notes"
[[git_connector]]
shared_folder_id = "{FOLDER}"
relay_id = "{FOLDER}"
url = "https://user:TOKEN-MARKER@git.example.com/x.git"
''')
    result = CliRunner().invoke(cli, ["connectors", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "host-key=trusted" in lines[0]  # built-in github.com key
    assert "host-key=UNKNOWN" in lines[1] and "prefix=notes" in lines[1]
    assert "TOKEN-MARKER" not in result.output


def test_connectors_validate_names_file_line_and_key(tmp_path):
    write_connectors(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "not-a-uuid"\n')
    result = CliRunner().invoke(cli, ["connectors", "validate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "git_connectors.toml line 3: git_connector[1].relay_id must be a UUID" in result.output


def test_connectors_validate_ok_and_check_remote_reports_unreachable(tmp_path):
    bare = tmp_path / "remote.git"
    from dulwich.repo import Repo

    Repo.init_bare(str(bare), mkdir=True).close()
    write_connectors(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nurl = "{bare}"\n'
                     f'\n[[git_connector]]\nshared_folder_id = "{RELAY}"\nrelay_id = "{RELAY}"\nurl = "{tmp_path / "missing.git"}"\n')
    result = CliRunner().invoke(cli, ["connectors", "validate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "2 connector(s)" in result.output
    result = CliRunner().invoke(cli, ["connectors", "validate", "--check-remote", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "reachable, main absent (will be created)" in result.output
    assert "1 remote(s) could not be reached" in result.output


def test_help_lists_every_command_and_variable():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    flat = " ".join(result.output.split())
    for text in ("RELAY_SERVER_URL", "WEBHOOK_SECRET", "--commit-interval", "default: 10.0",
                 "--proxy-hops", "RELAY_GIT_PROXY_HOPS"):
        assert text in flat
    top = CliRunner().invoke(cli, ["--help"]).output
    for command in ("serve", "sync", "demo", "ssh", "connectors"):
        assert command in top


@pytest.mark.slow
def test_demo_runs_without_git_on_path(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "demo", "--keep", str(tmp_path / "demo")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "history of the remote" in proc.stdout
    assert "rename notes/archive/2024.md -> archive/2024.md" in proc.stdout.lower()
    # two relay users, each credited with their edits; the initial import is the service's
    for author in ("Ada Lovelace <ada@example.org>", "Grace Hopper <grace@example.org>",
                   "Relay Git Sync <relay-git-sync@localhost>"):
        assert f"author: {author}" in proc.stdout
    assert (tmp_path / "demo" / "remote.git").is_dir()


@pytest.mark.parametrize("body, problem", [
    (f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nurl = "ftp://nope"\n',
     "git_connector[1].url"),
    (f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nurl = "git@github.com:a/b.git"\n',
     "uses SSH but SSH_PRIVATE_KEY is not set"),
    ('known_hosts = ["garbage line"]\n', "known_hosts[1] is not an OpenSSH known_hosts line"),
])
def test_connectors_validate_reports_problems_it_can_see_offline(tmp_path, body, problem):
    write_connectors(tmp_path, body)
    result = CliRunner().invoke(cli, ["connectors", "validate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert problem in result.output


def test_connectors_validate_complains_about_a_missing_file(tmp_path):
    result = CliRunner().invoke(cli, ["connectors", "validate", "--data-dir", str(tmp_path / "typo")])
    assert result.exit_code == 2
    assert "no connectors file at" in result.output


def test_relative_local_url_is_relative_to_the_data_directory(tmp_path):
    write_connectors(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\n'
                     'url = "./backup.git"\n')
    result = CliRunner().invoke(cli, ["connectors", "list", "--data-dir", str(tmp_path)])
    assert str(tmp_path / "backup.git") in result.output


def test_show_pubkey_recognizes_a_public_key_or_a_path(tmp_path):
    public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me"
    result = CliRunner().invoke(cli, ["ssh", "show-pubkey"], env={"SSH_PRIVATE_KEY": public})
    assert result.exit_code == 2 and "holds a public key" in result.output
    key_file = tmp_path / "git_sync_key"
    key_file.write_text(ed25519_private_text())
    result = CliRunner().invoke(cli, ["ssh", "show-pubkey"], env={"SSH_PRIVATE_KEY": str(key_file)})
    assert result.exit_code == 2 and "holds a file path" in result.output


def test_demo_refuses_a_used_keep_directory(tmp_path):
    (tmp_path / "something").write_text("x")
    result = CliRunner().invoke(cli, ["demo", "--keep", str(tmp_path)])
    assert result.exit_code == 2 and "is not empty" in result.output


def test_status_errors_are_clear(tmp_path):
    result = CliRunner().invoke(cli, ["status", "--data-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(cli, ["status", "--url", "127.0.0.1:9"])
    assert result.exit_code == 1 and "cannot read http://127.0.0.1:9/api/status" in result.output
