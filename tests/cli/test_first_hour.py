"""The first hour: ``demo --serve`` and the stand-in on its own, as a new user runs them.

Both are started as real processes; the test reads what they print, points the CLI and
plain HTTP at the addresses printed, and stops them with SIGTERM.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from gitsync.ydoc import read_folder

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120  # generous: the machine is shared; nothing here measures time


class Proc:
    """A child process whose stdout lines are read on a thread, so waits can time out."""

    def __init__(self, *argv: str, cwd: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, pattern: str) -> re.Match[str]:
        """Read lines until one matches ``pattern``; fails with everything read so far."""
        while True:
            try:
                line = self._queue.get(timeout=WAIT)
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))
            if line is None:
                pytest.fail(f"process ended before {pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> int:
        """SIGTERM, then the exit code (the rest of the output is kept in ``lines``)."""
        self.popen.send_signal(signal.SIGTERM)
        code = self.popen.wait(timeout=WAIT)
        while (line := self._queue.get(timeout=WAIT)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        """Kill if still running and close the pipe (always called, in ``finally``)."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        self.popen.stdout.close()


def cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for name in ("RELAY_GIT_SERVICE_URL", "PORT"):
        full.pop(name, None)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *argv], env=full,
                          capture_output=True, text=True, timeout=WAIT)


@pytest.mark.slow
def test_demo_serve_keeps_running_for_a_second_terminal_and_stops_on_sigterm(tmp_path):
    proc = Proc(str(ROOT / "cli.py"), "demo", "--serve", cwd=tmp_path)
    try:
        exports: dict[str, str] = {}
        while len(exports) < 4:
            name, value = proc.until(r"^\s*export (\w+)=(\S+)$").groups()
            exports[name] = value
        assert set(exports) == {"RELAY_SERVER_URL", "RELAY_SERVER_API_KEY", "RELAY_GIT_DATA_DIR",
                                "ADMIN_TOKEN"}
        base = proc.until(r"relay-git-sync status --url (http://127\.0\.0\.1:\d+)").group(1)
        proc.until(r"curl -s " + re.escape(base) + "/health")
        proc.until(r"Ctrl-C")

        health = requests.get(f"{base}/health", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = requests.get(f"{exports['RELAY_SERVER_URL']}/ready", timeout=30)
        assert ready.status_code == 200

        online = cli("status", "--url", base, env=exports)
        assert online.returncode == 0, online.stdout + online.stderr
        assert "service: running, health ok" in online.stdout
        assert "unpushed commits: none" in online.stdout
        offline = cli("status", env=exports)
        assert offline.returncode == 0, offline.stdout + offline.stderr
        assert "files: 7" in offline.stdout

        code = proc.stop()
        assert code == 0, "\n".join(proc.lines)
        assert any("demo: stopping" in line for line in proc.lines)
        assert not Path(exports["RELAY_GIT_DATA_DIR"]).exists()  # the temporary demo is removed
    finally:
        proc.kill()


@pytest.mark.slow
def test_stand_in_runs_on_its_own_and_prints_what_to_paste(tmp_path):
    proc = Proc("-m", "gitsync.dev.relay", "--port", "0", "--api-key", "first-hour-key", "--sample",
                cwd=tmp_path)
    try:
        url = proc.until(r"^url:\s+(http://127\.0\.0\.1:\d+)$").group(1)
        assert proc.until(r"^api key:\s+(\S+)$").group(1) == "first-hour-key"
        relay_id = proc.until(r"^relay id:\s+([0-9a-f-]{36})$").group(1)
        folder_id = proc.until(r"^folder id:\s+([0-9a-f-]{36})\s+\((\d+) entries\)$").group(1)
        proc.until(r"^\s+export RELAY_SERVER_URL=" + re.escape(url) + "$")
        proc.until(r"^\s+relay_id = \"" + relay_id + "\"$")
        proc.until(r"^\s+shared_folder_id = \"" + folder_id + "\"$")
        proc.until(r"Ctrl-C")

        assert requests.get(f"{url}/ready", timeout=30).status_code == 200
        doc = f"{url}/d/{relay_id}-{folder_id}/as-update"
        assert requests.get(doc, timeout=30).status_code == 401
        folder = requests.get(doc, headers={"Authorization": "Bearer first-hour-key"}, timeout=30)
        assert folder.status_code == 200
        entries = read_folder(folder.content)  # the service's own decoder reads the sample
        assert any(path.lstrip("/") == "notes/ideas.md" for path in entries), sorted(entries)

        assert proc.stop() == 0, "\n".join(proc.lines)
    finally:
        proc.kill()


def test_stand_in_refuses_a_bad_folder_id(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gitsync.dev.relay", "--folder-id", "nope"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == 2
    assert "folder_id must be a UUID" in proc.stderr
