"""Every configuration error of every command exits 2 and names the flag, variable or line.

1 is kept for work that failed with a good configuration (an unreachable remote, a
folder that did not sync); 0 for success.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli

ROOT = Path(__file__).resolve().parents[2]
RELAY = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
FOLDER = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
TYPO = f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nurl = "github.com/me/vault"\n'
TYPO_MESSAGE = "git_connectors.toml line 4: git_connector[1].url must be an absolute path"
SSH_URL = f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nurl = "git@h:v.git"\n'
RELAY_ENV = {"RELAY_SERVER_URL": "http://127.0.0.1:9", "RELAY_SERVER_API_KEY": "k"}


@pytest.fixture(autouse=True)
def _serve_never_becomes_gunicorn(monkeypatch):
    """If a check regressed, ``serve`` would exec gunicorn in place of the test run."""

    def refuse(*args, **kwargs):
        raise AssertionError("serve accepted the configuration and would start gunicorn")

    monkeypatch.setattr(os, "execve", refuse)


@pytest.mark.parametrize(
    "args, env, toml, message",
    [
        # settings, from flags and variables
        (["serve"], {}, None, "--relay-server-url or RELAY_SERVER_URL must be set"),
        (["serve"], {"RELAY_SERVER_URL": "http://r"}, None, "RELAY_SERVER_API_KEY must be set"),
        (["serve"], {**RELAY_ENV, "PORT": "70000"}, None, "--port (PORT) must be between 1 and 65535"),
        (["serve", "--host", "not a host"], RELAY_ENV, None, "--host (RELAY_GIT_HOST) must be"),
        (["serve", "--bind", " "], RELAY_ENV, None, "--bind"),
        (["serve"], {**RELAY_ENV, "RELAY_GIT_LOG_LEVEL": "LOUD"}, None, "RELAY_GIT_LOG_LEVEL"),
        (["sync", "--all"], {"RELAY_SERVER_API_KEY": "k"}, None, "RELAY_SERVER_URL must be set"),
        (["sync", "--all"], {**RELAY_ENV, "RELAY_GIT_FETCH_CONCURRENCY": "0"}, None,
         "RELAY_GIT_FETCH_CONCURRENCY must be at least 1"),
        (["status", "--data-dir", "{tmp}/missing"], {}, None,
         "does not exist (check --data-dir / RELAY_GIT_DATA_DIR)"),
        (["connectors", "list"], {"RELAY_GIT_SSH_TRUST_ON_FIRST_USE": "maybe"}, None,
         "RELAY_GIT_SSH_TRUST_ON_FIRST_USE must be true or false"),
        # the connectors file
        (["serve"], RELAY_ENV, TYPO, TYPO_MESSAGE),
        (["sync", "--all"], RELAY_ENV, TYPO, TYPO_MESSAGE),
        (["status"], {}, TYPO, TYPO_MESSAGE),
        (["connectors", "list"], {}, TYPO, TYPO_MESSAGE),
        (["connectors", "validate"], {}, TYPO, TYPO_MESSAGE),
        (["connectors", "validate"], {}, SSH_URL, "uses SSH but SSH_PRIVATE_KEY is not set"),
        # credentials
        (["serve"], {**RELAY_ENV, "SSH_PRIVATE_KEY": "not a key"}, "", "SSH_PRIVATE_KEY"),
        (["ssh", "show-pubkey"], {}, None, "no SSH key configured: set SSH_PRIVATE_KEY"),
    ],
)
def test_configuration_errors_exit_2_naming_what_is_wrong(tmp_path, args, env, toml, message):
    if toml is not None:
        (tmp_path / "git_connectors.toml").write_text(toml)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(cli, args, env={"RELAY_GIT_DATA_DIR": str(tmp_path), **env})
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_wrong_api_key_is_a_configuration_error(relay_server, tmp_path):
    folder = relay_server.add_folder()
    env = {"RELAY_SERVER_URL": relay_server.url, "RELAY_SERVER_API_KEY": "wrong-MARKER",
           "RELAY_GIT_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["sync", "--relay-id", folder.relay_id,
                                      "--folder-id", folder.folder_id], env=env)
    assert result.exit_code == 2
    assert "Error: " in result.output and "RELAY_SERVER_API_KEY" in result.output
    assert "wrong-MARKER" not in result.output


def test_cli_code_never_calls_sys_exit():
    """Exit codes come from click exceptions, so every command reports errors one way."""
    for path in (ROOT / "cli.py", ROOT / "gitsync" / "cli.py", ROOT / "gitsync" / "__main__.py"):
        tree = ast.parse(path.read_text())
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and node.attr == "exit" and isinstance(node.value, ast.Name)
                 and node.value.id == "sys"]
        assert calls == [], path
