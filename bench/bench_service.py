#!/usr/bin/env python3
"""The real service (gunicorn subprocess) against the Relay stand-in on loopback.

Starts a DevRelay stand-in with one shared folder of markdown notes, writes
git_connectors.toml in a temporary data directory (a local bare repository as the
remote unless --local-only), runs ``python -m gunicorn -c gunicorn.conf.py wsgi:app``
like tests/e2e/harness.py does, and measures:

1. startup: process start to /health 200, and to /api/status initial_sync == "done";
2. webhook acceptance: N POST /webhooks for distinct (known) documents from 1 thread and
   from T threads (one requests.Session each): accepted/s, p50/p99 latency;
3. end to end: edit a note in the stand-in, post its webhook, poll HEAD of the local
   repository (and of the bare remote) every 20 ms until the new text is committed;
4. a burst of webhooks for ONE document, and how often the stand-in served it.

The stand-in, the client threads and the service share the machine's cores, so the
numbers are a floor. Everything listens on 127.0.0.1 only.

    python bench/bench_service.py [-n 2000] [--threads 8] [--notes 200]
        [--commit-interval 1] [--debounce 0.2] [--edits 10] [--burst 500] [--local-only]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from dulwich.repo import Repo  # noqa: E402
from pycrdt import Map, Text  # noqa: E402

from gitsync import gitrepo  # noqa: E402
from gitsync.dev.relay import DevRelay, FolderHandle  # noqa: E402
from gitsync.ids import compound_id  # noqa: E402

SECRET = "bench-webhook-secret"
API_KEY = "bench-api-key"


# -- helpers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], bool], what: str, timeout: float, interval: float = 0.02
) -> float:
    """Poll until true; returns the monotonic time it became true. Bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (values non-empty)."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[k]


def summary(elapsed: float, lat: list[float], others: dict) -> str:
    """``K x 202 in S s = R accepted/s; p50, p99, max; non-202: C {status: count}``."""
    bad = sum(others.values())
    text = f"non-202: {bad}" + (f" {others}" if others else "")
    if not lat:
        return f"no 202 answers in {elapsed:.2f} s; {text}"
    return (
        f"{len(lat)} x 202 in {elapsed:.2f} s = {len(lat) / elapsed:.0f} accepted/s; "
        f"p50 {pct(lat, 50):.2f} ms, p99 {pct(lat, 99):.2f} ms, max {max(lat):.1f} ms; {text}"
    )


def bulk_add_notes(folder: FolderHandle, notes: dict[str, str]) -> dict[str, str]:
    """Add many markdown notes in one folder-index transaction (put_markdown rewrites the
    index once per note, which is quadratic). Same layout as put_markdown: a Y.Text
    ``contents`` per document, a ``filemeta_v0`` entry and a legacy ``docs`` entry per path,
    ``folder`` entries for parent directories. Returns path -> doc id."""
    relay = folder.relay
    made: dict[str, str] = {}
    for path, text in notes.items():
        doc_id = str(uuid.uuid4())
        with relay.edit(compound_id(folder.relay_id, doc_id)) as doc:
            doc.get("contents", type=Text).insert(0, text)
        made[path] = doc_id
    existing = folder.entries()
    dirs = set()
    for path in notes:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/" + "/".join(parts[:i]))
    with relay.edit(folder.compound_id) as doc:
        meta, legacy = doc.get("filemeta_v0", type=Map), doc.get("docs", type=Map)
        for d in sorted(dirs):
            if d not in existing:
                meta[d] = {"id": str(uuid.uuid4()), "type": "folder", "version": 0}
        for path, doc_id in made.items():
            key = "/" + path.strip("/")
            meta[key] = {"id": doc_id, "type": "markdown", "version": 0}
            legacy[key] = doc_id
    return made


def head_tree(repo_dir: Path, prefix: str) -> dict[str, bytes]:
    if not repo_dir.exists():
        return {}
    with Repo(str(repo_dir)) as repo:
        return gitrepo.read_tree_paths(repo, "main", prefix)


ADMIN_TOKEN = "bench-admin-token"

