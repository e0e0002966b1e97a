"""Commit authors through the running service: webhooks in, authored commits out, counts
in /api/status."""

from __future__ import annotations

import pytest
from dulwich.repo import Repo

from gitsync.dev.relay import DevRelay

from .harness import InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def commits(data_dir, folder) -> list:
    """The branch's commits, oldest first."""
    with Repo(str(data_dir / "repos" / folder.relay_id / folder.folder_id)) as repo:
        return list(reversed([entry.commit for entry in repo.get_walker()]))


def people(commit) -> set[str]:
    """Author and co-authors of a commit."""
    trailers = [line.split(": ", 1)[1] for line in commit.message.decode("utf-8").splitlines()
                if line.startswith("Co-authored-by: ")]
    return {commit.author.decode("utf-8"), *trailers}


def test_service_commits_carry_the_writers_and_status_counts_them(relay_server: DevRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n", user="user-ada")
    write_connectors(tmp_path, [folder])
    with (tmp_path / "git_connectors.toml").open("a", encoding="utf-8") as handle:
        handle.write('\n[authors]\n"user-ada" = "Ada Lovelace <ada@example.org>"\n')
    with InProcessService(relay_server, tmp_path) as svc:
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"}, "the startup sync commit")
        assert commits(tmp_path, folder)[-1].author == b"Relay Git Sync <relay-git-sync@localhost>"
        folder.edit_markdown("a.md", "one, and two\n", user="user-ada")
        folder.put_markdown("b.md", "by someone without an [authors] entry\n", user="user-zed")
        for path in ("a.md", "b.md"):
            assert svc.post(relay_server, folder.doc_compound_id(path)).status_code == 202
        assert svc.post(relay_server, folder.compound_id).status_code == 202
        wait_for(lambda: set(head_files(tmp_path, folder)) == {"a.md", "b.md"}
                 and head_files(tmp_path, folder)["a.md"] == b"one, and two\n", "the edit commit")
        edits = commits(tmp_path, folder)[1:]  # one commit or two, as the commit timer fell
        assert set().union(*(people(c) for c in edits)) == {
            "Ada Lovelace <ada@example.org>", "user-zed <user-zed@users.relay.invalid>"}
        assert {c.committer for c in edits} == {b"Relay Git Sync <relay-git-sync@localhost>"}
        status = svc.admin.get(f"{svc.url}/api/status", timeout=5).json()
        assert status["counts"]["changes_attributed"] == 2
        assert status["counts"]["changes_unattributed"] == 1  # the startup commit's a.md
        assert status["folders"][0]["authorship"] == {"attributed": 2, "unattributed": 1}
