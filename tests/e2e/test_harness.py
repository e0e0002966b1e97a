"""The e2e harness itself: reading the service's checkout while the service creates it."""

from __future__ import annotations

import shutil
from pathlib import Path

from gitsync import gitrepo
from gitsync.dev.relay import FolderHandle
from tests.e2e.harness import has_branch, head_files

RELAY = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
FOLDER = "f47ac10b-58cc-4372-a567-0e02b2c3d479"


def _made(root: Path) -> list[Path]:
    """The entries of ``root`` by creation time (directories before what they hold)."""
    return sorted(root.rglob("*"), key=lambda p: (p.stat().st_mtime_ns, len(p.parts)))


def test_head_files_reads_a_checkout_only_once_its_branch_exists(tmp_path):
    """Replays a real repository's creation and first commit entry by entry (each state
    before the branch also with its config caught mid-write): before the branch exists
    nothing is opened (no error, {}), after it the committed files are read."""
    full = tmp_path / "full"
    with gitrepo.open_or_init(full, branch="main") as repo:
        (full / "a.md").write_text("a\n")
        gitrepo.commit_paths(repo, ["a.md"], message="one", author="T <t@example.com>", branch="main")
    made = _made(full / ".git")
    folder = FolderHandle.__new__(FolderHandle)
    folder.relay_id, folder.folder_id = RELAY, FOLDER
    data_dir = tmp_path / "data"
    checkout = data_dir / "repos" / RELAY / FOLDER
    seen_before = 0
    for count in range(len(made) + 1):
        shutil.rmtree(checkout, ignore_errors=True)
        (checkout / ".git").mkdir(parents=True)
        for src in made[:count]:
            dst = checkout / ".git" / src.relative_to(full / ".git")
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
        if has_branch(checkout / ".git"):
            assert head_files(data_dir, folder) == {"a.md": b"a\n"}
            continue
        assert head_files(data_dir, folder) == {}
        seen_before += 1
        config = checkout / ".git" / "config"
        if config.exists():  # the same state with the config caught mid-write
            config.write_bytes(config.read_bytes()[:4])
            assert head_files(data_dir, folder) == {}
    assert seen_before > 10  # the replay went through many half-created states
