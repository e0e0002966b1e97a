#!/usr/bin/env python3
"""Publishing over a real OpenSSH server: kept connection and no pre-push fetch vs before.

Starts a Relay stand-in and a private sshd on 127.0.0.1 (the tests' fixture code: own
host key, a git-shell user when run as root), one shared folder per mode, each pushed to
its own bare repository on the sshd. Then, a dozen times and round-robin over the modes
so that machine noise hits them alike, it edits one note in the stand-in and measures:

- edit to remote: the document fetched and written (``sync_docs``), committed, pushed,
  until the push returned (the remote branch then holds the edit);
- commit: the one-file commit alone;
- push: the push call alone.

Modes:
  before    one SSH connection per git command and a fetch before every push (the
            behaviour before kept connections: two handshakes per push)
  kept+fetch  the kept connection, still fetching before every push
  kept      the kept connection, no fetch (the remote's ref advertisement suffices)

Handshakes are counted by the vendors (and visible in the sshd log).

    python bench/bench_publish.py [--pushes 12] [--notes 50]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitsync import gitrepo  # noqa: E402
from gitsync.config import Connector, ConnectorsConfig, Settings  # noqa: E402
from gitsync.dev.relay import DevRelay  # noqa: E402
from gitsync.engine import Engine  # noqa: E402
from gitsync.relay import RelayClient  # noqa: E402
from gitsync.ssh import ParamikoVendor, load_private_key  # noqa: E402
from tests.fixtures_ssh import SSHServer, _ensure_user, _make_base, make_bare_repo  # noqa: E402


class PerCommandVendor(ParamikoVendor):
    """One SSH connection per git command, closed after it: how pushes worked before."""

    def _release(self, link, *, broken: bool = False) -> None:
        super()._release(link, broken=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def line(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"{name:<12} p50 {pct(ms, 50):7.1f} ms   p95 {pct(ms, 95):7.1f} ms   "
            f"mean {statistics.fmean(ms):7.1f} ms   (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=12)
    parser.add_argument("--notes", type=int, default=50, help="notes per folder (repository size)")
    args = parser.parse_args()
    git = shutil.which("git", path="/usr/local/bin:/usr/bin:/bin")
    if git is None:
        sys.exit("the git binary is needed on the server side (apt-get install git)")

    base = _make_base()
    server = SSHServer(base, _ensure_user())
    server.start()
    relay = DevRelay()
    relay.start()
    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    engine = None
    vendors: list[ParamikoVendor] = []
    try:
        pkey = load_private_key(server.client_private_key)
        modes = {
            "before": (PerCommandVendor(pkey, [server.known_hosts_line]), True),
            "kept+fetch": (ParamikoVendor(pkey, [server.known_hosts_line]), True),
            "kept": (ParamikoVendor(pkey, [server.known_hosts_line]), False),
        }
        vendors = [vendor for vendor, _ in modes.values()]
        folders, connectors = {}, {}
        for name in modes:
            folder = relay.add_folder()
            for i in range(args.notes):
                folder.put_markdown(f"notes/n{i}.md", f"note {i}\n")
            bare = make_bare_repo(server, git, name.replace("+", "-"))
            url = f"ssh://{server.user}@{server.host}:{server.port}{bare}"
            folders[name] = folder
            connectors[name] = Connector(folder.relay_id, folder.folder_id, url=url)
        settings = Settings(data_dir=work, relay_server_url=relay.url, relay_server_api_key=relay.api_key)
        engine = Engine(settings, RelayClient(relay.url or "", relay.api_key),
                        ConnectorsConfig(tuple(connectors.values())))

        def publish(name: str) -> tuple[gitrepo.PushResult, float]:
            """Commit, then push; returns the push result and when the push started."""
            conn = connectors[name]
            vendor, fetch_first = modes[name]
            spec = gitrepo.parse_remote_url(conn.url or "")
            engine.commit(conn)
            started = time.perf_counter()
            with engine.lock(conn), engine.repo_lock(conn):
                return gitrepo.push_fast_forward(engine.repo(conn), spec, branch="main", vendor=vendor,
                                                 fetch_first=fetch_first), started

        for name in modes:  # the first push of each folder is not measured
            engine.sync_folder(connectors[name])
            publish(name)
        before_counts = {name: vendor.connections_opened for name, (vendor, _) in modes.items()}
        edit: dict[str, list[float]] = {name: [] for name in modes}
        commit: dict[str, list[float]] = {name: [] for name in modes}
        push: dict[str, list[float]] = {name: [] for name in modes}
        for i in range(args.pushes):
            for name in modes:
                folder, conn = folders[name], connectors[name]
                start = time.perf_counter()
                folder.edit_markdown("notes/n0.md", f"edit {i}\n")
                engine.sync_docs(conn, [folder.doc_id("notes/n0.md")])
                written = time.perf_counter()
                result, pushed_at = publish(name)
                done = time.perf_counter()
                if result.status != "pushed" or result.fetched != modes[name][1]:
                    raise RuntimeError(f"{name}: unexpected push result {result}")
                edit[name].append(done - start)
                commit[name].append(pushed_at - written)
                push[name].append(done - pushed_at)
        print(f"publishing over sshd on 127.0.0.1, {args.notes} notes per repository, "
              f"{args.pushes} one-file edits per mode, round-robin")
        print("\nedit to remote (fetch from the stand-in, write, commit, push):")
        for name in modes:
            print("  " + line(name, edit[name]))
        print("\ncommit of the one changed file (objects and ref flushed to disk):")
        for name in modes:
            print("  " + line(name, commit[name]))
        print("\npush of that one-file commit:")
        for name in modes:
            print("  " + line(name, push[name]))
        print("\nSSH handshakes during the measured pushes:")
        for name, (vendor, _) in modes.items():
            print(f"  {name:<12} {vendor.connections_opened - before_counts[name]}")
    finally:
        for vendor in vendors:
            vendor.close()
        if engine is not None:
            engine.close()
        relay.stop()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
