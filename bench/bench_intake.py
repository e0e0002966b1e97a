#!/usr/bin/env python3
"""Webhook intake under gunicorn: start-up, slow clients and request rate, with a baseline.

Runs the real service (``python -m gunicorn -c gunicorn.conf.py wsgi:app``) against the
Relay stand-in on loopback, once for each source tree given (``--base DIR`` first, as
the baseline, then this tree), one after the other in the same run, and prints the
figures side by side:

1. start: process start to the first ``/health`` 200 (median of ``--starts`` fresh
   starts), and the CPU seconds master and worker used by then (less noisy than the
   wall time on a shared machine);
2. slow clients: with ``--slow`` connections open that stall mid-request (nothing, half
   a request line, half a header block, a body that never comes), ``GET /health`` and
   a valid webhook on fresh connections: latency, or "no answer" within 5 s;
3. intake: ``wrk -t2 -c32 -d10s`` posting valid webhooks while the startup full sync of
   a ``--notes`` document folder runs: requests/s, p50 and p99 latency, non-2xx, and
   the documents the service fetched from the stand-in per second meanwhile (the
   sync's progress, plus the webhooks' own fetches). Two loads: every request for one
   document (merged into pending work) and each request for a document picked at
   random from the folder (new work, journaled and fsync'd);
4. cost: the same one-document load against an idle service (a one-note folder,
   startup sync done): requests/s, and the worker's CPU time per request, which
   depends far less on what else runs on the machine than requests/s do.

Needs ``wrk`` on PATH (``apt-get install wrk``). A baseline tree is any checkout of this
project, e.g. ``git worktree add /tmp/base main``. The machine's cores are shared by the
stand-in, wrk and the service, so the figures are a floor; compare the columns of one
run, not runs of different days.

    python bench/bench_intake.py [--base /tmp/base] [--notes 4000] [--slow 50]
        [--duration 10] [--connections 32] [--wrk-threads 2] [--gunicorn-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402
from bench_service import bulk_add_notes, free_port, wait_for  # noqa: E402

from gitsync.dev.relay import DevRelay, FolderHandle  # noqa: E402
from gitsync.ids import compound_id  # noqa: E402

SECRET = "bench-webhook-secret"
API_KEY = "bench-api-key"
ADMIN_TOKEN = "bench-admin-token"  # /api/status is served only with one
STALLS = [
    b"",
    b"GET /health HT",
    b"POST /webhooks HTTP/1.1\r\nHost: bench\r\nContent-Le",
    b"POST /webhooks HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: 400\r\n\r\n{\"eventType\": \"document.upd",
]

# wrk scripts: one fixed body, or a body naming a random document of the folder.
_WRK_FIXED = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {secret}"
wrk.body = '{body}'
"""
_WRK_RANDOM = """
local ids = {{{ids}}}
math.randomseed(os.time())
request = function()
  local body = '{{"eventType":"document.updated","eventId":"evt_bench","payload":' ..
    '{{"doc_id":"' .. ids[math.random(#ids)] .. '","user":null,"metadata":{{}},' ..
    '"timestamp":"2026-12-01T00:00:00.000Z"}}}}'
  return wrk.format("POST", "/webhooks", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer {secret}"}}, body)
end
"""
_WRK_COUNTS = """
done = function(summary, latency, requests)
  io.write(string.format("NON2XX %d\\n", summary.errors.status))
  io.write(string.format("P50US %d\\nP99US %d\\n", latency:percentile(50), latency:percentile(99)))
end
"""


