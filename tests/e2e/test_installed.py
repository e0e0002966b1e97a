"""The package as the container runs it: a built wheel in a fresh virtual environment.

The Dockerfile does ``pip install .`` and runs the ``relay-git-sync`` console script
with no git binary; this module builds the wheel from a copy of the source, installs
it (and its dependencies, from the package index or pip's cache) into a new venv, and
runs the installed command with ``git`` absent from PATH and without this checkout on
``sys.path``: the demo, an SSH push through the real test sshd, and ``serve``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from gitsync.dev.relay import DevRelay, tiny_png

from .harness import free_port, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "gunicorn.conf.py", "wsgi.py")
# Read at import, before the tests' own HOME is set: pip's cache speeds up the install.
PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_CACHE_DIR"] = PIP_CACHE
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the wheel built from this checkout, and nothing of the checkout."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "gitsync", src / "gitsync",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = _pip("wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(src), cwd=base)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (base / "dist").glob("relay_git_sync-*.whl")
    target = base / "venv"
    python = target / "bin" / "python"
    # No pip inside the venv (faster): this interpreter's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True,
                   timeout=120)
    installed = _pip("--python", str(python), "install", "-q", "--no-compile", "--prefer-binary",
                     str(wheel), cwd=base)
    if installed.returncode != 0:
        # Only when the index cannot be reached: the dependencies of this machine, the
        # wheel itself still installed on its own.
        shutil.rmtree(target)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                        str(target)], check=True, timeout=120)
        installed = _pip("--python", str(python), "install", "-q", "--no-compile", "--no-deps",
                         str(wheel), cwd=base)
        assert installed.returncode == 0, installed.stdout + installed.stderr
    return target


def run(venv: Path, *argv: str, env: dict[str, str] | None = None, cwd: Path,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], env=command_env(venv, env),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def command_env(venv: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The tests' environment (no git on PATH) with the venv first and no checkout path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env.update(extra or {})
    assert shutil.which("git", path=env["PATH"]) is None
    return env


def test_installed_command_runs_the_demo_without_git(venv: Path, tmp_path: Path):
    where = run(venv, "python", "-c", "import gitsync; print(gitsync.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    version = run(venv, "relay-git-sync", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("relay-git-sync, version ")
    module = run(venv, "python", "-m", "gitsync", "--help", cwd=tmp_path)
    assert module.returncode == 0 and "connectors" in module.stdout
    demo = run(venv, "relay-git-sync", "demo", "--keep", str(tmp_path / "demo"), cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "history of the remote" in demo.stdout
    assert (tmp_path / "demo" / "remote.git").is_dir()


@pytest.mark.ssh
def test_installed_command_pushes_over_ssh(venv: Path, tmp_path: Path, relay_server: DevRelay,
                                           git_remote):
    folder = relay_server.add_folder()
    folder.put_markdown("notes/a.md", "from the installed package\n")
    folder.put_attachment("img/pixel.png", tiny_png(), "image/png")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "git_connectors.toml").write_text(
        f'known_hosts = ["{git_remote.known_hosts_line}"]\n\n'
        f'[[git_connector]]\nrelay_id = "{folder.relay_id}"\n'
        f'shared_folder_id = "{folder.folder_id}"\nurl = "{git_remote.url}"\n'
    )
    env = {"RELAY_SERVER_URL": relay_server.url, "RELAY_SERVER_API_KEY": relay_server.api_key,
           "RELAY_GIT_DATA_DIR": str(data_dir), "SSH_PRIVATE_KEY": git_remote.client_private_key}
    check = run(venv, "relay-git-sync", "connectors", "validate", "--check-remote", env=env,
                cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    synced = run(venv, "relay-git-sync", "sync", "--all", env=env, cwd=tmp_path)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert git_remote.read("notes/a.md") == "from the installed package\n"
    assert "img/pixel.png" in git_remote.files()
    git_remote.fsck()
    pubkey = run(venv, "relay-git-sync", "ssh", "show-pubkey", env=env, cwd=tmp_path)
    assert pubkey.returncode == 0 and pubkey.stdout.startswith(("ssh-", "ecdsa-"))


def test_installed_serve_answers_health_and_stops_on_sigterm(venv: Path, tmp_path: Path,
                                                              relay_server: DevRelay):
    """``serve`` finds gunicorn.conf.py and wsgi.py where the wheel installed them."""
    port = free_port()
    env = {"RELAY_SERVER_URL": relay_server.url, "RELAY_SERVER_API_KEY": relay_server.api_key,
           "RELAY_GIT_DATA_DIR": str(tmp_path), "RELAY_GIT_LOG_FORMAT": "json"}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(venv / "bin" / "relay-git-sync"), "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=command_env(venv, env), cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(healthy, "the installed service's /health")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    output = (tmp_path / "serve.log").read_text()
    records = [json.loads(line) for line in output.splitlines()]
    assert any(r["message"] == f"Listening at: http://127.0.0.1:{port} ({proc.pid})"
               for r in records)
