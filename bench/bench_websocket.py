#!/usr/bin/env python3
"""The websocket transport against the webhook transport, in one run, on loopback.

The real Service (work queue, workers, committer; the Flask app on werkzeug for
webhooks) runs in this process against the Relay stand-in, which serves the document
websocket with real frames. Measured:

1. restart of a service whose N-document folder (default 10,000) did not change:
   a) websocket transport: documents fetched, heads query frames, time to ready;
   b) webhook transport on the same data directory (today's full resync): the same;
   "ready" = start() until the startup sync is done and the work queue is idle.
   The first (fresh) websocket start is reported too: it is a full sync plus heads.
2. edit to remote latency at --commit-interval 2 (default debounce 1 s): E edits of a
   note in a small folder, each polled on a local bare remote every 20 ms; webhook
   transport (stand-in edit, then POST /webhooks) and websocket transport (stand-in
   edit only).

The stand-in, the service and this script share the machine's cores: a floor.

    python bench/bench_websocket.py [--docs 10000] [--edits 10] [--commit-interval 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
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
from werkzeug.serving import make_server  # noqa: E402

from gitsync import gitrepo  # noqa: E402
from gitsync.config import Settings, load_connectors  # noqa: E402
from gitsync.dev.relay import DevRelay, FolderHandle  # noqa: E402
from gitsync.ids import compound_id  # noqa: E402
from gitsync.service import Service  # noqa: E402
from gitsync.web import create_app  # noqa: E402

API_KEY = "bench-api-key"
SECRET = "bench-webhook-secret"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def bulk_notes(relay: DevRelay, folder: FolderHandle, count: int) -> list[str]:
    """``count`` notes in one folder-index transaction; each routed to the folder like
    notes the Relay plugin creates. Returns the paths."""
    made = {}
    for i in range(count):
        doc_id = str(uuid.uuid4())
        cid = compound_id(folder.relay_id, doc_id)
        relay.route(cid, folder.compound_id)
        with relay.edit(cid) as doc:
            doc.get("contents", type=Text).insert(0, f"# Note {i}\n\nbody {i}\n")
        made[f"/notes/{i // 500:02d}/n{i}.md"] = doc_id
    with relay.edit(folder.compound_id) as doc:
        meta = doc.get("filemeta_v0", type=Map)
        meta["/notes"] = {"id": str(uuid.uuid4()), "type": "folder", "version": 0}
        for d in sorted({p.rsplit("/", 1)[0] for p in made}):
            meta[d] = {"id": str(uuid.uuid4()), "type": "folder", "version": 0}
        for path, doc_id in made.items():
            meta[path] = {"id": doc_id, "type": "markdown", "version": 0}
    return [p.lstrip("/") for p in made]


def write_connectors(data_dir: Path, folder: FolderHandle, transport: str, url: str | None = None) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "git_connectors.toml").write_text(
        f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\nrelay_id = "{folder.relay_id}"\n'
        f'transport = "{transport}"\n' + (f'url = "{url}"\n' if url else ""))


class Running:
    """Service + Flask app on 127.0.0.1 port 0."""

    def __init__(self, relay: DevRelay, data_dir: Path, **overrides):
        options = dict(data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=API_KEY,
                       webhook_secret=SECRET, reconcile_interval=0, workers=4)
        options.update(overrides)
        self.settings = Settings(**options)
        self.service = Service(self.settings, load_connectors(self.settings.connectors_path))
        self.server = make_server("127.0.0.1", 0, create_app(self.settings, self.service), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {SECRET}"

    def start(self) -> float:
        """Start; returns seconds until the startup sync is done and the queue is idle."""
        self.thread.start()
        began = time.monotonic()
        self.service.start()
        wait_for(self.service.initial_sync_done.is_set, "the startup sync", 1800, 0.005)
        if not self.service.queue.wait_idle(timeout=1800):
            raise TimeoutError("queue never idle")
        return time.monotonic() - began

    def stop(self) -> None:
        self.service.stop(timeout=60)
        self.server.shutdown()
        self.server.server_close()
        self.session.close()


def restart_numbers(relay: DevRelay, folder: FolderHandle, run: Running) -> dict:
    relay.reset_counters()
    ready = run.start()
    numbers = {
        "ready_s": ready,
        "docs_fetched": relay.total_fetches - relay.fetch_count(folder.compound_id),
        "folder_reads": relay.fetch_count(folder.compound_id),
        "heads_frames": relay.heads_queries,
    }
    run.stop()
    return numbers


def remote_text(bare: Path, path: str) -> bytes | None:
    with Repo(str(bare)) as repo:
        return gitrepo.read_tree_paths(repo, "main").get(path)


def latencies(relay: DevRelay, folder: FolderHandle, run: Running, bare: Path, edits: int,
              webhook: bool) -> list[float]:
    run.start()
    path = "lat/note.md"
    out = []
    for i in range(edits):
        text = f"edit {i} {uuid.uuid4()}\n"
        began = time.monotonic()
        folder.edit_markdown(path, text)
        if webhook:
            reply = run.session.post(f"{run.url}/webhooks",
                                     json=relay.webhook_payload(folder.doc_compound_id(path)), timeout=10)
            assert reply.status_code == 202, reply.text
        wait_for(lambda text=text: remote_text(bare, path) == text.encode(), "the edit on the remote", 60)
        out.append(time.monotonic() - began)
    run.stop()
    return out


def describe(values: list[float]) -> str:
    ordered = sorted(values)
    return (f"p50 {statistics.median(ordered) * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms, "
            f"mean {statistics.mean(ordered) * 1000:.0f} ms (n={len(ordered)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--commit-interval", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp, DevRelay(api_key=API_KEY) as relay:
        work = Path(tmp)
        folder = relay.add_folder()
        began = time.monotonic()
        bulk_notes(relay, folder, args.docs)
        print(f"stand-in: folder of {args.docs} notes built in {time.monotonic() - began:.1f} s")

        data = work / "data"
        write_connectors(data, folder, "websocket")
        fresh = restart_numbers(relay, folder, Running(relay, data, webhook_secret=None))
        print(f"fresh start, websocket: ready in {fresh['ready_s']:.2f} s, {fresh['docs_fetched']} "
              f"documents fetched, {fresh['heads_frames']} heads frames (full sync + heads)")
        ws = restart_numbers(relay, folder, Running(relay, data, webhook_secret=None))
        write_connectors(data, folder, "webhook")
        full = restart_numbers(relay, folder, Running(relay, data))
        print(f"restart, unchanged folder, websocket: ready in {ws['ready_s']:.2f} s, "
              f"{ws['docs_fetched']} documents fetched ({ws['docs_fetched'] / args.docs:.2%}), "
              f"{ws['folder_reads']} folder read(s), {ws['heads_frames']} heads frames")
        print(f"restart, unchanged folder, webhook (full resync): ready in {full['ready_s']:.2f} s, "
              f"{full['docs_fetched']} documents fetched, {full['folder_reads']} folder read(s)")
        print(f"  websocket restart time = {ws['ready_s'] / full['ready_s']:.1%} of the full resync")

        small = relay.add_folder()
        small.put_markdown("lat/note.md", "start\n")
        for i in range(20):
            small.put_markdown(f"other/{i}.md", f"{i}\n")
        results = {}
        for mode in ("webhook", "websocket"):
            bare = work / f"remote-{mode}.git"
            Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
            data = work / f"lat-{mode}"
            write_connectors(data, small, mode, url=str(bare))
            run = Running(relay, data, commit_interval=args.commit_interval,
                          webhook_secret=SECRET if mode == "webhook" else None)
            results[mode] = latencies(relay, small, run, bare, args.edits, webhook=mode == "webhook")
        for mode, values in results.items():
            print(f"edit to remote, {mode}, commit interval {args.commit_interval:g} s: {describe(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
