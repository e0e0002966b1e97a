"""Size caps on what the Relay Server sends: documents, attachments, compressed bodies.

Real HTTP against the stand-in, real files and a real Dulwich repository; the memory
bound is measured in a separate process (peak RSS), never a time.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
from dulwich.repo import Repo

from gitsync import gitrepo
from gitsync.config import ConfigError, Connector, ConnectorsConfig, Settings, settings_from_env
from gitsync.dev.relay import FolderHandle, tiny_png
from gitsync.engine import TMP_MARK, Engine
from gitsync.relay import (
    DEFAULT_MAX_ATTACHMENT_BYTES,
    DEFAULT_MAX_UPDATE_BYTES,
    BadResponse,
    RelayClient,
    TooLarge,
    _Inflater,
)
from tests.fixtures_relay import TEST_API_KEY
from tests.relay_faults import FaultyRelay

ROOT = Path(__file__).resolve().parents[1]
CAP = 64 * 1024  # the update cap of these tests
ATTACHMENT_CAP = 128 * 1024
MiB = 1024 * 1024


def client(relay: FaultyRelay, **kwargs) -> RelayClient:
    options = {"retries": 1, "backoff": 0.001, "timeout": 10, "max_update_bytes": CAP,
               "max_attachment_bytes": ATTACHMENT_CAP}
    return RelayClient(relay.url or "", TEST_API_KEY, **{**options, **kwargs})


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.startswith(TMP_MARK)]


# -- settings ---------------------------------------------------------------------------


def test_caps_have_documented_defaults_flags_and_variables():
    settings = settings_from_env({})
    assert settings.max_update_bytes == 64 * MiB == DEFAULT_MAX_UPDATE_BYTES
    assert settings.max_attachment_bytes == 512 * MiB == DEFAULT_MAX_ATTACHMENT_BYTES
    env = {"RELAY_GIT_MAX_UPDATE_BYTES": "100000", "RELAY_GIT_MAX_ATTACHMENT_BYTES": "200000"}
    settings = settings_from_env(env, max_attachment_bytes=300000)
    assert (settings.max_update_bytes, settings.max_attachment_bytes) == (100000, 300000)
    readme = (ROOT / "README.md").read_text()
    for text in ("--max-update-bytes", "RELAY_GIT_MAX_UPDATE_BYTES", "--max-attachment-bytes",
                 "RELAY_GIT_MAX_ATTACHMENT_BYTES"):
        assert text in readme


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RELAY_GIT_MAX_UPDATE_BYTES": "64MB"}, "RELAY_GIT_MAX_UPDATE_BYTES must be a whole number"),
        ({"RELAY_GIT_MAX_UPDATE_BYTES": "100"},
         "--max-update-bytes (RELAY_GIT_MAX_UPDATE_BYTES) must be at least 4096 bytes"),
        ({"RELAY_GIT_MAX_ATTACHMENT_BYTES": "-1"},
         "--max-attachment-bytes (RELAY_GIT_MAX_ATTACHMENT_BYTES) must be at least 4096 bytes"),
    ],
)
def test_bad_caps_name_the_setting(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from_env(env)


# -- the client --------------------------------------------------------------------------


def test_declared_length_over_the_cap_is_refused_before_reading(relay_server: FaultyRelay):
    folder = relay_server.add_folder()
    folder.put_markdown("big.md", "x" * (2 * CAP))
    cid = folder.doc_compound_id("big.md")
    # The server claims a gigabyte and sends a few bytes, keeping the connection open:
    # a client that started reading would wait for the rest until it timed out.
    relay_server.frame_response(cid, content_length=10**9)
    with client(relay_server, timeout=60) as c, pytest.raises(TooLarge) as info:
        c.get_update(cid)
    assert (info.value.size, info.value.limit) == (10**9, CAP)
    assert "1,000,000,000 bytes" in str(info.value) and "64 KiB cap" in str(info.value)
    assert relay_server.fetch_count(cid) == 1  # permanent: not retried


@pytest.mark.parametrize("framing", [{}, {"chunked": True}])
def test_update_over_the_cap_raises_too_large(relay_server: FaultyRelay, framing):
    folder = relay_server.add_folder()
    folder.put_markdown("big.md", "x" * (2 * CAP))
    cid = folder.doc_compound_id("big.md")
    relay_server.frame_response(cid, **framing)
    with client(relay_server) as c, pytest.raises(TooLarge) as info:
        c.get_update(cid)
    assert info.value.limit == CAP
    assert "--max-update-bytes" in str(info.value)
    assert "64 KiB cap" in str(info.value)


def test_small_gzip_answer_that_inflates_past_the_cap(relay_server: FaultyRelay):
    folder = relay_server.add_folder()
    folder.put_markdown("bomb.md", "a" * (40 * CAP))
    cid = folder.doc_compound_id("bomb.md")
    assert len(gzip.compress(relay_server.get_update(cid) or b"")) < CAP // 4
    relay_server.frame_response(cid, gzip=True)
    with client(relay_server) as c, pytest.raises(TooLarge, match=r"inflates \(gzip\)"):
        c.get_update(cid)


def test_gzip_answer_within_the_cap_is_decoded(relay_server: FaultyRelay):
    """A server that compresses although identity was asked for still works."""
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "hello " * 1000)
    cid = folder.doc_compound_id("a.md")
    relay_server.frame_response(cid, gzip=True)
    with client(relay_server) as c:
        assert c.get_update(cid) == relay_server.get_update(cid)


def test_body_shorter_than_declared_fails_that_document_only(relay_server: FaultyRelay):
    folder = relay_server.add_folder()
    folder.put_markdown("short.md", "short")
    cid = folder.doc_compound_id("short.md")
    relay_server.frame_response(cid, content_length=1000)
    with client(relay_server) as c, pytest.raises(BadResponse) as info:
        c.get_update(cid)
    assert "after" in str(info.value) and "of 1,000 bytes" in str(info.value)
    assert relay_server.fetch_count(cid) == 2  # retried once, then given up on


@pytest.mark.parametrize("framing", [{}, {"chunked": True}, {"gzip": True}])
def test_attachment_over_the_cap_leaves_no_file(relay_server: FaultyRelay, tmp_path, framing):
    folder = relay_server.add_folder()
    data = b"\x00" * (3 * ATTACHMENT_CAP)
    doc_id = folder.put_attachment("big.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    relay_server.frame_response(digest, **framing)
    with client(relay_server) as c, pytest.raises(TooLarge) as info:
        c.download_attachment_to(folder.relay_id, doc_id, digest, tmp_path)
    assert "128 KiB cap on attachments" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_attachment_streams_to_a_verified_temporary_file(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    data = os.urandom(ATTACHMENT_CAP - 1)
    doc_id = folder.put_attachment("a.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    with client(relay_server) as c:
        path, sha, size = c.download_attachment_to(folder.relay_id, doc_id, digest, tmp_path,
                                                   prefix=TMP_MARK)
        assert (path.parent, sha, size) == (tmp_path, digest, len(data))
        assert path.name.startswith(TMP_MARK) and path.name.endswith(".tmp")
        assert path.read_bytes() == data
        path.unlink()
        relay_server.set_blob_bytes(digest, b"tampered")
        with pytest.raises(BadResponse, match="does not match the hash"):
            c.download_attachment_to(folder.relay_id, doc_id, digest, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_inflater_output_is_bounded_per_input():
    """A deflate bomb (zlib, raw deflate, gzip in two members) never yields past room + 1."""
    plain = b"\x00" * (20 * MiB)
    bodies = {
        "zlib": ("deflate", zlib.compress(plain, 9)),
        "raw": ("deflate", zlib.compress(plain, 9)[2:-4]),
        "gzip": ("gzip", gzip.compress(plain[: 10 * MiB]) + gzip.compress(plain[10 * MiB :])),
    }
    for name, (encoding, body) in bodies.items():
        assert len(body) < 64 * 1024, name
        out = sum(len(p) for p in _Inflater(encoding).feed(body, 1 * MiB))
        assert out == 1 * MiB + 1, name
        inflater = _Inflater(encoding)
        assert sum(len(p) for p in inflater.feed(body, len(plain))) == len(plain), name
        inflater.finish()


# -- the engine: skipped with a reason, the rest syncs, nothing lost ---------------------


def make_engine(relay: FaultyRelay, data_dir: Path, folder: FolderHandle, **settings):
    connector = Connector(folder.relay_id, folder.folder_id)
    cfg = Settings(data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=relay.api_key,
                   max_update_bytes=CAP, max_attachment_bytes=ATTACHMENT_CAP, **settings)
    relay_client = RelayClient(relay.url or "", relay.api_key, retries=1, backoff=0.001,
                               max_update_bytes=cfg.max_update_bytes,
                               max_attachment_bytes=cfg.max_attachment_bytes)
    return Engine(cfg, relay_client, ConnectorsConfig((connector,))), connector


def test_oversized_documents_are_skipped_and_the_rest_syncs(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    small = {f"ok/note {i}.md": f"note {i}\n" for i in range(12)}
    for path, text in small.items():
        folder.put_markdown(path, text)
    folder.put_attachment("ok/pixel.png", tiny_png(), "image/png")
    folder.put_markdown("big.md", "x" * (2 * CAP))                    # (a) larger than the cap
    folder.put_markdown("bomb.md", "a" * (40 * CAP))                  # (b) small when gzipped
    relay_server.frame_response(folder.doc_compound_id("bomb.md"), gzip=True)
    big_blob = os.urandom(2 * ATTACHMENT_CAP)
    folder.put_attachment("big.bin", big_blob)                        # (c) attachment over its cap
    relay_server.frame_response(hashlib.sha256(big_blob).hexdigest(), chunked=True)
    folder.put_markdown("liar.md", "tiny")                            # (d) false Content-Length
    relay_server.frame_response(folder.doc_compound_id("liar.md"), content_length=10**9)
    folder.put_markdown("short.md", "cut off")                        # (d) body shorter than said
    relay_server.frame_response(folder.doc_compound_id("short.md"), content_length=5000)

    engine, conn = make_engine(relay_server, tmp_path, folder, fetch_concurrency=2)
    try:
        report = engine.sync_folder(conn)
        skipped = dict(report.skipped)
        assert set(skipped) == {"big.md", "bomb.md", "big.bin", "liar.md"}
        assert "64 KiB cap on document updates" in skipped["big.md"]
        assert f"declares {len(relay_server.get_update(folder.doc_compound_id('big.md'))):,} bytes" \
            in skipped["big.md"]
        assert "inflates (gzip) to more than 65,536 bytes" in skipped["bomb.md"]
        assert "more than 131,072 bytes" in skipped["big.bin"]
        assert "128 KiB cap on attachments" in skipped["big.bin"]
        assert "declares 1,000,000,000 bytes" in skipped["liar.md"]
        # A body that breaks off may be a network fault: failed (retried later), alone.
        assert [path for path, _ in report.failed] == ["short.md"]
        assert "of 5,000 bytes" in report.failed[0][1]
        assert report.created == len(small) + 1
        engine.commit(conn)
        files = tree(engine, conn)
        assert files == {**{p: t.encode() for p, t in small.items()}, "ok/pixel.png": tiny_png()}
        assert temp_files(engine.settings.repo_dir(conn)) == []

        # Nothing is lost: smaller versions sync on the next pass.
        folder.edit_markdown("big.md", "now small\n")
        folder.edit_markdown("bomb.md", "defused\n")
        folder.put_attachment("big.bin", b"small blob")
        for target in ("liar.md", "short.md", "bomb.md"):
            relay_server.frame_response(folder.doc_compound_id(target))
        report = engine.sync_folder(conn)
        assert (report.skipped, report.failed) == ([], [])
        engine.commit(conn)
        files = tree(engine, conn)
        assert files["big.md"] == b"now small\n" and files["bomb.md"] == b"defused\n"
        assert files["big.bin"] == b"small blob"
        assert files["liar.md"] == b"tiny" and files["short.md"] == b"cut off"
    finally:
        engine.close()


def test_an_existing_file_stays_while_its_new_version_is_too_large(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "version 1\n")
    first = os.urandom(1000)
    folder.put_attachment("a.bin", first)
    engine, conn = make_engine(relay_server, tmp_path, folder)
    try:
        engine.sync_folder(conn)
        folder.edit_markdown("a.md", "y" * (2 * CAP))
        folder.put_attachment("a.bin", os.urandom(2 * ATTACHMENT_CAP))
        report = engine.sync_docs(conn, [folder.doc_id("a.md")])
        assert [p for p, _ in report.skipped] == ["a.md"]
        report = engine.sync_folder(conn, full=False)
        assert [p for p, _ in report.skipped] == ["a.bin"]
        root = engine.settings.repo_dir(conn)
        assert (root / "a.md").read_text() == "version 1\n"
        assert (root / "a.bin").read_bytes() == first
        assert temp_files(root) == []
    finally:
        engine.close()


def test_staged_attachment_is_removed_when_it_cannot_be_placed(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_attachment("img/a.png", tiny_png(), "image/png")
    engine, conn = make_engine(relay_server, tmp_path, folder)
    try:
        root = engine.settings.repo_dir(conn)
        (root / "img" / "a.png").mkdir(parents=True)  # a directory a person made is in the way
        report = engine.sync_folder(conn)
        assert [p for p, _ in report.skipped] == ["img/a.png"]
        assert temp_files(root) == []
    finally:
        engine.close()


def tree(engine: Engine, connector: Connector) -> dict[str, bytes]:
    with Repo(str(engine.settings.repo_dir(connector))) as repo:
        return gitrepo.read_tree_paths(repo, connector.branch)


# -- memory ------------------------------------------------------------------------------

_PEAK = r"""
def peak_kib():
    # VmHWM is this process's own high-water mark; ru_maxrss of an exec'd child also
    # carries the RSS of the process that started it (pytest), which would hide growth.
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
"""

_DOWNLOAD = _PEAK + r"""
import json, sys
from gitsync.relay import RelayClient
url, key, relay_id, doc_id, digest, directory = sys.argv[1:7]
with RelayClient(url, key, timeout=60) as client:
    before = peak_kib()
    path, sha, size = client.download_attachment_to(relay_id, doc_id, digest, directory)
    after = peak_kib()
