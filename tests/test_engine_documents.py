"""The real engine against hostile documents the Relay stand-in serves over HTTP.

Each sync runs in a child interpreter (a regression there would be a SIGSEGV, which must
fail the test rather than kill pytest); the stand-in stays in this process and serves the
crafted bytes verbatim (``set_raw``), so the fetch, decode and write paths are the real ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dulwich.repo import Repo

from gitsync import gitrepo
from gitsync.config import Connector, Settings
from gitsync.dev.relay import FolderHandle
from gitsync.ids import compound_id
from gitsync.ycheck import MAX_DEPTH
from tests.relay_faults import FaultyRelay
from tests.yjs_craft import add_run, any_entry, deep_array, object_with

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_CLIENT = 31337
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"

# Sync every given folder once, commit, and print one JSON report per folder.
SYNC_SCRIPT = """
import json, sys
from pathlib import Path
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.engine import Engine, SyncAborted
from gitsync.relay import RelayClient

url, key, data_dir, folders = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
connectors = [Connector(relay, folder) for relay, folder in folders]
settings = Settings(data_dir=data_dir, relay_server_url=url, relay_server_api_key=key)
client = RelayClient(url, key, retries=1, backoff=0.01)
engine = Engine(settings, client, ConnectorsConfig(tuple(connectors)))
reports = []
try:
    for connector in connectors:
        try:
            report = engine.sync_folder(connector)
        except SyncAborted as exc:
            reports.append({"aborted": str(exc)})
            continue
        engine.commit(connector)
        reports.append({"created": report.created, "skipped": report.skipped, "failed": report.failed})
finally:
    engine.close()
print(json.dumps(reports))
"""


def sync_in_child(relay: FaultyRelay, data_dir: Path, folders: list[FolderHandle]) -> list[dict]:
    """One startup sync of ``folders`` by a fresh engine process; its reports."""
    result = subprocess.run(
        [
            sys.executable, "-c", SYNC_SCRIPT, relay.url or "", relay.api_key, str(data_dir),
            json.dumps([[f.relay_id, f.folder_id] for f in folders]),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, f"sync process died (exit {result.returncode}): {result.stderr[-600:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def committed(data_dir: Path, folder: FolderHandle) -> dict[str, bytes]:
    connector = Connector(folder.relay_id, folder.folder_id)
    settings = Settings(data_dir=data_dir)
    with Repo(str(settings.repo_dir(connector))) as repo:
        return gitrepo.read_tree_paths(repo, connector.branch)


def test_a_deep_canvas_is_skipped_and_the_rest_of_the_folder_syncs(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "A\n")
    folder.put_markdown("notes/b.md", "B\n")
    folder.put_canvas("board.canvas", {"nodes": [{"id": "n1", "type": "text", "text": "hi", "x": 0, "y": 0,
                                                   "width": 10, "height": 10}], "edges": []})
    board = folder.doc_compound_id("board.canvas")
    # the canvas as stored, plus a node whose field nests 20,000 arrays (40 KB)
    node = object_with({"id": "evil", "type": "text", "x": 0, "y": 0}, "styleAttributes", deep_array(20_000))
    relay_server.set_raw(board, add_run(relay_server.get_update(board), HOSTILE_CLIENT,
                                        [any_entry("nodes", "evil", node)]))

    for _ in range(2):  # the startup sync of every restart reads it again
        (report,) = sync_in_child(relay_server, tmp_path, [folder])
        assert report["failed"] == []
        assert [path for path, _ in report["skipped"]] == ["board.canvas"]
        assert "corrupt document" in report["skipped"][0][1] and TOO_DEEP in report["skipped"][0][1]
        assert committed(tmp_path, folder) == {"a.md": b"A\n", "notes/b.md": b"B\n"}


def test_a_deep_folder_document_stops_only_its_folder(relay_server, tmp_path):
    hostile = relay_server.add_folder()
    hostile.put_markdown("kept.md", "K\n")
    other = relay_server.add_folder()
    other.put_markdown("c.md", "C\n")
    index = compound_id(hostile.relay_id, hostile.folder_id)
    entry = object_with({"id": "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b", "type": "markdown", "version": 0},
                        "x", deep_array(20_000))
    relay_server.set_raw(index, add_run(relay_server.get_update(index), HOSTILE_CLIENT,
                                        [any_entry("filemeta_v0", "/evil.md", entry)]))

    first, second = sync_in_child(relay_server, tmp_path, [hostile, other])
    assert first["aborted"].startswith(f"cannot read folder {hostile.relay_id}/{hostile.folder_id}: ")
    assert TOO_DEEP in first["aborted"]
    assert second == {"created": 1, "skipped": [], "failed": []}
    assert committed(tmp_path, other) == {"c.md": b"C\n"}

    # once the entry is repaired on the relay, the folder syncs as it was
    relay_server.set_raw(index, None)
    first, _ = sync_in_child(relay_server, tmp_path, [hostile, other])
    assert first["created"] == 1
    assert committed(tmp_path, hostile) == {"kept.md": b"K\n"}
