#!/usr/bin/env python3
"""Fairness: edits reach their remote while a big folder does its startup sync.

Starts the Relay stand-in (every document read delayed by ``--delay`` ms, a Relay Server
across a network), a private OpenSSH server on 127.0.0.1 with one bare repository per
folder (the tests' fixture code; needs sshd and git on the server side), and the real
service under gunicorn with two connectors:

- ``big``: ``--docs`` notes (default 4,000), whose startup sync is the bulk work;
- ``small``: one note.

While the big folder's startup sync is in flight it edits, round after round, the small
folder's note and then a note of the big folder, posts each edit's webhook, and polls
the bare repository on the sshd (git, server side) every 20 ms until the edited text is
on the remote branch. Then, once the service is idle (everything synced and pushed),
the same edits give the baseline of the same run.

    python bench/bench_fairness.py [--docs 4000] [--delay 10] [--rounds 3]
        [--commit-interval 2] [--debounce S]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import Remote  # noqa: E402
from bench_service import API_KEY, SECRET, Service, bulk_add_notes, wait_for  # noqa: E402

from gitsync.dev.relay import DevRelay, FolderHandle  # noqa: E402

POLL = 0.02


def on_remote(remote: Remote, url: str, path: str) -> bytes | None:
    """The file at ``path`` on the remote's main branch, or None."""
    bare = url.split(str(remote.server.port), 1)[1]
    out = subprocess.run([remote.git, "--git-dir", bare, "cat-file", "blob", f"main:{path}"],
                         capture_output=True)
    return out.stdout if out.returncode == 0 else None


def edit_to_remote(relay: DevRelay, service: Service, session: requests.Session, remote: Remote,
                   url: str, folder: FolderHandle, path: str, text: str, timeout: float = 120) -> float:
    """Seconds from the edit in the stand-in until the remote branch holds ``text``."""
    t0 = time.monotonic()
    folder.edit_markdown(path, text)
    resp = session.post(f"{service.url}/webhooks", json=relay.webhook_payload(folder.doc_compound_id(path)),
                        timeout=10)
    if resp.status_code != 202:
        raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text[:200]}")
    want = text.encode()
    done = wait_for(lambda: on_remote(remote, url, path) == want, f"{path} on the remote", timeout, POLL)
    return done - t0


def fmt(values: list[float]) -> str:
    if not values:
        return "no sample"
    return (f"median {statistics.median(values):.2f} s, max {max(values):.2f} s "
            f"(n={len(values)}: {', '.join(f'{v:.2f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--delay", type=float, default=10.0, help="ms added to every document read")
    parser.add_argument("--rounds", type=int, default=3, help="edit pairs during the sync (at most)")
    parser.add_argument("--commit-interval", type=float, default=2.0)
    parser.add_argument("--debounce", type=float, default=None, help="default: the service's")
    args = parser.parse_args()
    remote = Remote("ssh")
    work = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    service = None
    try:
        with DevRelay(api_key=API_KEY) as relay:
            big, small = relay.add_folder(), relay.add_folder()
            bulk_add_notes(big, {f"d{i % 20}/note {i}.md": f"# Note {i}\n\n" + "lorem ipsum " * 40
                                 for i in range(args.docs)})
            big.put_markdown("target.md", "target 0\n")
            small.put_markdown("s.md", "small 0\n")
            urls = {}
            lines = []
            for name, folder in (("big", big), ("small", small)):
                url, hosts, extra = remote.new(work)
                urls[name] = url
                if hosts not in lines:
                    lines.insert(0, hosts)
                lines.append(f'[[git_connector]]\nrelay_id = "{folder.relay_id}"\n'
                             f'shared_folder_id = "{folder.folder_id}"\nurl = "{url}"\n')
            data = work / "data"
            data.mkdir()
            (data / "git_connectors.toml").write_text("".join(lines))
            relay.read_delay = args.delay / 1000
            print(f"stand-in: big folder {args.docs + 1} notes, small folder 1 note, reads delayed "
                  f"{args.delay:g} ms; remotes over sshd on 127.0.0.1; commit interval "
                  f"{args.commit_interval:g} s", flush=True)
            service = Service(relay, data, args.commit_interval, args.debounce, extra_env=extra)
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {SECRET}"
            wait_for(service.healthy, "/health", 60)
            # the big folder's sync is under way once a few hundred documents were read
            wait_for(lambda: relay.total_fetches > 200, "the big folder's startup sync", 120)
            busy_small: list[float] = []
            busy_big: list[float] = []
            in_flight = []
            for r in range(args.rounds):
                if relay.total_fetches >= args.docs:
                    break
                busy_small.append(edit_to_remote(relay, service, session, remote, urls["small"], small,
                                                 "s.md", f"small busy {r}\n"))
                busy_big.append(edit_to_remote(relay, service, session, remote, urls["big"], big,
                                               "target.md", f"target busy {r}\n"))
                in_flight.append(relay.total_fetches)
            t_sync = time.monotonic()
            wait_for(lambda: remote.files(urls["big"]) == args.docs + 1, "the big folder on its remote",
                     600, 0.2)
            time.sleep(args.commit_interval)  # the last interval's commit, if any, is pushed
            print(f"during the big sync: small {fmt(busy_small)}; big {fmt(busy_big)}", flush=True)
            print(f"startup sync of the big folder: {relay.total_fetches} reads in all; the edits "
                  f"above ended after {', '.join(map(str, in_flight))} reads; all on the remote "
                  f"{time.monotonic() - t_sync:.1f} s after the last", flush=True)
            idle_small = [edit_to_remote(relay, service, session, remote, urls["small"], small, "s.md",
                                         f"small idle {r}\n") for r in range(max(len(busy_small), 3))]
            idle_big = [edit_to_remote(relay, service, session, remote, urls["big"], big, "target.md",
                                       f"target idle {r}\n") for r in range(max(len(busy_big), 3))]
            print(f"edit in the small folder to its remote, during the big sync: {fmt(busy_small)}")
            print(f"                              baseline, service idle: {fmt(idle_small)}")
            print(f"edit in the big folder to its remote, during its sync:   {fmt(busy_big)}")
            print(f"                              baseline, service idle: {fmt(idle_big)}")
    finally:
        if service is not None:
            service.close()
        remote.close()


if __name__ == "__main__":
    main()
