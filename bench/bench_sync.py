#!/usr/bin/env python3
"""Initial and incremental sync throughput against the Relay stand-in on loopback.

Prints documents per second for a cold full sync of N markdown documents (fetch, decode,
write, one commit), a warm full sync (nothing changed), and one edited document.
The stand-in shares the machine's cores with the client, so numbers are a floor.

    python bench/bench_sync.py [N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitsync.config import Connector, ConnectorsConfig, Settings  # noqa: E402
from gitsync.dev.relay import DevRelay  # noqa: E402
from gitsync.engine import Engine  # noqa: E402
from gitsync.relay import RelayClient  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with DevRelay(api_key="bench") as relay, tempfile.TemporaryDirectory() as tmp:
        folder = relay.add_folder()
        t0 = time.perf_counter()
        for i in range(args.n):
            folder.put_markdown(f"d{i % 20}/note {i}.md", f"# Note {i}\n\n" + "lorem ipsum " * 40)
        print(f"built {args.n} documents in the stand-in: {time.perf_counter() - t0:.1f} s")
        settings = Settings(data_dir=Path(tmp), relay_server_url=relay.url, relay_server_api_key="bench",
                            fetch_concurrency=args.concurrency)
        connector = Connector(folder.relay_id, folder.folder_id)
        engine = Engine(settings, RelayClient(relay.url, "bench", pool_size=args.concurrency * 2),
                        ConnectorsConfig((connector,)))
        try:
            t0 = time.perf_counter()
            report = engine.sync_folder(connector)
            t1 = time.perf_counter()
            engine.commit(connector)
            t2 = time.perf_counter()
            print(f"cold full sync: {report.created} docs in {t1 - t0:.2f} s "
                  f"({report.created / (t1 - t0):.0f} docs/s); commit {t2 - t1:.2f} s")
            t0 = time.perf_counter()
            report = engine.sync_folder(connector)
            t1 = time.perf_counter()
            print(f"warm full sync (no change): {report.unchanged} docs in {t1 - t0:.2f} s "
                  f"({report.unchanged / (t1 - t0):.0f} docs/s)")
            folder.edit_markdown("d1/note 1.md", "edited\n")
            doc = folder.doc_id("d1/note 1.md")
            t0 = time.perf_counter()
            engine.sync_docs(connector, [doc])
            sha = engine.commit(connector)
            t1 = time.perf_counter()
            print(f"one edited document, fetch + write + commit: {(t1 - t0) * 1000:.1f} ms ({sha[:10]})")
        finally:
            engine.close()


if __name__ == "__main__":
    main()