print(json.dumps({"before_kib": before, "after_kib": after, "path": str(path), "sha": sha,
                  "size": size}))
"""


@pytest.mark.slow
def test_a_200_mb_attachment_downloads_in_bounded_memory(relay_server: FaultyRelay, tmp_path):
    size = 200 * MiB
    digest = relay_server.put_generated_blob(size)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _DOWNLOAD, relay_server.url or "", TEST_API_KEY, str(uuid.uuid4()),
         str(uuid.uuid4()), digest, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    grown_mib = (result["after_kib"] - result["before_kib"]) / 1024
    assert grown_mib < 60, f"peak RSS grew by {grown_mib:.0f} MiB for a 200 MiB download"
    assert (result["sha"], result["size"]) == (digest, size)
    assert Path(result["path"]).stat().st_size == size


_ENGINE_SYNC = _PEAK + r"""
import json, sys
from pathlib import Path
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.engine import Engine
from gitsync.relay import RelayClient
url, key, relay_id, folder_id, data_dir = sys.argv[1:6]
settings = Settings(data_dir=Path(data_dir), relay_server_url=url, relay_server_api_key=key)
connector = Connector(relay_id, folder_id)
engine = Engine(settings, RelayClient(url, key, timeout=60), ConnectorsConfig((connector,)))
try:
    before = peak_kib()
    first = engine.sync_folder(connector)
    second = engine.sync_folder(connector)  # full: reads the file back to verify it
    after = peak_kib()
