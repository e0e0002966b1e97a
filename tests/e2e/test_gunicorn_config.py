"""gunicorn refuses what cannot work, and listens where it is told (real subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from .harness import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


def service_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GUNICORN_BIND", "WEB_CONCURRENCY")}
    env.update(RELAY_GIT_DATA_DIR=str(tmp_path), RELAY_SERVER_URL="http://127.0.0.1:9",
               RELAY_SERVER_API_KEY="k", PYTHONPATH=str(ROOT), RELAY_GIT_RECONCILE_INTERVAL="0",
               **extra)
    return env


@pytest.mark.parametrize(
    "args, extra, got",
    [
        (["-w", "2"], {}, "got 2"),
        (["--workers", "3"], {}, "got 3"),
        ([], {"GUNICORN_CMD_ARGS": "--workers=4"}, "got 4"),
    ],
)
def test_gunicorn_with_more_than_one_worker_is_refused(tmp_path, args, extra, got):
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), *args,
             "--chdir", str(ROOT), "wsgi:app"],
            env=service_env(tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", **extra),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # it started workers: stop all of them
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    text = log.read_text()
    assert code == 2, text
    assert "gunicorn must run exactly one worker process" in text
    assert got in text and "GUNICORN_THREADS" in text
    assert "Booting worker" not in text and "Traceback" not in text


def test_serve_listens_on_the_host_it_is_given(tmp_path):
    """127.0.0.2 is loopback too, but a different address: only it must answer."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--host", "127.0.0.2", "--port", str(port)],
        env=service_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return requests.get(f"http://127.0.0.2:{port}/health", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(up, "/health on 127.0.0.2")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
