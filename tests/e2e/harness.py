"""Run the real service for end-to-end tests: in-process (werkzeug on a loopback port)
or as a gunicorn subprocess, against the Relay stand-in."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from dulwich.repo import Repo
from werkzeug.serving import make_server

from gitsync import gitrepo
from gitsync.config import Settings, load_connectors
from gitsync.dev.relay import DevRelay, FolderHandle
from gitsync.service import Service
from gitsync.web import create_app

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-webhook-secret"
ADMIN_TOKEN = "e2e-admin-token-0123456789"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until true; the timeout only bounds a hung test, it is not an assertion on speed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def write_connectors(data_dir: Path, folders: list[FolderHandle], *, url: str | None = None,
                     prefix: str = "", known_hosts: list[str] | None = None,
                     transport: str | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    if known_hosts:
        lines.append("known_hosts = [" + ", ".join(f'"{h}"' for h in known_hosts) + "]\n")
    for folder in folders:
        lines.append(f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\n'
                     f'relay_id = "{folder.relay_id}"\nprefix = "{prefix}"\n'
                     + (f'url = "{url}"\n' if url else "")
                     + (f'transport = "{transport}"\n' if transport else ""))
    (data_dir / "git_connectors.toml").write_text("\n".join(lines))


def has_branch(git_dir: Path, branch: str = "main") -> bool:
    """True once ``refs/heads/<branch>`` exists (loose, or in ``packed-refs``).

    A ref is written by renaming a complete lock file into place, and the service's first
    commit comes after the repository was fully created: once the branch exists, the
    whole ``.git`` does. Before, there is nothing committed to read.
    """
    if (git_dir / "refs" / "heads" / branch).is_file():
        return True
    try:
        packed = (git_dir / "packed-refs").read_bytes()
    except FileNotFoundError:
        return False
    ref = f" refs/heads/{branch}".encode()
    return any(line.rstrip().endswith(ref) for line in packed.splitlines())


def head_files(data_dir: Path, folder: FolderHandle, branch: str = "main") -> dict[str, bytes]:
    """The files of ``branch`` in the service's checkout of ``folder``; {} before its first commit.

    The repository is opened only once the branch exists (:func:`has_branch`), so a
    ``.git`` the service is still creating is never read.
    """
    repo_dir = data_dir / "repos" / folder.relay_id / folder.folder_id
    if not has_branch(repo_dir / ".git", branch):
        return {}
    with Repo(str(repo_dir)) as repo:
        return gitrepo.read_tree_paths(repo, branch)


class InProcessService:
    """The real Service and Flask app, served by werkzeug on 127.0.0.1 port 0."""

    def __init__(self, relay: DevRelay, data_dir: Path, **overrides):
        options = dict(data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=relay.api_key,
                       webhook_secret=SECRET, commit_interval=0.3, reconcile_interval=0, workers=4,
                       debounce=0.1, admin_token=ADMIN_TOKEN)
        options.update(overrides)
        self.settings = Settings(**options)
        self.service = Service(self.settings, load_connectors(self.settings.connectors_path))
        self.app = create_app(self.settings, self.service)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {SECRET}"
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {self.settings.admin_token}"

    def __enter__(self) -> InProcessService:
        self.thread.start()
        self.service.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.service.stop(timeout=20)
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        self.session.close()
        self.admin.close()

    def post(self, relay: DevRelay, compound: str) -> requests.Response:
        return self.session.post(f"{self.url}/webhooks", json=relay.webhook_payload(compound), timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornService:
    """``gunicorn -c gunicorn.conf.py wsgi:app`` (or ``cli.py serve``) as a subprocess."""

    def __init__(self, relay: DevRelay, data_dir: Path, *, use_cli: bool = False,
                 commit_interval: float = 0.5, extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()}
        env.update({
            "RELAY_SERVER_URL": relay.url or "", "RELAY_SERVER_API_KEY": relay.api_key,
            "WEBHOOK_SECRET": SECRET, "RELAY_GIT_DATA_DIR": str(data_dir),
            "RELAY_GIT_COMMIT_INTERVAL": str(commit_interval), "RELAY_GIT_RECONCILE_INTERVAL": "0",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}", "PORT": str(self.port),
            "GUNICORN_GRACEFUL_TIMEOUT": "30", "PYTHONPATH": str(ROOT), "RELAY_GIT_DEBOUNCE": "0.1",
            "ADMIN_TOKEN": ADMIN_TOKEN,
        })
        env.update(extra_env or {})
        if use_cli:
            argv = [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(self.port)]
        else:
            argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
                    "--chdir", str(ROOT), "wsgi:app"]
        self.log = data_dir.parent / f"gunicorn-{self.port}.log"
        self._log_handle = open(self.log, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=str(ROOT), stdout=self._log_handle,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {SECRET}"
        self.admin = requests.Session()
        self.admin.headers["Authorization"] = f"Bearer {env['ADMIN_TOKEN']}"

    def wait_healthy(self) -> dict:
        body: dict = {}

        def up() -> bool:
            nonlocal body
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.output()}")
            try:
                reply = self.session.get(f"{self.url}/health", timeout=2)
            except requests.ConnectionError:
                return False
            body = reply.json()
            return reply.status_code in (200, 503)

        wait_for(up, "the service to answer /health")
        return body

    def status(self) -> dict:
        return self.admin.get(f"{self.url}/api/status", timeout=5).json()

    def post(self, relay: DevRelay, compound: str) -> requests.Response:
        return self.session.post(f"{self.url}/webhooks", json=relay.webhook_payload(compound), timeout=10)

    def output(self) -> str:
        self._log_handle.flush()
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log_handle.close()
        self.session.close()
        self.admin.close()
