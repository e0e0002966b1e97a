"""What runs before the first answer after a start: nothing that can wait.

gunicorn's master runs ``gunicorn.conf.py`` and its worker imports ``wsgi.py``; only then
does ``/health`` answer. Paramiko (and the ``invoke`` package it pulls in) and apispec
are a large part of the start time and are needed only for SSH remotes, for
``known_hosts`` lines and for the OpenAPI document, so neither is imported on that path
when no SSH key or known_hosts line is configured. The service itself (Dulwich, pycrdt,
``requests``) opens in a background thread once the worker serves. Checked in a fresh interpreter, by
which modules are loaded, not by timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, runpy, sys
runpy.run_path("gunicorn.conf.py")   # the master's part
import wsgi                           # the worker's part, up to serving
client = wsgi.app.test_client()
health = client.get("/health").status_code
before_docs = sorted(name for name in ("paramiko", "apispec", "invoke", "yaml")
                     if sys.modules.get(name) is not None)
state = client.get("/health").get_json().get("state")
heavy = sorted(name for name in ("dulwich", "pycrdt", "requests", "gitsync.service", "gitsync.engine")
               if sys.modules.get(name) is not None)
docs = client.get("/openapi.json").status_code
print(json.dumps({"health": health, "before_docs": before_docs, "docs": docs,
                  "state": state, "heavy": heavy,
                  "apispec_after_docs": sys.modules.get("apispec") is not None}))
"""


def _probe(tmp_path: Path, **extra: str) -> dict:
    (tmp_path / "git_connectors.toml").write_text(
        '[[git_connector]]\nshared_folder_id = "f47ac10b-58cc-4372-a567-0e02b2c3d479"\n'
        'relay_id = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"\n'
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), RELAY_SERVER_URL="http://127.0.0.1:9",
               RELAY_SERVER_API_KEY="startup-test-key", WEBHOOK_SECRET="startup-test-secret",
               RELAY_GIT_DATA_DIR=str(tmp_path), RELAY_GIT_LOG_LEVEL="WARNING", **extra)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_nothing_slow_is_imported_before_the_first_answer(tmp_path):
    result = _probe(tmp_path)
    assert result["health"] == 200
    assert result["before_docs"] == []
    assert result["docs"] == 200 and result["apispec_after_docs"]  # built on first request


def test_the_service_opens_after_the_first_answer(tmp_path):
    # Dulwich, pycrdt and requests (the service, the engine, the Relay client) are
    # imported by the starter's background thread, which only gunicorn's
    # post_worker_init starts: /health answers "starting" without them.
    result = _probe(tmp_path)
    assert result["health"] == 200 and result["state"] == "starting"
    assert result["heavy"] == []


def test_known_hosts_still_checked_before_start(tmp_path):
    # With known_hosts lines Paramiko parses them before the fork, as before.
    (tmp_path / "git_connectors.toml").write_text('known_hosts = ["not a host key line"]\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT), RELAY_SERVER_URL="http://127.0.0.1:9",
               RELAY_SERVER_API_KEY="startup-test-key", RELAY_GIT_DATA_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path('gunicorn.conf.py')"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "known_hosts[1] is not an OpenSSH known_hosts line" in done.stderr


def test_paramiko_runs_without_invoke():
    # Paramiko disables `Match exec` (which would run a command) when invoke is absent.
    code = ("import gitsync.ssh, sys, paramiko.config; "
            "print(sys.modules.get('invoke') is None and paramiko.config.invoke is None)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.stdout.strip() == "True", done.stderr
