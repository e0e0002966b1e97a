#!/usr/bin/env python3
"""Initial sync end to end against a bare fetch loop measured in the same run.

For each added delay (0 ms: the stand-in answers at once; 20 ms: a Relay Server across
the internet) and each round it prints:

- end to end: ``cli.py sync --all`` in a child process (fetch, decode, write, one
  commit, push), from process start until it exits with every file on the remote,
  documents per second, and the child's peak RSS (its own ``VmHWM``, read from
  ``/proc`` while it runs: ``ru_maxrss`` of a child also counts the RSS of the process
  that forked it, here this one with the 10,000-document stand-in);
- baseline, measured right after against the same stand-in: 8 threads with keep-alive
  connections fetching every document once (no decoding, no writing, no git).

The remote is a bare repository behind a private OpenSSH server on 127.0.0.1 (the
tests' fixture code; needs sshd and git for the server side), or with ``--remote
local`` a bare repository on the local disk.

    python bench/bench_pipeline.py [--docs 10000] [--delays 0,20] [--rounds 2]
        [--fetch-concurrency N] [--remote ssh|local] [--profile DIR]

``--profile DIR`` runs the child under ``py-spy record --gil`` (what holds the GIL) and writes one speedscope
profile per run to DIR (the figures of a profiled run are not comparable).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_service import bulk_add_notes  # noqa: E402

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


class Remote:
    """Where the child pushes: a bare repository over SSH (sshd on loopback) or on disk."""

    def __init__(self, kind: str):
        self.kind = kind
        self.server = None
        if kind == "ssh":
            from tests.fixtures_ssh import SSHServer, _ensure_user, _make_base

            self.git = shutil.which("git", path="/usr/local/bin:/usr/bin:/bin")
            if self.git is None:
                raise SystemExit("the git binary is needed on the server side (apt-get install git)")
            self.server = SSHServer(_make_base(), _ensure_user(), log_level="INFO")
            self.server.start()
        self._count = 0

    def new(self, tmp: Path) -> tuple[str, str, dict[str, str]]:
        """(url, extra connectors-file text, extra environment) of a fresh bare repository."""
        self._count += 1
        if self.server is None:
            from dulwich.repo import Repo

            bare = tmp / "remote.git"
            Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
            return str(bare), "", {}
        from tests.fixtures_ssh import make_bare_repo

        bare = make_bare_repo(self.server, self.git, f"pipeline{self._count}")
        url = f"ssh://{self.server.user}@{self.server.host}:{self.server.port}{bare}"
        hosts = f'known_hosts = ["{self.server.known_hosts_line}"]\n'
        return url, hosts, {"SSH_PRIVATE_KEY": self.server.client_private_key}

    def files(self, url: str) -> int:
        """Files on the remote's main branch (checks the push really happened)."""
        path = url.split(str(self.server.port), 1)[1] if self.server else url
        out = subprocess.run([shutil.which("git") or "git", "--git-dir", path, "ls-tree", "-r",
                              "--name-only", "main"], capture_output=True, text=True, check=True)
        return len(out.stdout.splitlines())

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def _peak_rss_kib(pid: int) -> int | None:
    """``VmHWM`` of a running process: the high-water mark of its own address space."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def watch_peak(pid: int, done: threading.Event, into: list[int], every: float = 0.02) -> None:
    """Keep the largest ``VmHWM`` of ``pid`` in ``into[0]`` until ``done`` or it exits.

    ``ru_maxrss`` from ``wait4`` is no measure of a child of this process: Linux
    carries the RSS of the address space a child is forked from into it, and this
    process holds the stand-in's 10,000 documents. ``VmHWM`` belongs to the child's
    own address space after ``exec``; it only grows, so the last reading before the
    child exits is its peak up to that moment.
    """
    while not done.is_set():
        kib = _peak_rss_kib(pid)
        if kib is None:
            return
        into[0] = max(into[0], kib)
        done.wait(every)


def end_to_end(relay: DevRelay, folder, n: int, remote: Remote, *, concurrency: int | None,
               profile: Path | None, tag: str) -> tuple[float, float, float, float, float]:
    """(docs/s, seconds, peak RSS MiB, CPU seconds, ``ru_maxrss`` MiB) of a one-time sync in a child."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        url, hosts, extra = remote.new(Path(tmp))
        (data / "git_connectors.toml").write_text(
            hosts + f'[[git_connector]]\nrelay_id = "{folder.relay_id}"\n'
            f'shared_folder_id = "{folder.folder_id}"\nurl = "{url}"\n')
        env = dict(os.environ, RELAY_SERVER_URL=relay.url, RELAY_SERVER_API_KEY=relay.api_key,
                   RELAY_GIT_DATA_DIR=str(data), **extra)
        if concurrency:
            env["RELAY_GIT_FETCH_CONCURRENCY"] = str(concurrency)
        argv = [sys.executable, str(ROOT / "cli.py"), "sync", "--all"]
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            argv = ["py-spy", "record", "--gil", "--nonblocking", "-r", "200", "-f", "speedscope", "-o",
                    str(profile / f"{tag}.json"), "--"] + argv
        with tempfile.TemporaryFile("w+") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
            peak, done = [0], threading.Event()
            # under --profile the child is py-spy: its peak, not the sync's (not comparable anyway)
            watcher = threading.Thread(target=watch_peak, args=(proc.pid, done, peak), daemon=True)
            watcher.start()
            _, status, usage = os.wait4(proc.pid, 0)
            done.set()
            watcher.join()
            elapsed = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                out.seek(0)
                raise SystemExit(f"sync failed: {out.read()}")
        rss_mib = peak[0] / 1024
        inherited = usage.ru_maxrss / 1024
        cpu = usage.ru_utime + usage.ru_stime
        on_remote = remote.files(url)
        if on_remote != n:
            raise SystemExit(f"the remote holds {on_remote} files, expected {n}")
        return n / elapsed, elapsed, rss_mib, cpu, inherited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--delays", default="0,20", help="added ms per document read, comma separated")
    parser.add_argument("--rounds", type=int, default=1, help="end to end + baseline pairs per delay")
    parser.add_argument("--fetch-concurrency", default="",
                        help="RELAY_GIT_FETCH_CONCURRENCY per delay, comma separated (default: the service's)")
    parser.add_argument("--remote", choices=("ssh", "local"), default="ssh")
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",")]
    conc = [int(c) for c in args.fetch_concurrency.split(",") if c] or [0]
    if len(conc) == 1:
        conc = conc * len(delays)
    if len(conc) != len(delays):
        parser.error("give one --fetch-concurrency, or one per delay")
    remote = Remote(args.remote)
    try:
        with DevRelay(api_key="bench") as relay:
            folder = relay.add_folder()
            t0 = time.perf_counter()
            bulk_add_notes(folder, {f"d{i % 20}/note {i}.md": f"# Note {i}\n\n" + "lorem ipsum " * 40
                                    for i in range(args.docs)})
            print(f"built {args.docs} documents in the stand-in: {time.perf_counter() - t0:.1f} s; "
                  f"remote: {args.remote}", flush=True)
            ids = [compound_id(folder.relay_id, entry["id"]) for entry in folder.entries().values()
                   if entry.get("type") != "folder"]
            ids = [c for c in ids if c]
            for delay, fc in zip(delays, conc, strict=True):
                relay.read_delay = delay / 1000
                for r in range(args.rounds):
                    rate, secs, rss, cpu, maxrss = end_to_end(relay, folder, args.docs, remote, concurrency=fc or None,
                                                 profile=args.profile, tag=f"d{delay:.0f}-r{r}")
                    base = bare_fetch_loop(relay, ids)
                    print(f"delay {delay:.0f} ms, fetch concurrency {fc or 'default'}, round {r + 1}: "
                          f"end to end {rate:.0f} docs/s ({secs:.1f} s, {cpu:.1f} s CPU, peak RSS {rss:.0f} MiB, "
                          f"ru_maxrss {maxrss:.0f} MiB with this process's own); "
                          f"bare 8-connection fetch loop {base:.0f} docs/s; ratio {rate / base:.2f}",
                          flush=True)
    finally:
        remote.close()


if __name__ == "__main__":
    main()
