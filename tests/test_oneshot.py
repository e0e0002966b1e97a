"""gitsync.oneshot: the command line's one-shot sync returns data, not text."""

from __future__ import annotations

import uuid

from dulwich.repo import Repo

from gitsync.config import Settings
from gitsync.oneshot import sync_once
from tests.e2e.harness import write_connectors


def test_sync_once_reports_each_folder_and_its_push(relay_server, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    folder.put_markdown("b.md", "b\n")
    data = tmp_path / "data"
    write_connectors(data, [folder], url=str(bare))
    settings = Settings(data_dir=data, relay_server_url=relay_server.url, relay_server_api_key=relay_server.api_key)

    outcome = sync_once(settings)

    (only,) = outcome.folders
    assert only.ok and outcome.ok and only.error is None
    assert (only.report.created, only.report.failed, only.report.held) == (2, [], None)
    assert only.report.commit and outcome.reports == [only.report]
    assert only.push is not None and only.push.ok
    assert (only.push.where, only.push.branch, only.push.outcome.status) == (str(bare), "main", "created")


def test_a_folder_that_cannot_be_read_is_reported_as_an_error(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    data = tmp_path / "data"
    write_connectors(data, [folder])
    settings = Settings(data_dir=data, relay_server_url=relay_server.url, relay_server_api_key=relay_server.api_key)
    absent = str(uuid.uuid4())  # no such folder on the relay

    outcome = sync_once(settings, selection=(folder.relay_id, absent), push=False)

    (lost,) = outcome.folders
    assert lost.report is None and lost.push is None and not lost.ok and not outcome.ok
    assert absent in lost.error and outcome.reports == []