finally:
    engine.close()
print(json.dumps({"before_kib": before, "after_kib": after, "created": first.created,
                  "unchanged": second.unchanged, "skipped": first.skipped + second.skipped}))
"""


@pytest.mark.slow
def test_a_folder_sync_with_a_200_mb_attachment_stays_in_bounded_memory(relay_server, tmp_path):
    size = 200 * MiB
    digest = relay_server.put_generated_blob(size, seed=b"engine")
    folder = relay_server.add_folder()
    folder.put_markdown("note.md", "hello\n")
    folder.set_entry("/video.bin", {"id": str(uuid.uuid4()), "type": "file", "version": 0,
                                    "hash": digest, "mimetype": "application/octet-stream"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _ENGINE_SYNC, relay_server.url or "", TEST_API_KEY, folder.relay_id,
         folder.folder_id, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["created"], result["unchanged"], result["skipped"]) == (2, 2, [])
    grown_mib = (result["after_kib"] - result["before_kib"]) / 1024
    assert grown_mib < 60, f"peak RSS grew by {grown_mib:.0f} MiB syncing a 200 MiB attachment"
    repo_dir = tmp_path / "repos" / folder.relay_id / folder.folder_id
    assert (repo_dir / "video.bin").stat().st_size == size
    assert temp_files(repo_dir) == []


# -- redirects are followed by hand (requests would read their bodies whole) -------------


def test_redirects_are_followed_without_reading_their_bodies(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "hello\n")
    data = os.urandom(5000)
    doc_id = folder.put_attachment("a.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    cid = folder.doc_compound_id("a.md")
    with client(relay_server, max_update_bytes=4096) as c:
        relay_server.fail_next(2, status=307, path_prefix="/d/")  # the API key goes along
        assert c.get_update(cid) == relay_server.get_update(cid)
        relay_server.fail_next(3, status=302, path_prefix="/blob/")  # and never to a blob
        assert c.download_attachment(folder.relay_id, doc_id, digest) == data
        relay_server.fail_next(6, status=301, path_prefix="/d/")
        with pytest.raises(BadResponse, match="redirected more than 5 times"):
            c.get_update(cid)
