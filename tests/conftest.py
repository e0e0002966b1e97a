"""Shared fixtures. Fixture families live in their own plugin modules:

- ``tests.fixtures_relay``: the Relay Server stand-in (``relay_server``)
- ``tests.fixtures_ssh``: a real OpenSSH server with bare repositories (``git_remote``)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures_relay", "tests.fixtures_ssh"]

_SCRUBBED_PREFIXES = ("RELAY_", "WEBHOOK_", "SSH_", "GIT_", "PORT", "ADMIN_", "METRICS_")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """No developer setting, git config or git binary leaks into a test."""
    for name in list(os.environ):
        if name.startswith(_SCRUBBED_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("PATH", no_git_path())


def no_git_path() -> str:
    """PATH with every directory that holds a ``git`` executable removed."""
    keep = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and not (Path(entry) / "git").exists():
            keep.append(entry)
    return os.pathsep.join(keep)


@pytest.fixture(scope="session")
def git_binary() -> str:
    """Absolute path of the git binary, for tests that play an external person or server."""
    found = shutil.which("git") or next(
        (p for p in ("/usr/bin/git", "/usr/local/bin/git") if Path(p).exists()), None
    )
    if not found:
        pytest.skip("git binary not installed (needed only to play the other side)")
    return found

