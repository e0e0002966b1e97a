"""gitsync.worktree: no operation follows a link or leaves the repository, on real files."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from gitsync import worktree
from gitsync.worktree import PathRefused

SECRET = b"outside the repository\n"
TARGET = "a/b/c/f.md"
LEVELS = ["a", "a/b", "a/b/c"]


def snapshot(place: Path) -> dict[str, bytes | None]:
    """Every entry below ``place``: file bytes, or None for directories and links."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(place):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(place))
            out[rel] = full.read_bytes() if full.is_file() and not full.is_symlink() else None
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the repository shaped like the targets, so a followed link works."""
    place = tmp_path / "outside"
    for sub in ("", "b", "b/c", "c"):
        (place / sub).mkdir(parents=True, exist_ok=True)
        (place / sub / "f.md").write_bytes(SECRET)
    for sub in ("", "c", "b/c"):
        (place / sub / "empty").mkdir()
    return place


@pytest.fixture
def root(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "config").write_bytes(b"[core]\n")
    (repo / "mine.md").write_bytes(b"mine\n")
    return repo


def plant_link(root: Path, level: str, outside: Path) -> None:
    """``level`` (an ancestor of TARGET) becomes a link to ``outside``.

    ``outside`` holds ``b/c/f.md``, ``c/f.md`` and ``f.md``: whichever level is the
    link, following it would reach a real file there.
    """
    (root / level).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, root / level)


def plant_file(root: Path, level: str) -> None:
    (root / level).parent.mkdir(parents=True, exist_ok=True)
    (root / level).write_bytes(b"a file where a directory is expected\n")


OPS = {
    "check": lambda r: worktree.check(r, TARGET),
    "lstat": lambda r: worktree.lstat(r, TARGET),
    "read_file": lambda r: worktree.read_file(r, TARGET),
    "write_file": lambda r: worktree.write_file(r, TARGET, b"escape\n"),
    "write_file_overwrite": lambda r: worktree.write_file(r, TARGET, b"escape\n", overwrite=True),
    "delete_file": lambda r: worktree.delete_file(r, TARGET),
    "move_source": lambda r: worktree.move(r, TARGET, "moved.md"),
    "move_destination": lambda r: worktree.move(r, "mine.md", TARGET),
    "make_dirs": lambda r: worktree.make_dirs(r, TARGET),
    "opened": lambda r: worktree.opened(r, TARGET, create=True).__enter__(),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_a_link_at_any_ancestor_is_refused(root, outside, level, op):
    plant_link(root, level, outside)
    before, mine = snapshot(outside), (root / "mine.md").read_bytes()
    with pytest.raises(PathRefused) as info:
        OPS[op](root)
    assert info.value.errno == errno.ELOOP
    assert f"{level!r} is a symbolic link" in str(info.value) and TARGET in str(info.value)
    assert snapshot(outside) == before  # nothing read, written, moved or removed there
    assert (root / "mine.md").read_bytes() == mine and not (root / "moved.md").exists()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_a_file_at_any_ancestor_is_refused(root, level, op):
    plant_file(root, level)
    with pytest.raises(PathRefused) as info:
        OPS[op](root)
    assert info.value.errno == errno.ENOTDIR
    assert f"{level!r} is not a directory" in str(info.value)
    assert (root / level).read_bytes() == b"a file where a directory is expected\n"
    assert (root / "mine.md").read_bytes() == b"mine\n"


@pytest.mark.parametrize("level", LEVELS)
def test_remove_empty_dir_never_acts_through_a_link(root, outside, level):
    plant_link(root, level, outside)
    before = snapshot(outside)
    assert worktree.remove_empty_dir(root, "a/b/c/empty") is False
    assert snapshot(outside) == before


def test_remove_empty_dir_leaves_links_files_and_full_directories(root, outside):
    os.symlink(outside / "b" / "c" / "empty", root / "link")
    (root / "full").mkdir()
    (root / "full" / "theirs.md").write_bytes(b"theirs\n")
    (root / "empty").mkdir()
    assert worktree.remove_empty_dir(root, "link") is False and (root / "link").is_symlink()
    assert worktree.remove_empty_dir(root, "full") is False and (root / "full" / "theirs.md").exists()
    assert worktree.remove_empty_dir(root, "mine.md") is False
    assert worktree.remove_empty_dir(root, "missing/deeper") is False
    assert worktree.remove_empty_dir(root, "empty") is True and not (root / "empty").exists()


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "a/../../x", "a//b", "./a", "..", ".git/config",
                                 ".GIT/config", "sub/.git/hooks/x", ".git", ".git./x", "a\0b"])
def test_bad_names_are_refused_everywhere(root, bad):
    for op in (worktree.check, worktree.lstat, worktree.read_file, worktree.delete_file,
               worktree.make_dirs, worktree.remove_empty_dir):
        if op is worktree.remove_empty_dir:
            assert op(root, bad) is False
            continue
        with pytest.raises(PathRefused):
            op(root, bad)
    with pytest.raises(PathRefused):
        worktree.write_file(root, bad, b"x")
    with pytest.raises(PathRefused):
        worktree.move(root, "mine.md", bad)
    assert (root / ".git" / "config").read_bytes() == b"[core]\n"
    assert (root / "mine.md").exists()


def test_the_path_itself_being_a_link_is_never_followed(root, outside):
    os.symlink(outside / "f.md", root / "link.md")
    with pytest.raises(PathRefused) as info:
        worktree.read_file(root, "link.md")
    assert info.value.errno == errno.ELOOP
    assert stat.S_ISLNK(worktree.lstat(root, "link.md").st_mode)
    assert worktree.delete_file(root, "link.md") is False and (root / "link.md").is_symlink()
    assert worktree.move(root, "link.md", "moved.md") is False and not (root / "moved.md").exists()
    with pytest.raises(FileExistsError):
        worktree.write_file(root, "link.md", b"new\n")
    worktree.write_file(root, "link.md", b"new\n", overwrite=True)  # replaces the link itself
    assert not (root / "link.md").is_symlink() and (root / "link.md").read_bytes() == b"new\n"
    assert (outside / "f.md").read_bytes() == SECRET


def test_read_file_refuses_a_fifo_without_blocking(root):
    os.mkfifo(root / "pipe")
    with pytest.raises(PathRefused, match="not a regular file"):
        worktree.read_file(root, "pipe")
    (root / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        worktree.read_file(root, "d")
    with pytest.raises(FileNotFoundError):
        worktree.read_file(root, "missing/x.md")


def test_write_file_is_atomic_and_never_replaces_unless_asked(root):
    st = worktree.write_file(root, "new/deep/n.md", b"one\n", mode=0o644)
    assert (root / "new/deep/n.md").read_bytes() == b"one\n" and stat.S_IMODE(st.st_mode) == 0o644
    with pytest.raises(FileExistsError):
        worktree.write_file(root, "mine.md", b"clobbered\n")
    assert (root / "mine.md").read_bytes() == b"mine\n"
    worktree.write_file(root, "mine.md", b"ours now\n", overwrite=True, fsync=False)
    assert (root / "mine.md").read_bytes() == b"ours now\n"
    (root / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        worktree.write_file(root, "dir", b"x", overwrite=True)
    st = worktree.write_file(root, "run.sh", b"#!/bin/sh\n", mode=0o755)
    assert stat.S_IMODE(st.st_mode) == 0o755
    debris = [p for p in root.rglob("*") if p.name.startswith(worktree.TMP_PREFIX)]
    assert debris == []  # failed writes clean up their temporary files


def test_a_held_directory_swapped_for_a_link_keeps_the_write_inside(root, outside):
    # One walk serves the look and the write: replacing the directory by a link after
    # the walk cannot send the write outside (it lands in the directory held, moved).
    worktree.write_file(root, "a/b/c/old.md", b"old\n")
    with worktree.opened(root, TARGET, create=True) as at:
        assert at.lstat() is None
        os.rename(root / "a/b", root / "moved")
        os.symlink(outside, root / "a/b")
        at.write(b"new\n", fsync=False)
        with pytest.raises(FileExistsError):
            at.write(b"clobbered\n")
    assert (root / "moved/c/f.md").read_bytes() == b"new\n"
    assert (outside / "b/c/f.md").read_bytes() == SECRET
    assert [p.name for p in root.rglob("*") if p.name.startswith(worktree.TMP_PREFIX)] == []


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-unlink"])
def test_move_never_overwrites(root, monkeypatch, renameat2):
    if not renameat2:
        monkeypatch.setattr(worktree, "_RENAMEAT2", None)  # the fallback, on the same real files
    (root / "theirs.md").write_bytes(b"a person's file\n")
    with pytest.raises(FileExistsError):
        worktree.move(root, "mine.md", "theirs.md")
    assert (root / "theirs.md").read_bytes() == b"a person's file\n"
    assert (root / "mine.md").read_bytes() == b"mine\n"
    assert worktree.move(root, "mine.md", "x/y/moved.md") is True
    assert (root / "x/y/moved.md").read_bytes() == b"mine\n" and not (root / "mine.md").exists()
    assert worktree.move(root, "mine.md", "again.md") is False  # gone: nothing to move
    (root / "d").mkdir()
    assert worktree.move(root, "d", "e") is False and (root / "d").is_dir()  # only files move


def test_an_interrupted_link_move_is_finished(root):
    os.link(root / "mine.md", root / "moved.md")  # a crash between link and unlink
    assert worktree.move(root, "mine.md", "moved.md") is True
    assert not (root / "mine.md").exists() and (root / "moved.md").read_bytes() == b"mine\n"


def test_delete_file_removes_only_regular_files(root):
    assert worktree.delete_file(root, "mine.md") is True and not (root / "mine.md").exists()
    assert worktree.delete_file(root, "mine.md") is False
    assert worktree.delete_file(root, "no/such/dir/f.md") is False
    (root / "d").mkdir()
    assert worktree.delete_file(root, "d") is False and (root / "d").is_dir()


def test_a_root_given_through_a_link_is_trusted(tmp_path, root):
    os.symlink(root, tmp_path / "configured")
    worktree.write_file(tmp_path / "configured", "via/link.md", b"ok\n")
    assert (root / "via" / "link.md").read_bytes() == b"ok\n"


def test_a_swap_after_the_check_is_caught_by_the_operation(root, outside):
    """The engine checks a path before marking it dirty, then acts: the act re-walks."""
    worktree.make_dirs(root, "a/b/c")
    worktree.check(root, TARGET)  # fine now
    os.rename(root / "a", root / "a-away")
    os.symlink(outside, root / "a")  # swapped in between the check and the use
    for op in ("write_file", "read_file", "delete_file", "move_source", "move_destination"):
        with pytest.raises(PathRefused):
            OPS[op](root)
    assert (outside / "b" / "c" / "f.md").read_bytes() == SECRET


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, bytes(a), at_fdcwd, bytes(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def test_a_directory_swapped_for_a_link_during_operations_never_leads_outside(root, outside):
    """A thread keeps exchanging a real directory and a link into ``outside`` atomically.

    Whatever the interleaving, an operation either works inside the repository or is
    refused: the walk holds each directory it opened, so a name swapped above it
    cannot redirect it.
    """
    if not hasattr(ctypes.CDLL(None), "renameat2"):
        pytest.skip("renameat2 not available")
    real = root / "a"
    worktree.make_dirs(root, "a/b/c")
    (real / "b" / "c" / "f.md").write_bytes(b"inside\n")
    os.symlink(outside, root / "swap")
    before = snapshot(outside)
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            _exchange(root / "a", root / "swap")
            swaps += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    outcomes: dict[str, int] = {"done": 0, "refused": 0}
    try:
        for _ in range(400):
            for op in ("write_file_overwrite", "read_file", "lstat", "delete_file", "move_destination"):
                try:
                    result = OPS[op](root)
                    if op == "read_file":
                        assert result[0] != SECRET
                    outcomes["done"] += 1
                except PathRefused:
                    outcomes["refused"] += 1
                except (FileNotFoundError, FileExistsError):
                    outcomes["done"] += 1
            if not (root / "mine.md").exists():
                (root / "mine.md").write_bytes(b"mine\n")
    finally:
        stop.set()
        thread.join()
    assert snapshot(outside) == before
    assert swaps > 0 and outcomes["refused"] > 0 and outcomes["done"] > 0