class Gunicorn:
    """The service of one source tree, as ``tests/e2e/harness.py`` runs it."""

    def __init__(self, root: Path, relay: DevRelay, data_dir: Path, threads: int | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update({
            "RELAY_SERVER_URL": relay.url or "", "RELAY_SERVER_API_KEY": relay.api_key,
            "WEBHOOK_SECRET": SECRET, "RELAY_GIT_DATA_DIR": str(data_dir),
            "RELAY_GIT_COMMIT_INTERVAL": "2", "RELAY_GIT_RECONCILE_INTERVAL": "0",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}", "PORT": str(self.port),
            "GUNICORN_GRACEFUL_TIMEOUT": "30", "PYTHONPATH": str(root),
            "RELAY_GIT_LOG_LEVEL": "WARNING", "ADMIN_TOKEN": ADMIN_TOKEN,
        })
        if threads:
            env["GUNICORN_THREADS"] = str(threads)
        self.log = data_dir.parent / f"gunicorn-{self.port}.log"
        self._log = open(self.log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn.conf.py"),
             "--chdir", str(root), "wsgi:app"],
            env=env, cwd=str(root), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def health_after_start(self) -> tuple[float, float]:
        """Seconds from process start to the first /health 200 (polled every 5 ms), and
        the CPU seconds the service's processes had used by then."""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited:\n{self.log.read_text()[-3000:]}")
            try:
                return requests.get(f"{self.url}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wall = wait_for(up, "/health", 60, 0.005) - self.started
        return wall, _group_cpu_seconds(self.proc.pid)

    def status(self) -> dict:
        return requests.get(f"{self.url}/api/status", timeout=10,
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid``."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def slow_clients(service: Gunicorn, relay: DevRelay, doc: str, count: int) -> dict[str, str]:
    """Open ``count`` stalled connections, then time /health and webhooks on fresh ones."""
    socks = []
    try:
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
            socks.append(sock)
            if STALLS[n % len(STALLS)]:
                sock.sendall(STALLS[n % len(STALLS)])
        time.sleep(0.2)  # let the server take them all in before measuring
        out = {}
        for label, call in (
            ("GET /health", lambda: requests.get(f"{service.url}/health", timeout=5)),
            ("POST /webhooks", lambda: requests.post(
                f"{service.url}/webhooks", json=relay.webhook_payload(doc), timeout=5,
                headers={"Authorization": f"Bearer {SECRET}"})),
        ):
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                try:
                    call().raise_for_status()
                except requests.RequestException:
                    times = []
                    break
                times.append((time.perf_counter() - t0) * 1000)
            out[label] = (f"p50 {statistics.median(times):.1f} ms, max {max(times):.1f} ms"
                          if times else "no answer within 5 s")
        return out
    finally:
        for sock in socks:
            sock.close()


def run_wrk(url: str, script: str, args: argparse.Namespace, tmp: Path) -> dict:
    path = tmp / f"wrk-{random.randrange(1 << 30)}.lua"
    path.write_text(script + _WRK_COUNTS)
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.duration}s",
           "--timeout", "5s", "-s", str(path), f"{url}/webhooks"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rate": rate,
        "p50": int(re.search(r"P50US (\d+)", out).group(1)) / 1000,
        "p99": int(re.search(r"P99US (\d+)", out).group(1)) / 1000,
        "non2xx": int(re.search(r"NON2XX (\d+)", out).group(1)),
        "socket_errors": errors.group(1) if errors else "none",
    }


def _data_dir(tmp: Path, folder: FolderHandle) -> Path:
    data_dir = Path(tempfile.mkdtemp(dir=tmp)) / "data"
    data_dir.mkdir()
    (data_dir / "git_connectors.toml").write_text(
        f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\n'
        f'relay_id = "{folder.relay_id}"\n'
    )
    return data_dir


def _worker_cpu_seconds(service: Gunicorn) -> float:
    """CPU seconds of everything in the service's process group but the master."""
    return _group_cpu_seconds(service.proc.pid) - _process_cpu_seconds(service.proc.pid)


def _process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cost(root: Path, relay: DevRelay, args: argparse.Namespace, tmp: Path) -> dict:
    """Requests/s and worker CPU per request of one-document webhooks, nothing else running."""
    folder = relay.add_folder()
    folder.put_markdown("note.md", "one note\n")
    doc = folder.doc_compound_id("note.md")
    service = Gunicorn(root, relay, _data_dir(tmp, folder), args.gunicorn_threads)
    try:
        service.health_after_start()
        wait_for(lambda: service.status()["initial_sync"] == "done", "startup sync", 60)
        script = _WRK_FIXED.format(secret=SECRET, body=json.dumps(relay.webhook_payload(doc)))
        before = _worker_cpu_seconds(service)
        result = run_wrk(service.url, script, args, tmp)
        used = _worker_cpu_seconds(service) - before
        result["cpu_us"] = used / max(1.0, result["rate"] * args.duration) * 1e6
        return result
    finally:
        service.stop()


