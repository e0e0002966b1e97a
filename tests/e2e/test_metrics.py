"""``/metrics`` scraped over real HTTP and parsed as Prometheus does, around a real
webhook -> fetch -> commit -> push."""

from __future__ import annotations

import re

import pytest
import requests
from dulwich.repo import Repo
from prometheus_client.parser import text_string_to_metric_families

from gitsync import __version__
from tests.relay_faults import FaultyRelay

from .harness import ADMIN_TOKEN, InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def scrape(svc: InProcessService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` as ``{(name, sorted labels): value}``."""
    reply = svc.admin.get(f"{svc.url}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_follow_a_webhook_to_a_push(relay_server: FaultyRelay, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder], url=str(bare))
    conn = {"relay": folder.relay_id, "folder": folder.folder_id}
    with InProcessService(relay_server, data_dir) as svc:
        wait_for(lambda: value(scrape(svc), "relay_git_sync_pushes_total", **conn) == 1, "the first push")
        assert svc.service.queue.wait_idle(timeout=30)
        before = scrape(svc)
        assert value(before, "relay_git_sync_build_info", version=__version__) == 1
        assert value(before, "relay_git_sync_commits_total", **conn) == 1
        assert value(before, "relay_git_sync_pushes_total", **conn) == 1
        assert value(before, "relay_git_sync_unpushed_commits", **conn) == 0
        assert value(before, "relay_git_sync_sync_duration_seconds_count", kind="startup") == 1
        assert value(before, "relay_git_sync_fetches_total", kind="folder") >= 1
        assert value(before, "relay_git_sync_fetches_total", kind="document") >= 1
        assert value(before, "relay_git_sync_held_deletions", **conn) == 0
        pushed_at = value(before, "relay_git_sync_last_push_success_timestamp_seconds", **conn)
        assert pushed_at > 0

        folder.edit_markdown("a.md", "two\n")
        assert svc.post(relay_server, folder.doc_compound_id("a.md")).json()["status"] == "queued"
        wait_for(lambda: _remote_text(bare) == b"two\n", "the edit on the remote")
        wait_for(lambda: value(scrape(svc), "relay_git_sync_pushes_total", **conn) == 2, "the push counted")
        after = scrape(svc)
        assert value(after, "relay_git_sync_webhooks_total", result="queued") == 1
        assert value(after, "relay_git_sync_sync_duration_seconds_count", kind="interactive") >= 1
        assert value(after, "relay_git_sync_commits_total", **conn) == 2
        assert value(after, "relay_git_sync_push_failures_total", permanent="false", **conn) == 0
        assert value(after, "relay_git_sync_unpushed_commits", **conn) == 0
        assert value(after, "relay_git_sync_last_push_success_timestamp_seconds", **conn) >= pushed_at
        assert (value(after, "relay_git_sync_fetches_total", kind="document")
                > value(before, "relay_git_sync_fetches_total", kind="document"))
        for state in ("pending", "in_progress", "deferred"):
            assert ("relay_git_sync_queue_depth", (("state", state),)) in after
        assert ("relay_git_sync_queue_oldest_age_seconds", ()) in after

        # A refused webhook and a webhook for a relay nobody syncs are counted too.
        assert requests.post(f"{svc.url}/webhooks", json={}, timeout=5).status_code == 401
        other = relay_server.add_folder()
        other.put_markdown("x.md", "x")
        assert svc.post(relay_server, other.doc_compound_id("x.md")).json()["status"] == "ignored"
        final = scrape(svc)
        assert value(final, "relay_git_sync_webhooks_total", result="unauthorized") == 1
        assert value(final, "relay_git_sync_webhooks_total", result="ignored") == 1


def _remote_text(bare) -> bytes | None:
    from gitsync import gitrepo

    with Repo(str(bare)) as repo:
        try:
            return gitrepo.read_tree_paths(repo, "main").get("a.md")
        except KeyError:
            return None


def test_fetch_errors_and_queue_age_while_the_relay_fails(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder])
    with InProcessService(relay_server, tmp_path, relay_retries=0) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"}, "the startup commit")
        cid = folder.doc_compound_id("a.md")
        relay_server.fail_next(1000, status=503, path_prefix=f"/d/{cid}")
        folder.edit_markdown("a.md", "two\n")
        svc.post(relay_server, cid)
        wait_for(lambda: value(scrape(svc), "relay_git_sync_fetch_errors_total", kind="document",
                               reason="unavailable") >= 1, "a counted fetch error")
        samples = scrape(svc)
        assert value(samples, "relay_git_sync_folder_consecutive_failures",
                     relay=folder.relay_id, folder=folder.folder_id) >= 1
        # the failing key is retried with backoff: it stays outstanding and ages
        first = value(samples, "relay_git_sync_queue_oldest_age_seconds")
        wait_for(lambda: value(scrape(svc), "relay_git_sync_queue_oldest_age_seconds") > first, "the key to age")
        relay_server.clear_faults()


def test_registries_are_per_service(relay_server: FaultyRelay, tmp_path):
    """Two services in one process: each scrape shows its own connectors only."""
    one, two = relay_server.add_folder(), relay_server.add_folder()
    write_connectors(tmp_path / "a", [one])
    write_connectors(tmp_path / "b", [two])
    with InProcessService(relay_server, tmp_path / "a") as a, InProcessService(relay_server, tmp_path / "b") as b:
        wait_for(lambda: a.service.initial_sync_done.is_set() and b.service.initial_sync_done.is_set(), "startup")
        first, second = scrape(a), scrape(b)
    assert ("relay_git_sync_commits_total", (("folder", one.folder_id), ("relay", one.relay_id))) in first
    assert not any(dict(labels).get("folder") == one.folder_id for _, labels in second)


def test_metrics_need_the_admin_token_unless_public(relay_server: FaultyRelay, tmp_path):
    write_connectors(tmp_path / "a", [])
    with InProcessService(relay_server, tmp_path / "a") as svc:
        assert requests.get(f"{svc.url}/metrics", timeout=5).status_code == 401
        wrong = requests.get(f"{svc.url}/metrics", headers={"Authorization": "Bearer " + ADMIN_TOKEN[:-1] + "x"},
                             timeout=5)
        assert wrong.status_code == 401 and ADMIN_TOKEN not in wrong.text
        assert svc.admin.get(f"{svc.url}/metrics", timeout=5).status_code == 200
    with InProcessService(relay_server, tmp_path / "b", admin_token=None) as svc:
        reply = requests.get(f"{svc.url}/metrics", timeout=5)
        assert reply.status_code == 404
        assert "set ADMIN_TOKEN" in reply.json()["error"] and "METRICS_PUBLIC" in reply.json()["error"]
    with InProcessService(relay_server, tmp_path / "c", admin_token=None, metrics_public=True) as svc:
        assert requests.get(f"{svc.url}/metrics", timeout=5).status_code == 200


def test_metrics_under_gunicorn(relay_server: FaultyRelay, tmp_path):
    from .harness import GunicornService

    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    write_connectors(tmp_path / "data", [folder])
    svc = GunicornService(relay_server, tmp_path / "data")
    try:
        assert svc.wait_healthy()["version"] == __version__
        wait_for(lambda: svc.status()["initial_sync"] == "done", "the startup sync")
        svc.post(relay_server, folder.doc_compound_id("a.md"))
        reply = svc.admin.get(f"{svc.url}/metrics", timeout=10)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(reply.text) for s in family.samples}
        assert value(samples, "relay_git_sync_build_info", version=__version__) == 1
        assert value(samples, "relay_git_sync_webhooks_total", result="queued") == 1
        assert value(samples, "relay_git_sync_sync_duration_seconds_count", kind="startup") == 1
        assert svc.terminate() == 0
        ours = [line for line in svc.output().splitlines()
                if re.search(r" (DEBUG|INFO|WARNING|ERROR) gitsync\.", line)]  # not gunicorn's lines
        assert f"relay-git-sync {__version__} starting" in ours[0]
    finally:
        svc.close()
