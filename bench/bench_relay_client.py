#!/usr/bin/env python3
"""CPU per document fetch (``GET /d/{id}/as-update``) on the client side, with baselines.

Starts the Relay stand-in with ``--docs`` small documents, then fetches every one of them
in a child process per variant, one after the other, ``--rounds`` times in turn:

- ``bare``: a urllib3 ``HTTPConnectionPool`` loop (what HTTP costs at the least);
- ``base``: ``RelayClient.get_update`` of another source tree (``--base DIR``, e.g.
  ``git worktree add /tmp/base <commit>``), skipped without one;
- ``this``: ``RelayClient.get_update`` of this tree.

Each child measures the CPU time of its fetching thread only (``time.thread_time``), so
neither the stand-in nor other work on the shared machine is counted; the figure is the
median over the rounds of microseconds of CPU per fetch.  One connection, fetches in a
row: what a fetch costs, not how fast a sync is.

    python bench/bench_relay_client.py [--base /tmp/base] [--docs 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-api-key"

_CHILD = r"""
import json, sys, time
tree, variant, url, ids_file, key = sys.argv[1:6]
sys.path.insert(0, tree)
ids = json.load(open(ids_file))
if variant == "bare":
    import urllib3
    pool = urllib3.connection_from_url(url, maxsize=16)
    headers = {"Authorization": "Bearer " + key, "Accept-Encoding": "identity",
               "User-Agent": "relay-git-sync"}
    def fetch(cid):
        r = pool.urlopen("GET", f"/d/{cid}/as-update", headers=headers, retries=False,
                         redirect=False)
        assert r.status == 200
        return r.data
else:
    from gitsync.relay import RelayClient
    client = RelayClient(url, key, pool_size=16, retries=0)
    fetch = client.get_update
for cid in ids[:50]:
    fetch(cid)  # warm up: connection, imports, caches
start = time.thread_time()
for cid in ids:
    fetch(cid)
used = time.thread_time() - start
print(json.dumps({"us_per_fetch": used / len(ids) * 1e6}))
"""


def _run(tree: Path, variant: str, url: str, ids_file: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tree), variant, url, ids_file, API_KEY],
        check=True, capture_output=True, text=True, cwd=tree,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["us_per_fetch"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="baseline source tree")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from pycrdt import Text

    from gitsync.dev.relay import DevRelay
    from gitsync.ids import compound_id

    variants: list[tuple[str, Path]] = [("bare", ROOT)]
    if args.base:
        variants.append(("base", args.base.resolve()))
    variants.append(("this", ROOT))
    results: dict[str, list[float]] = {name: [] for name, _ in variants}
    with DevRelay(api_key=API_KEY) as relay, tempfile.TemporaryDirectory() as tmp:
        folder = relay.add_folder()
        ids = []
        for i in range(args.docs):
            cid = compound_id(folder.relay_id, str(uuid.uuid4()))
            with relay.edit(cid) as doc:
                doc.get("contents", type=Text).insert(0, f"note {i}\n" * 20)
            ids.append(cid)
        ids_file = str(Path(tmp) / "ids.json")
        Path(ids_file).write_text(json.dumps(ids))
        for _ in range(args.rounds):
            for name, tree in variants:
                variant = "bare" if name == "bare" else "client"
                results[name].append(_run(tree, variant, relay.url or "", ids_file))
    print(f"CPU per fetch, client thread only ({args.docs} documents, median of "
          f"{args.rounds} rounds):")
    labels = {"bare": "bare urllib3 loop", "base": f"RelayClient of {args.base}",
              "this": "RelayClient of this tree"}
    for name, _ in variants:
        runs = ", ".join(f"{v:.0f}" for v in results[name])
        print(f"  {labels[name]:<40} {statistics.median(results[name]):6.0f} us   ({runs})")


if __name__ == "__main__":
    main()
