"""``cli.py demo``: the whole service end to end on one machine, in well under a minute.

A Relay Server stand-in (:mod:`gitsync.dev.relay`, not a real Relay Server) serves a
sample shared folder; the real service (Flask app on a loopback port, work queue,
workers, commit timer) syncs it into a repository and pushes to a local bare repository
playing the remote. The service follows the folder over the stand-in's websocket (the
default transport when no webhook secret is set), so the demo needs no webhook: it
edits, renames, deletes and adds notes through the stand-in as two relay users (named
in ``[authors]``), the service hears of them as events, and the demo prints the
remote's history, with each commit's author, read with Dulwich.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dulwich.diff_tree import tree_changes
from dulwich.repo import Repo
from werkzeug.serving import make_server

from ..config import Settings, load_connectors
from ..service import Service
from ..web import create_app
from .relay import DevRelay, sample_vault

__all__ = ["run_demo"]

Echo = Callable[[str], None]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out waiting for {what}")
        time.sleep(0.05)


DEMO_AUTHORS = {"ada": "Ada Lovelace <ada@example.org>", "grace": "Grace Hopper <grace@example.org>"}


def remote_log(bare: Path, branch: str = "main", limit: int = 20) -> list[str]:
    """``git log --stat``-like lines for the remote branch, newest first, with authors."""
    lines: list[str] = []
    with Repo(str(bare)) as repo:
        ref = f"refs/heads/{branch}".encode()
        if ref not in repo.refs:
            return ["(remote branch is empty)"]
        for entry in repo.get_walker(include=[repo.refs[ref]], max_entries=limit):
            commit = entry.commit
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(commit.commit_time))
            message = commit.message.decode("utf-8", "replace")
            lines.append(f"{commit.id.decode()[:10]}  {when} UTC  {message.splitlines()[0]}")
            lines.append(f"    author: {commit.author.decode('utf-8', 'replace')}")
            for line in message.splitlines():
                if line.startswith("Co-authored-by: "):
                    lines.append(f"    co-author: {line.split(': ', 1)[1]}")
            parent_tree = repo[commit.parents[0]].tree if commit.parents else None
            for change in tree_changes(repo.object_store, parent_tree, commit.tree):
                old = change.old.path.decode() if change.old and change.old.path else None
                new = change.new.path.decode() if change.new and change.new.path else None
                if change.type == "add":
                    lines.append(f"    + {new}")
                elif change.type == "delete":
                    lines.append(f"    - {old}")
                else:
                    lines.append(f"    ~ {new}")
    return lines


def serve_instructions(*, relay_url: str, api_key: str, data_dir: Path, base: str,
                       admin_token: str | None) -> list[str]:
    """The lines that point a second terminal at a demo kept running by ``--serve``."""
    exports = [("RELAY_SERVER_URL", relay_url), ("RELAY_SERVER_API_KEY", api_key),
               ("RELAY_GIT_DATA_DIR", str(data_dir))]
    if admin_token:
        exports.append(("ADMIN_TOKEN", admin_token))
    lines = ["demo: still running (--serve); in a second terminal:", ""]
    lines += [f"  export {name}={shlex.quote(value)}" for name, value in exports]
    lines += [
        "",
        "  relay-git-sync status                  # reads the data directory",
        f"  relay-git-sync status --url {base}   # asks the running service (ADMIN_TOKEN)",
        f"  relay-git-sync sync --all --url {base}",
        f"  curl -s {base}/health",
        "",
        "demo: press Ctrl-C (or send SIGTERM) to stop",
    ]
    return lines


def run_demo(echo: Echo = print, *, keep: Path | None = None,
             serve_until: threading.Event | None = None) -> int:
    """Run the demo; returns a process exit code. ``keep`` keeps the data there.

    With ``serve_until``, the stand-in and the service keep running after the scripted
    part until that event is set (the CLI sets it on Ctrl-C or SIGTERM), and the
    ``export`` lines for a second terminal are printed.
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no per-request lines in the demo
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="relay-git-sync-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir, bare = work / "data", work / "remote.git"
    data_dir.mkdir(exist_ok=True)
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    api_key = secrets.token_urlsafe(16)
    relay = DevRelay(api_key=api_key)
    relay.start()
    server = service = None
    try:
        folder = relay.add_folder()
        made = sample_vault(folder)
        (data_dir / "git_connectors.toml").write_text(
            "[[git_connector]]\n"
            f'shared_folder_id = "{folder.folder_id}"\n'
            f'relay_id = "{folder.relay_id}"\n'
            f'url = "{bare}"\n'
            'branch = "main"\n'
            'prefix = "vault"\n'
            "\n[authors]\n" + "".join(f'"{user}" = "{ident}"\n' for user, ident in DEMO_AUTHORS.items()),
            encoding="utf-8",
        )
        admin_token = secrets.token_urlsafe(24) if serve_until is not None else None
        settings = Settings(
            data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=api_key,
            commit_interval=1.0, reconcile_interval=0, workers=2, admin_token=admin_token,
        )
        echo(f"demo: Relay stand-in at {relay.url} serving a folder of {len(made)} entries")
        service = Service(settings, load_connectors(settings.connectors_path))
        app = create_app(settings, service)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, name="demo-http", daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        service.start()
        echo(f"demo: service listening at {base} (try {base}/docs)")
        _wait(lambda: service.initial_sync_done.is_set(), 30, "the initial sync")
        _wait(lambda: service.status()["counts"]["pushes"] >= 1, 30, "the first push")
        socket = service.status()["folders"][0]["transport"]
        echo(f"demo: initial sync committed and pushed; websocket {socket['state']}")

        def pushed(edit: Callable[[], None], what: str) -> None:
            pushes = service.status()["counts"]["pushes"]
            edit()
            _wait(lambda: service.status()["counts"]["pushes"] > pushes
                  and not any(f["uncommitted_paths"] for f in service.status()["folders"]),
                  30, f"{what} to be committed and pushed")

        def by_ada() -> None:
            folder.edit_markdown("notes/ideas.md", "# Ideas\n\n- sync folders to git\n- edited in Obsidian\n",
                                 user="ada")
            folder.put_markdown("notes/new idea.md", "Written while the service runs.\n", user="ada")

        def by_grace() -> None:
            folder.rename("notes/archive/2024.md", "archive/2024.md", user="grace")
            folder.delete("README.md", user="grace")
            folder.edit_markdown("notes/new idea.md", "Written while the service runs.\nGrace agrees.\n",
                                 user="grace")

        pushed(by_ada, "ada's edits")
        echo("demo: ada edited and added notes (no webhook: the websocket carries the events)")
        pushed(by_grace, "grace's edits")
        echo("demo: grace renamed, deleted and edited notes")
        echo("demo: commits credit " + " and ".join(DEMO_AUTHORS.values())
             + " (relay users mapped in [authors]); the service commits them")
        if serve_until is None:
            service.stop(timeout=20)
            service = None
        echo("")
        echo(f"history of the remote {bare} (branch main):")
        for line in remote_log(bare):
            echo("  " + line)
        echo("")
        if keep:
            echo(f"demo: kept everything under {work}: working tree {data_dir / 'repos'}, "
                 f"state {data_dir / 'state'}, remote {bare}")
        elif serve_until is None:
            echo("demo: done; run with --keep DIR to keep the repositories and state")
        if serve_until is not None:
            for line in serve_instructions(relay_url=relay.url, api_key=api_key, data_dir=data_dir,
                                           base=base, admin_token=admin_token):
                echo(line)
            serve_until.wait()
            echo("demo: stopping" + ("" if keep else f"; removing {work}"))
        return 0
    finally:
        if service is not None:
            service.stop(timeout=5)
        if server is not None:
            server.shutdown()
            server.server_close()
        relay.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
