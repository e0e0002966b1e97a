#!/usr/bin/env python3
"""Large attachment download: throughput and peak memory, next to two baselines.

The Relay stand-in serves one generated attachment (never held in memory by the
server).  Each way of downloading it runs in a fresh process, so its peak RSS
(``VmHWM``) is its own; the growth shown is peak RSS after the download minus
peak RSS just before it (imports done).

- ``requests, streamed``: a bare ``requests`` loop writing 256 KiB chunks to a file.
  The throughput ceiling of Python on this machine; no hashing, no checks.  The same
  loop with sha256 added is the fair baseline: the service must hash every attachment.
- ``previous version``: what the service did before size caps: every chunk kept in a
  list, joined, hashed, then written in one go.
- ``RelayClient.download_attachment_to``: this version: streamed into a temporary
  file while hashed and size-capped.

Throughput is for the download (and hash, and write to the page cache); the fsync the
engine does before placing a file is timed apart, as it measures the disk.

    python bench/bench_attachments.py [SIZE_MIB] [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "bench"
CHUNK = 256 * 1024
MODES = {
    "bare": "requests, streamed (baseline)",
    "hashed": "requests, streamed + sha256 (baseline)",
    "previous": "previous version (in memory)",
    "client": "RelayClient.download_attachment_to",
}


def peak_kib() -> int:
    """This process's own peak RSS (``VmHWM``): ``ru_maxrss`` of a started child also
    carries the RSS of the process that started it."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def child(mode: str, base_url: str, presigned: str, digest: str, directory: str) -> None:
    """Download once in this process and print a JSON line with time and memory."""
    import requests

    from gitsync.relay import RelayClient

    client = RelayClient(base_url, KEY, timeout=60)
    session = requests.Session()
    rss_before = peak_kib()
    start = time.perf_counter()
    path = os.path.join(directory, f"{mode}.bin")
    if mode in ("bare", "hashed"):
        hasher = hashlib.sha256()
        with session.get(presigned, stream=True, timeout=60) as resp, open(path, "wb") as out:
            for chunk in resp.iter_content(CHUNK):
                if mode == "hashed":
                    hasher.update(chunk)
                out.write(chunk)
    elif mode == "previous":
        with session.get(presigned, stream=True, timeout=60) as resp:
            hasher = hashlib.sha256()
            chunks = []
            for chunk in resp.iter_content(CHUNK):
                hasher.update(chunk)
                chunks.append(chunk)
        data = b"".join(chunks)
        assert hasher.hexdigest() == digest
        with open(path, "wb") as out:
            out.write(data)
    else:
        tmp, sha, _ = client.download_attachment_to(str(uuid.uuid4()), str(uuid.uuid4()), digest,
                                                    directory)
        assert sha == digest
        path = str(tmp)
    elapsed = time.perf_counter() - start
    fd = os.open(path, os.O_RDONLY)  # every mode pays the same fsync; timed apart (disk, not code)
    os.fsync(fd)
    os.close(fd)
    fsync = time.perf_counter() - start - elapsed
    rss_after = peak_kib()
    print(json.dumps({"seconds": elapsed, "fsync_seconds": fsync, "rss_before_kib": rss_before,
                      "rss_after_kib": rss_after}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("size_mib", type=int, nargs="?", default=200)
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode (median shown)")
    parser.add_argument("--child", nargs=5, metavar=("MODE", "URL", "PRESIGNED", "DIGEST", "DIR"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import requests

    from gitsync.dev.relay import DevRelay

    size = args.size_mib * 1024 * 1024
    with DevRelay(api_key=KEY) as relay:
        digest = relay.put_generated_blob(size)
        presigned = requests.get(
            f"{relay.url}/f/{uuid.uuid4()}-{uuid.uuid4()}/download-url", params={"hash": digest},
            headers={"Authorization": f"Bearer {KEY}"}, timeout=10,
        ).json()["downloadUrl"]
        print(f"attachment of {args.size_mib} MiB from the stand-in on loopback, "
              f"{args.rounds} round(s) per mode, median shown")
        print(f"{'mode':<38} {'MiB/s':>7} {'then fsync':>11} {'peak RSS growth (max)':>22}")
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):  # modes interleaved: a busy spell hits each alike
            for mode in MODES:
                with tempfile.TemporaryDirectory() as tmp:
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", mode, relay.url, presigned, digest, tmp],
                        capture_output=True, text=True, check=True,
                    )
                runs[mode].append(json.loads(done.stdout))
        for mode, label in MODES.items():
            ordered = sorted(runs[mode], key=lambda r: r["seconds"])
            mid = ordered[len(ordered) // 2]
            growth = max(r["rss_after_kib"] - r["rss_before_kib"] for r in ordered) / 1024
            print(f"{label:<38} {args.size_mib / mid['seconds']:>7.0f} {mid['fsync_seconds']:>9.2f} s"
                  f" {growth:>18.0f} MiB")

if __name__ == "__main__":
    main()
