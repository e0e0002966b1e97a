#!/usr/bin/env python3
"""Initial sync end to end against a bare fetch loop measured in the same run.

For each added delay (0 ms: the stand-in answers at once; 20 ms: a Relay Server across
the internet) it prints:

- baseline: 8 threads with keep-alive connections fetching every document once (no
  decoding, no writing, no git), documents per second;
- end to end: ``cli.py sync --all`` in a child process (fetch, decode, write, one
  commit, push to a local bare repository), from process start to exit, documents per
  second, and the child's peak RSS.

    python bench/bench_pipeline.py [--docs 10000] [--delays 0,20]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitsync.dev.relay import DevRelay  # noqa: E402
from gitsync.ids import compound_id  # noqa: E402


def bare_fetch_loop(relay: DevRelay, ids: list[str], threads: int = 8) -> float:
    """Documents per second for plain keep-alive GETs of every document once."""
    chunks = [ids[n::threads] for n in range(threads)]

    def run(chunk: list[str]) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {relay.api_key}"
            for cid in chunk:
                resp = session.get(f"{relay.url}/d/{cid}/as-update", timeout=30)
                resp.raise_for_status()

    workers = [threading.Thread(target=run, args=(c,)) for c in chunks]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(ids) / (time.perf_counter() - t0)


def end_to_end(relay: DevRelay, folder, n: int) -> tuple[float, float, float]:
    """(docs/s, seconds, peak RSS MiB) of a one-time sync in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        bare = Path(tmp) / "remote.git"
        from dulwich.repo import Repo

        Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
        (data / "git_connectors.toml").write_text(
            f'[[git_connector]]\nrelay_id = "{folder.relay_id}"\n'
            f'shared_folder_id = "{folder.folder_id}"\nurl = "{bare}"\n')
        env = dict(os.environ, RELAY_SERVER_URL=relay.url, RELAY_SERVER_API_KEY=relay.api_key,
                   RELAY_GIT_DATA_DIR=str(data))
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "sync", "--all"], env=env,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"sync failed: {proc.stdout}\n{proc.stderr}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rss_mib = max(peak, before) / 1024
        return n / elapsed, elapsed, rss_mib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--delays", default="0,20", help="added ms per document read, comma separated")
    args = parser.parse_args()
    with DevRelay(api_key="bench") as relay:
        folder = relay.add_folder()
        t0 = time.perf_counter()
        for i in range(args.docs):
            folder.put_markdown(f"d{i % 20}/note {i}.md", f"# Note {i}\n\n" + "lorem ipsum " * 40)
        print(f"built {args.docs} documents in the stand-in: {time.perf_counter() - t0:.1f} s")
        ids = [compound_id(folder.relay_id, entry["id"]) for entry in folder.entries().values()
               if entry.get("type") != "folder"]
        ids = [c for c in ids if c]
        for delay in [float(d) for d in args.delays.split(",")]:
            relay.read_delay = delay / 1000
            rate, secs, rss = end_to_end(relay, folder, args.docs)
            base = bare_fetch_loop(relay, ids)
            print(f"delay {delay:.0f} ms: end to end {rate:.0f} docs/s ({secs:.1f} s, peak RSS "
                  f"{rss:.0f} MiB); bare 8-connection fetch loop {base:.0f} docs/s; "
                  f"ratio {rate / base:.2f}")


if __name__ == "__main__":
    main()