def measure(name: str, root: Path, relay: DevRelay, folder: FolderHandle, docs: list[str],
            args: argparse.Namespace, tmp: Path) -> dict:
    result: dict = {"name": name}
    result["idle"] = idle_cost(root, relay, args, tmp)
    starts = []
    for _ in range(args.starts):
        service = Gunicorn(root, relay, _data_dir(tmp, folder), args.gunicorn_threads)
        try:
            starts.append(service.health_after_start())
        finally:
            service.stop()
    result["health"] = statistics.median(wall for wall, _ in starts)
    result["health_cpu"] = statistics.median(cpu for _, cpu in starts)
    service = Gunicorn(root, relay, _data_dir(tmp, folder), args.gunicorn_threads)
    try:
        service.health_after_start()
        fixed = json.dumps(relay.webhook_payload(docs[0]))
        before = relay.total_fetches
        result["wrk_fixed"] = run_wrk(service.url, _WRK_FIXED.format(secret=SECRET, body=fixed),
                                      args, tmp)
        result["fetches_fixed"] = (relay.total_fetches - before) / args.duration
        result["sync_running_after_fixed"] = service.status()["initial_sync"] == "running"
        ids = ",".join(f'"{d}"' for d in docs)
        before = relay.total_fetches
        result["wrk_random"] = run_wrk(service.url, _WRK_RANDOM.format(secret=SECRET, ids=ids),
                                       args, tmp)
        result["fetches_random"] = (relay.total_fetches - before) / args.duration
        result["sync_running_after_random"] = service.status()["initial_sync"] == "running"
        result["slow"] = slow_clients(service, relay, docs[0], args.slow)
    finally:
        service.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="baseline source tree (measured first)")
    parser.add_argument("--notes", type=int, default=4000, help="documents in the synced folder")
    parser.add_argument("--slow", type=int, default=50, help="stalled connections")
    parser.add_argument("--starts", type=int, default=3, help="fresh starts timed per tree")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=None,
                        help="GUNICORN_THREADS for both trees (default: each tree's own)")
    parser.add_argument("--only-idle", action="store_true",
                        help="measure only the idle-service cost (quick comparisons)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk not found on PATH (apt-get install wrk)")
    trees = ([("baseline", args.base.resolve())] if args.base else []) + [("this tree", ROOT)]
    with DevRelay(api_key=API_KEY) as relay, tempfile.TemporaryDirectory(prefix="bench-intake-") as t:
        tmp = Path(t)
        folder = relay.add_folder()
        t0 = time.perf_counter()
        made = bulk_add_notes(folder, {
            f"notes/d{i % 20}/note {i}.md": f"# Note {i}\n\n" + "lorem ipsum " * 40 + "\n"
            for i in range(args.notes)
        })
        docs = [compound_id(folder.relay_id, d) for d in made.values()]
        print(f"stand-in: {len(docs)} notes in one folder, built in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} cores shared by the stand-in, wrk and the service")
        print(f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s, during the "
              f"startup full sync of that folder; slow clients: {args.slow}\n")
        if args.only_idle:
            for name, root in trees:
                r = idle_cost(root, relay, args, tmp)
                print(f"{name}: {r['rate']:.0f} requests/s, p50 {r['p50']:.1f} ms, "
                      f"p99 {r['p99']:.1f} ms, worker CPU {r['cpu_us']:.0f} us per request")
            return 0
        results = [measure(name, root, relay, folder, docs, args, tmp) for name, root in trees]

    def row(label: str, cell) -> None:
        print(f"{label:<44}" + "".join(f"{cell(r):>30}" for r in results))

    row("", lambda r: r["name"])
    row("process start -> /health 200 (median)", lambda r: f"{r['health']:.2f} s")
    row("  CPU used by then (master + worker)", lambda r: f"{r['health_cpu']:.2f} s")
    for key, label in (("wrk_fixed", "one document"), ("wrk_random", "random documents")):
        row(f"intake, {label}: requests/s", lambda r, k=key: f"{r[k]['rate']:.0f}")
        row(f"intake, {label}: p50 / p99", lambda r, k=key: f"{r[k]['p50']:.1f} / {r[k]['p99']:.1f} ms")
        row(f"intake, {label}: non-2xx, socket errors",
            lambda r, k=key: f"{r[k]['non2xx']}, {r[k]['socket_errors']}"[:29])
        row(f"intake, {label}: full sync still running",
            lambda r, k=key: "yes" if r[f"sync_running_after_{k[4:]}"] else "no (finished)")
        row(f"intake, {label}: relay fetches/s meanwhile",
            lambda r, k=key: f"{r[f'fetches_{k[4:]}']:.0f}")
    row("idle service, one document: requests/s", lambda r: f"{r['idle']['rate']:.0f}")
    row("idle service, one document: p50 / p99",
        lambda r: f"{r['idle']['p50']:.1f} / {r['idle']['p99']:.1f} ms")
    row("idle service: worker CPU per request", lambda r: f"{r['idle']['cpu_us']:.0f} us")
    for label in ("GET /health", "POST /webhooks"):
        row(f"{args.slow} slow clients open: {label}", lambda r, k=label: r["slow"][k])
    return 0


if __name__ == "__main__":
    sys.exit(main())
