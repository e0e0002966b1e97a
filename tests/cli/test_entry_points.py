"""One click group, three ways in: ``relay-git-sync``, ``python -m gitsync``, ``cli.py``.

The installed console script itself is run from a built wheel in
``tests/e2e/test_installed.py``; here the source tree is checked.
"""

from __future__ import annotations

import configparser
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cli as top_level
from gitsync import __version__
from gitsync import cli as package_cli

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *argv], env=full, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_top_level_cli_is_the_package_group():
    assert top_level.cli is package_cli.cli


def test_console_script_points_at_the_package_group():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = dict(
        line.split("=", 1) for line in
        config["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    assert {k.strip(): v.strip() for k, v in scripts.items()} == {
        "relay-git-sync": "gitsync.cli:main"
    }
    module, func = "gitsync.cli:main".split(":")
    assert getattr(importlib.import_module(module), func) is package_cli.main


def test_server_files_are_installed_with_the_package():
    """``serve`` outside a checkout finds gunicorn.conf.py and wsgi.py in <prefix>/share."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    files = config["options.data_files"]["share/relay-git-sync"].split()
    assert set(files) == set(package_cli.SERVER_FILES)
    assert all((ROOT / name).is_file() for name in files)


@pytest.mark.parametrize("argv", [["-m", "gitsync"], ["cli.py"]])
def test_every_way_in_runs_the_same_commands(argv):
    version = run(*argv, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"relay-git-sync, version {__version__}"
    listing = run(*argv, "--help").stdout
    for command in ("serve", "sync", "status", "demo", "ssh", "connectors"):
        assert f"  {command}" in listing


def test_shell_completion_uses_the_documented_variable():
    """``_RELAY_GIT_SYNC_COMPLETE`` drives completion, whatever the program is called."""
    script = run("-m", "gitsync", env={"_RELAY_GIT_SYNC_COMPLETE": "bash_source"})
    assert script.returncode == 0, script.stderr
    assert "_RELAY_GIT_SYNC_COMPLETE=bash_complete" in script.stdout
    words = run("-m", "gitsync", env={"_RELAY_GIT_SYNC_COMPLETE": "bash_complete",
                                      "COMP_WORDS": "relay-git-sync conn", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["plain,connectors"]
    sub = run("-m", "gitsync", env={"_RELAY_GIT_SYNC_COMPLETE": "bash_complete",
                                    "COMP_WORDS": "relay-git-sync connectors v",
                                    "COMP_CWORD": "2"})
    assert sub.stdout.split() == ["plain,validate"]