class Service:
    """``python -m gunicorn -c gunicorn.conf.py --chdir ROOT wsgi:app`` as in the e2e harness."""

    def __init__(self, relay: DevRelay, data_dir: Path, commit_interval: float, debounce: float | None,
                 extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            {
                "RELAY_SERVER_URL": relay.url or "",
                "RELAY_SERVER_API_KEY": relay.api_key,
                "WEBHOOK_SECRET": SECRET,
                "RELAY_GIT_DATA_DIR": str(data_dir),
                "RELAY_GIT_COMMIT_INTERVAL": str(commit_interval),
                "RELAY_GIT_RECONCILE_INTERVAL": "0",
                "GUNICORN_BIND": f"127.0.0.1:{self.port}",
                "PORT": str(self.port),
                "GUNICORN_GRACEFUL_TIMEOUT": "30",
                "PYTHONPATH": str(ROOT),
                "RELAY_GIT_LOG_LEVEL": "WARNING",
                "ADMIN_TOKEN": ADMIN_TOKEN,  # /api/status is served only with one
            }
        )
        if debounce is not None:
            env["RELAY_GIT_DEBOUNCE"] = str(debounce)
        env.update(extra_env or {})
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "gunicorn.conf.py"),
            "--chdir",
            str(ROOT),
            "wsgi:app",
        ]
        self.log = data_dir.parent / "gunicorn.log"
        self._log_handle = open(self.log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=str(ROOT),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.session = requests.Session()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"service exited with {self.proc.returncode}:\n{self.output()[-4000:]}"
            )

    def healthy(self) -> bool:
        self.check_alive()
        try:
            return self.session.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def status(self) -> dict:
        self.check_alive()
        return self.session.get(f"{self.url}/api/status", timeout=10,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()

    def idle(self) -> bool:
        """Nothing queued, deferred or in progress, and every written path committed."""
        st = self.status()
        q = st["queue"]
        busy = q["pending"] + q["in_progress"] + q["deferred"] + q["rerun_after_done"]
        return busy == 0 and all(f["uncommitted_paths"] == 0 for f in st["folders"])

    def output(self) -> str:
        self._log_handle.flush()
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._log_handle.close()
        self.session.close()


def post_many(
    url: str, relay: DevRelay, docs: list[str], threads: int
) -> tuple[float, list[float], dict]:
    """POST one webhook per entry of ``docs`` from ``threads`` threads (a Session each).

    Returns (elapsed seconds, latencies in ms of 202 answers, {status or error: count}).
    """
    chunks = [docs[i::threads] for i in range(threads)]
    payloads = [[relay.webhook_payload(c) for c in chunk] for chunk in chunks]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    others: list[dict] = [{} for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def run(i: int) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {SECRET}"
            session.get(f"{url}/health", timeout=10)  # open the connection before timing
            start.wait()
            for body in payloads[i]:
                t0 = time.perf_counter()
                try:
                    reply = session.post(f"{url}/webhooks", json=body, timeout=30)
                    code: int | str = reply.status_code
                except requests.RequestException as exc:
                    code = type(exc).__name__
                dt = (time.perf_counter() - t0) * 1000
                if code == 202:
                    latencies[i].append(dt)
                else:
                    others[i][code] = others[i].get(code, 0) + 1

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join(timeout=300)
    elapsed = time.perf_counter() - t0
    merged: dict = {}
    for o in others:
        for k, v in o.items():
            merged[k] = merged.get(k, 0) + v
    return elapsed, [x for lat in latencies for x in lat], merged


# -- main ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-n", "--webhooks", type=int, default=2000, help="webhooks per throughput run"
    )
    parser.add_argument("--threads", type=int, default=8, help="client threads of the second run")
    parser.add_argument(
        "--notes", type=int, default=200, help="markdown notes in the folder at start"
    )
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--debounce", type=float, default=0.2)
    parser.add_argument("--edits", type=int, default=10, help="end-to-end edits timed")
    parser.add_argument("--burst", type=int, default=500, help="webhooks for one document")
    parser.add_argument(
        "--local-only", action="store_true", help="no bare remote: nothing is pushed"
    )
    args = parser.parse_args()
    n, threads = max(1, min(args.webhooks, 20000)), max(1, min(args.threads, 64))
    edits, burst = max(1, min(args.edits, 100)), max(1, min(args.burst, 10000))
    bench_start = time.monotonic()

    with (
        DevRelay(api_key=API_KEY) as relay,
        tempfile.TemporaryDirectory(prefix="bench-service-") as tmp,
    ):
        work = Path(tmp)
        data_dir = work / "data"
        data_dir.mkdir()
        folder = relay.add_folder()
        t0 = time.perf_counter()
        notes = bulk_add_notes(
            folder,
            {
                f"notes/d{i % 10}/note {i}.md": f"# Note {i}\n\n" + "lorem ipsum " * 40 + "\n"
                for i in range(args.notes)
            },
        )
        print(
            f"stand-in: {len(notes)} markdown notes in one shared folder, built in "
            f"{time.perf_counter() - t0:.2f} s ({relay.url})"
        )

        bare = None if args.local_only else work / "remote.git"
        lines = [
            "[[git_connector]]",
            f'shared_folder_id = "{folder.folder_id}"',
            f'relay_id = "{folder.relay_id}"',
            'branch = "main"',
        ]
        if bare is not None:
            Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
            lines.append(f'url = "{bare}"')
        (data_dir / "git_connectors.toml").write_text("\n".join(lines) + "\n")
        repo_dir = data_dir / "repos" / folder.relay_id / folder.folder_id
        where = "none (local-only connector)" if bare is None else f"local bare repository {bare}"
        print(f"remote: {where}")
        print(
            f"settings: commit interval {args.commit_interval:g} s, debounce {args.debounce:g} s, "
            f"reconcile interval 0, gunicorn gthread (1 worker, 8 threads), {os.cpu_count()} cores"
        )

        service = Service(relay, data_dir, args.commit_interval, args.debounce)
        exit_code: int | None = None
        try:
            # (1) startup --------------------------------------------------------------
            print("\n[1] startup")
            t_health = wait_for(service.healthy, "/health 200", 60)
            since = t_health - service.started
            print(f"  {'process start -> /health 200:':<48}{since:6.2f} s")
            t_sync = wait_for(
                lambda: service.status()["initial_sync"] == "done", "initial sync", 90
            )
            since = t_sync - service.started
            print(
                f"  {f'process start -> initial_sync done ({len(notes)} docs):':<48}{since:6.2f} s"
            )
            wait_for(lambda: len(head_tree(repo_dir, "notes")) >= len(notes), "initial commit", 60)
            since = time.monotonic() - service.started
            print(f"  {f'process start -> {len(notes)} notes in local HEAD:':<48}{since:6.2f} s")
            if bare is not None:
                wait_for(lambda: len(head_tree(bare, "notes")) >= len(notes), "initial push", 60)
                since = time.monotonic() - service.started
                print(
                    f"  {f'process start -> {len(notes)} notes on the remote:':<48}{since:6.2f} s"
                )

            # (2) webhook acceptance ---------------------------------------------------
            # Distinct ids on the connector's relay that no synced folder lists (the Relay
            # Server notifies every document of the relay, also folders mirrored elsewhere).
            # Acceptance is the same durable path as for a known document (journal, fsync,
            # 202); behind it the service only looks the id up, re-reads the folder index
            # and re-checks twice before ignoring it, so the backlog drains in seconds.
            print(f"\n[2] webhook acceptance: {n} POST /webhooks per run, distinct documents")
            print(
                "    (document ids on the relay that the synced folder does not list: same durable "
                "accept path, light background work)"
            )
            for label, count in [("1 thread", 1), (f"{threads} threads", threads)]:
                docs = [compound_id(folder.relay_id, str(uuid.uuid4())) for _ in range(n)]
                elapsed, lat, others = post_many(service.url, relay, docs, count)
                t_done = time.monotonic()
                print(f"  {label}: {summary(elapsed, lat, others)}")
                wait_for(service.idle, "the queue to drain", 60, 0.1)
                print(f"    queue empty {time.monotonic() - t_done:.2f} s after the last answer")

            # One webhook per note: known documents, each re-fetched from the stand-in.
            notes_docs = [compound_id(folder.relay_id, d) for d in notes.values()]
            before = relay.total_fetches
            elapsed, lat, others = post_many(service.url, relay, notes_docs, threads)
            t_done = time.monotonic()
            wait_for(service.idle, "the queue to drain", 90, 0.1)
            drained = time.monotonic() - t_done
            print(f"  one per note (known), {threads} threads: {summary(elapsed, lat, others)}")
            print(
                f"    queue empty {drained:.2f} s after the last answer "
                f"({relay.total_fetches - before} document fetches served)"
            )

            # (3) end to end ------------------------------------------------------------
            print(
                f"\n[3] end to end: edit -> webhook -> committed (commit interval "
                f"{args.commit_interval:g} s, debounce {args.debounce:g} s, HEAD polled each 20 ms)"
            )
            local_ms: list[float] = []
            remote_ms: list[float] = []
            paths = list(notes)
            with requests.Session() as session:
                session.headers["Authorization"] = f"Bearer {SECRET}"
                for i in range(edits):
                    path = paths[(i * 7) % len(paths)]
                    text = f"# Edited {i}\n\n{uuid.uuid4()}\n"
                    want = text.encode()
                    folder.edit_markdown(path, text)
                    doc = folder.doc_compound_id(path)
                    t0 = time.perf_counter()
                    reply = session.post(
                        f"{service.url}/webhooks", json=relay.webhook_payload(doc), timeout=10
                    )
                    if reply.status_code != 202:
                        raise RuntimeError(f"edit webhook answered {reply.status_code}")
                    wait_for(
                        lambda p=path, w=want: head_tree(repo_dir, "notes").get(p) == w,
                        f"edit {i} in local HEAD",
                        30,
                    )
                    local_ms.append((time.perf_counter() - t0) * 1000)
                    if bare is not None:
                        wait_for(
                            lambda p=path, w=want: head_tree(bare, "notes").get(p) == w,
                            f"edit {i} on the remote",
                            30,
                        )
                        remote_ms.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.05 + (i % 4) * 0.13)  # edits land at different phases of the timer
            print(
                f"  local HEAD  ({edits} edits): p50 {statistics.median(local_ms):7.0f} ms, "
                f"min {min(local_ms):5.0f} ms, max {max(local_ms):5.0f} ms"
            )
            if remote_ms:
                print(
                    f"  remote main ({edits} edits): p50 {statistics.median(remote_ms):7.0f} ms, "
                    f"min {min(remote_ms):5.0f} ms, max {max(remote_ms):5.0f} ms"
                )
            wait_for(service.idle, "the service to go idle", 60, 0.1)

            # (4) burst for one document ------------------------------------------------
            print(f"\n[4] burst: {burst} webhooks for ONE document (debounce {args.debounce:g} s)")
            path = paths[1]
            folder.edit_markdown(path, "# Burst\n\nchanged before the burst\n")
            doc = folder.doc_compound_id(path)
            before = relay.fetch_count(doc)
            elapsed, lat, others = post_many(service.url, relay, [doc] * burst, 1)
            wait_for(
                lambda: (
                    head_tree(repo_dir, "notes").get(path)
                    == b"# Burst\n\nchanged before the burst\n"
                ),
                "burst edit committed",
                30,
            )
            time.sleep(max(0.5, 2 * args.debounce))
            wait_for(service.idle, "the service to go idle", 60, 0.1)
            fetched = relay.fetch_count(doc) - before
            counts = service.status()["counts"]
            print(f"  1 thread: {summary(elapsed, lat, others)}")
            print(
                f"  the stand-in served that document {fetched} time(s) for {burst} webhooks "
                f"(the burst lasted {elapsed / args.debounce:.1f} intervals)"
            )
            print(f"  service counters: {counts}")
        finally:
            print("\n[5] shutdown")
            if service.proc.poll() is None:
                t0 = time.perf_counter()
                try:
                    exit_code = service.terminate(timeout=60)
                    print(
                        f"  SIGTERM to the process group -> exited with code {exit_code} "
                        f"in {time.perf_counter() - t0:.2f} s"
                    )
                except subprocess.TimeoutExpired:
                    print("  SIGTERM: no exit within 60 s; killed")
            else:
                print(f"  service had already exited with code {service.proc.returncode}")
            errors = [
                line
                for line in service.output().splitlines()
                if "ERROR" in line or "Traceback" in line
            ]
            if errors:
                print(f"  {len(errors)} error line(s) in the service log, first: {errors[0][:200]}")
            service.close()
    print(f"\ntotal benchmark time: {time.monotonic() - bench_start:.1f} s")
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
