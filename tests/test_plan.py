"""Tests for gitsync.plan: path safety, folder diffs, move ordering, the deletion guard.

Every plan is also applied, op by op, to a strict model of a filesystem (case sensitive
and case insensitive) that refuses to overwrite, and the property test applies random
plans to a real temporary directory as well.
"""

from __future__ import annotations

import ast
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitsync import plan as plan_module
from gitsync.plan import (
    TMP_PREFIX,
    Delete,
    Mkdir,
    Move,
    Plan,
    Rmdir,
    Tracked,
    UnsafePath,
    Write,
    diff_folders,
    mass_deletion,
    safe_path,
)
from gitsync.ydoc import Entry

H1 = "1" * 64
H2 = "2" * 64


# --------------------------------------------------------------------------- helpers


def entry(path: str, doc_id: str, type: str = "markdown", hash: str | None = None) -> Entry:
    return Entry(path=path.lstrip("/"), id=doc_id, type=type, hash=hash)


def index(*entries: Entry) -> dict[str, Entry]:
    """A folder index as read_folder returns it: keys start with "/"."""
    return {"/" + e.path: e for e in entries}


def tracked(*entries: Entry) -> dict[str, Tracked]:
    return {e.id: Tracked.of(e) for e in entries}


def tmp(doc_id: str, directory: str = "") -> str:
    return f"{directory}/{TMP_PREFIX}{doc_id}" if directory else f"{TMP_PREFIX}{doc_id}"


def parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class StrictFS:
    """In-memory filesystem that fails loudly where a plan would lose or clobber data.

    ``case_insensitive`` makes it behave like macOS/Windows defaults: one spelling per
    name, and a new child goes into the existing directory's spelling.
    """

    def __init__(self, *, case_insensitive: bool) -> None:
        self.ci = case_insensitive
        self.nodes: dict[str, tuple[str, str | None]] = {}  # key -> (spelling, doc or None=dir)

    def key(self, path: str) -> str:
        return path.lower() if self.ci else path

    def resolve(self, path: str) -> str:
        """The spelling a new node at ``path`` gets (existing parents keep theirs)."""
        parent, _, name = path.rpartition("/")
        if not parent:
            return name
        node = self.nodes.get(self.key(parent))
        return f"{node[0] if node else self.resolve(parent)}/{name}"

    def makedirs(self, path: str) -> None:
        for prefix in [*parents(path), path]:
            node = self.nodes.get(self.key(prefix))
            if node is None:
                self.nodes[self.key(prefix)] = (self.resolve(prefix), None)
            else:
                assert node[1] is None, f"file {node[0]!r} where a directory must be"

    def children(self, path: str) -> list[str]:
        k = self.key(path) + "/"
        return [n[0] for key, n in self.nodes.items() if key.startswith(k)]

    def file(self, path: str, doc_id: str) -> None:
        node = self.nodes.get(self.key(path))
        assert node is not None and node[1] is not None, f"no file at {path!r}"
        assert node[0] == path, f"file is spelled {node[0]!r}, op says {path!r}"
        assert node[1] == doc_id, f"{path!r} holds {node[1]}, op says {doc_id}"

    def apply(self, op: object) -> None:
        if isinstance(op, Delete):
            self.file(op.path, op.doc_id)
            del self.nodes[self.key(op.path)]
        elif isinstance(op, Move):
            self.file(op.src, op.doc_id)
            clash = self.nodes.get(self.key(op.dst))
            assert clash is None, f"move of {op.doc_id} onto existing {clash[0]!r}"
            if "/" in op.dst:
                self.makedirs(op.dst.rpartition("/")[0])
            del self.nodes[self.key(op.src)]
            self.nodes[self.key(op.dst)] = (self.resolve(op.dst), op.doc_id)
        elif isinstance(op, Mkdir):
            self.makedirs(op.path)
        elif isinstance(op, Write):
            assert op.entry.path == op.path and op.entry.id == op.doc_id
            if "/" in op.path:
                self.makedirs(op.path.rpartition("/")[0])
            node = self.nodes.get(self.key(op.path))
            assert node is None or node[1] == op.doc_id, f"write of {op.doc_id} clobbers {node}"
            self.nodes[self.key(op.path)] = (self.resolve(op.path), op.doc_id)
        elif isinstance(op, Rmdir):
            node = self.nodes.get(self.key(op.path))
            assert node is not None and node[1] is None, f"rmdir of missing {op.path!r}"
            assert node[0] == op.path, f"dir is spelled {node[0]!r}, rmdir says {op.path!r}"
            assert not self.children(op.path), f"rmdir of non-empty {op.path!r}"
            del self.nodes[self.key(op.path)]
        else:  # pragma: no cover
            raise AssertionError(f"unknown op {op!r}")

    def files(self) -> dict[str, str]:
        return {spelled: doc for spelled, doc in self.nodes.values() if doc is not None}

    def dirs(self) -> set[str]:
        return {spelled for spelled, doc in self.nodes.values() if doc is None}


def apply_to_mapping(ops: Iterable[object], tree: Mapping[str, str], *,
                     case_insensitive: bool = False) -> dict[str, str]:
    """Apply ``ops`` to ``{path: doc_id}`` and return the resulting files, strictly."""
    fs = StrictFS(case_insensitive=case_insensitive)
    for path, doc_id in tree.items():
        fs.apply(Write(doc_id, path, entry(path, doc_id), "new"))
    for op in ops:
        fs.apply(op)
    return fs.files()


def fs_from(previous: Mapping[str, Tracked], *, case_insensitive: bool) -> StrictFS:
    fs = StrictFS(case_insensitive=case_insensitive)
    for doc_id, rec in sorted(previous.items(), key=lambda i: i[1].path):
        if rec.type == "folder":
            fs.makedirs(rec.path)
        else:
            fs.apply(Write(doc_id, rec.path, entry(rec.path, doc_id), "new"))
    return fs


def expected_layout(result: Plan) -> tuple[dict[str, str], set[str]]:
    files = {p: e.id for p, e in result.accepted.items() if e.kind != "folder"}
    dirs = {p for p, e in result.accepted.items() if e.kind == "folder"}
    for p in result.accepted:
        dirs.update(parents(p))
    return files, dirs


def check_applies(previous: Mapping[str, Tracked], result: Plan) -> None:
    """The plan turns the tracked tree into exactly the accepted layout, on both kinds of fs."""
    files, dirs = expected_layout(result)
    for ci in (False, True):
        fs = fs_from(previous, case_insensitive=ci)
        for op in result.ops:
            fs.apply(op)
        assert fs.files() == files, f"case_insensitive={ci}"
        assert fs.dirs() == dirs, f"case_insensitive={ci}"


def apply_on_disk(root: Path, previous: Mapping[str, Tracked], ops: Iterable[object]) -> None:
    for doc_id, rec in previous.items():
        full = root / rec.path
        if rec.type == "folder":
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(doc_id)
    for op in ops:
        if isinstance(op, Delete):
            assert (root / op.path).read_text() == op.doc_id
            os.unlink(root / op.path)
        elif isinstance(op, Move):
            src, dst = root / op.src, root / op.dst
            assert src.read_text() == op.doc_id
            assert not os.path.lexists(dst), f"move onto existing {op.dst!r}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dst)
        elif isinstance(op, Mkdir):
            (root / op.path).mkdir(parents=True, exist_ok=True)
        elif isinstance(op, Write):
            full = root / op.path
            assert not full.exists() or full.read_text() == op.doc_id, f"write clobbers {op.path!r}"
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(op.doc_id)
        elif isinstance(op, Rmdir):
            os.rmdir(root / op.path)  # must exist and be empty


def disk_layout(root: Path) -> tuple[dict[str, str], set[str]]:
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        for d in dirnames:
            dirs.add(d if rel == "." else f"{rel}/{d}")
        for f in filenames:
            path = f if rel == "." else f"{rel}/{f}"
            files[path] = (root / path).read_text()
    return files, dirs


# --------------------------------------------------------------------------- safe_path


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("/notes/idea.md", "notes/idea.md"),
        ("notes/idea.md", "notes/idea.md"),
        ("notes//idea.md", "notes/idea.md"),
        ("/./notes/./idea.md", "notes/idea.md"),
        ("notes/", "notes"),
        ("/.gitignore", ".gitignore"),
        ("/.github/workflows/x.yml", ".github/workflows/x.yml"),
        ("/git/x.md", "git/x.md"),
        ("/a..b/c...md", "a..b/c...md"),
        ("/Été/naïve ☃.md", "Été/naïve ☃.md"),
        ("/notes/ab:c.md", "notes/ab:c.md"),
    ],
)
def test_safe_path_normalizes(raw, clean):
    assert safe_path(raw) == clean


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty path"),
        ("/", "empty path"),
        ("./", "empty path"),
        ("/././/", "empty path"),
        ("../x.md", "'..' segment"),
        ("/notes/../../etc/passwd", "'..' segment"),
        ("notes/..", "'..' segment"),
        ("//etc/passwd", "absolute path"),
        ("a\\b.md", "backslash"),
        ("..\\..\\x.md", "backslash"),
        ("a\x00b.md", "NUL"),
        ("a\nb.md", "control character"),
        ("a\tb.md", "control character"),
        ("a\x7fb.md", "control character"),
        ("a\x85b.md", "control character"),
        ("a\ud800b.md", "lone surrogate"),
        (".git", "'.git' segment"),
        ("/.git/config", "'.git' segment"),
        ("/notes/.GIT/hooks/pre-commit", "'.git' segment"),
        ("/.git./config", "'.git' segment"),
        ("/.git /config", "'.git' segment"),
        ("/.git::$INDEX_ALLOCATION/config", "'.git' segment"),
        ("/GIT~1/config", "'.git' segment"),
        ("/.g\u200cit/config", "'.git' segment"),
        ("C:/Windows/x.md", "drive letter"),
        ("/c:x.md", "drive letter"),
        ("/notes/C:", "drive letter"),
        ("/notes/" + "x" * 256, "longer than 255 bytes"),
        ("/" + "é" * 128, "longer than 255 bytes"),
    ],
)
def test_safe_path_rejects(raw, reason):
    with pytest.raises(UnsafePath, match=reason.replace("\\", "\\\\").replace("$", "\\$")):
        safe_path(raw)


def test_safe_path_rejects_non_strings():
    with pytest.raises(UnsafePath, match="not a string"):
        safe_path(b"notes/a.md")  # type: ignore[arg-type]


def test_unsafe_path_is_a_value_error_and_never_echoes_the_path():
    with pytest.raises(ValueError) as info:
        safe_path("/secret-name/../../x")
    assert "secret-name" not in str(info.value)


# --------------------------------------------------------------------------- diff cases

A, B, C = entry("a.md", "d1"), entry("b.md", "d2"), entry("c.md", "d3")

CASES = [
    pytest.param(
        {},
        index(A, entry("notes", "f1", "folder"), entry("notes/b.md", "d2")),
        [Mkdir("notes"),
         Write("d1", "a.md", A, "new"),
         Write("d2", "notes/b.md", entry("notes/b.md", "d2"), "new")],
        id="initial-sync",
    ),
    pytest.param(tracked(A, B), index(A, B), [], id="unchanged"),
    pytest.param(
        tracked(A),
        index(entry("archive/a.md", "d1")),
        [Move("d1", "a.md", "archive/a.md")],
        id="rename-text-no-write",
    ),
    pytest.param(
        tracked(entry("a.png", "d1", "image", H1)),
        index(entry("pics/b.png", "d1", "image", H2)),
        [Move("d1", "a.png", "pics/b.png"),
         Write("d1", "pics/b.png", entry("pics/b.png", "d1", "image", H2), "hash")],
        id="rename-and-edit-attachment",
    ),
    pytest.param(
        tracked(entry("a.png", "d1", "image", H1)),
        index(entry("a.png", "d1", "image", None)),
        [],
        id="attachment-lost-hash-no-write",
    ),
    pytest.param(
        tracked(entry("a.md", "d1")),
        index(entry("a.canvas", "d1", "canvas")),
        [Move("d1", "a.md", "a.canvas"),
         Write("d1", "a.canvas", entry("a.canvas", "d1", "canvas"), "type")],
        id="rename-and-type-change",
    ),
    pytest.param(
        tracked(A, B),
        index(entry("b.md", "d1"), entry("a.md", "d2")),
        [Move("d1", "a.md", tmp("d1")),
         Move("d2", "b.md", "a.md"),
         Move("d1", tmp("d1"), "b.md")],
        id="swap",
    ),
    pytest.param(
        tracked(A, B, C),
        index(entry("b.md", "d1"), entry("c.md", "d2"), entry("a.md", "d3")),
        [Move("d1", "a.md", tmp("d1")),
         Move("d3", "c.md", "a.md"),
         Move("d2", "b.md", "c.md"),
         Move("d1", tmp("d1"), "b.md")],
        id="three-cycle",
    ),
    pytest.param(
        tracked(A, B),
        index(entry("b.md", "d1"), entry("c.md", "d2")),
        [Move("d2", "b.md", "c.md"), Move("d1", "a.md", "b.md")],
        id="chain-without-temp",
    ),
    pytest.param(
        tracked(entry("Note.md", "d1")),
        index(entry("note.md", "d1")),
        [Move("d1", "Note.md", tmp("d1")), Move("d1", tmp("d1"), "note.md")],
        id="case-only-rename",
    ),
    pytest.param(
        tracked(entry("Notes", "f1", "folder"), entry("Notes/Idea.md", "d1")),
        index(entry("Notes", "f1", "folder"), entry("Notes/idea.md", "d1")),
        [Move("d1", "Notes/Idea.md", tmp("d1", "Notes")),
         Move("d1", tmp("d1", "Notes"), "Notes/idea.md")],
        id="case-only-rename-temp-in-same-dir",
    ),
    pytest.param(
        tracked(entry("Notes", "f1", "folder"), entry("Notes/x.md", "d1")),
        index(entry("notes", "f1", "folder"), entry("notes/x.md", "d1")),
        [Move("d1", "Notes/x.md", tmp("d1")),
         Rmdir("Notes"),
         Move("d1", tmp("d1"), "notes/x.md"),
         Mkdir("notes")],
        id="folder-case-rename",
    ),
    pytest.param(
        tracked(entry("old", "f1", "folder"), entry("old/a.md", "d1"),
                entry("old/sub/b.md", "d2")),
        index(entry("new", "f1", "folder"), entry("new/a.md", "d1"),
              entry("new/sub/b.md", "d2")),
        [Move("d1", "old/a.md", "new/a.md"),
         Move("d2", "old/sub/b.md", "new/sub/b.md"),
         Mkdir("new"),
         Rmdir("old/sub"),
         Rmdir("old")],
        id="folder-rename-with-contents",
    ),
    pytest.param(
        tracked(A),
        index(entry("sub", "f1", "folder"), entry("sub/a.md", "d1")),
        [Move("d1", "a.md", "sub/a.md"), Mkdir("sub")],
        id="move-into-new-folder",
    ),
    pytest.param(
        tracked(A, entry("old", "f1", "folder"), entry("old/b.md", "d2"),
                entry("old/deep/c.md", "d3")),
        index(A),
        [Delete("d2", "old/b.md"), Delete("d3", "old/deep/c.md"),
         Rmdir("old/deep"), Rmdir("old")],
        id="folder-deleted-with-files",
    ),
    pytest.param(
        tracked(entry("x", "f1", "folder"), entry("x/a.md", "d1")),
        index(entry("x", "d2")),
        [Delete("d1", "x/a.md"), Rmdir("x"), Write("d2", "x", entry("x", "d2"), "new")],
        id="folder-replaced-by-file",
    ),
    pytest.param(
        tracked(entry("x", "d2")),
        index(entry("x", "f1", "folder"), entry("x/a.md", "d1")),
        [Delete("d2", "x"), Mkdir("x"), Write("d1", "x/a.md", entry("x/a.md", "d1"), "new")],
        id="file-replaced-by-folder",
    ),
    pytest.param(
        tracked(entry("x/a.md", "d1"), entry("y", "d2")),
        index(entry("x", "d2"), entry("y/a.md", "d1")),
        [Move("d1", "x/a.md", tmp("d1")),
         Rmdir("x"),
         Move("d2", "y", "x"),
         Move("d1", tmp("d1"), "y/a.md")],
        id="file-and-folder-trade-places",
    ),
    pytest.param(
        tracked(entry("x", "f1", "folder")),
        index(entry("x", "d1", "folder")),
        [Mkdir("x")],
        id="same-folder-new-doc",
    ),
    pytest.param(
        tracked(entry("x", "f1", "folder")),
        index(entry("x", "f1", "markdown")),
        [Rmdir("x"), Write("f1", "x", entry("x", "f1"), "type")],
        id="folder-doc-becomes-file",
    ),
]


@pytest.mark.parametrize(("previous", "current", "ops"), CASES)
def test_diff_folders_cases(previous, current, ops):
    result = diff_folders(previous, current)
    assert result.rejected == []
    assert result.ops == ops
    check_applies(previous, result)


def test_plan_helpers_fold_temporary_hops():
    result = diff_folders(tracked(A, B), index(entry("b.md", "d1"), entry("a.md", "d2")))
    assert sorted(result.moved) == [("d1", "a.md", "b.md"), ("d2", "b.md", "a.md")]
    assert result.touched == {"a.md", "b.md"}
    assert result.deleted == [] and result.written == []


def test_accepted_entries_carry_sanitized_paths():
    result = diff_folders({}, {"/notes//a.md": entry("notes//a.md", "d1")})
    assert result.accepted == {"notes/a.md": entry("notes/a.md", "d1")}
    assert result.ops == [Write("d1", "notes/a.md", entry("notes/a.md", "d1"), "new")]


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/../evil.md", "'..' segment"),
        ("/.git/hooks/post-checkout", "'.git' segment"),
        ("//etc/cron.d/x", "absolute path"),
        ("/a\\..\\..\\x.md", "backslash"),
        ("/C:/x.md", "drive letter"),
        ("/a\x00.md", "NUL"),
        (f"/{TMP_PREFIX}d9", "reserved prefix"),
        (f"/notes/{TMP_PREFIX.upper()}x/a.md", "reserved prefix"),
    ],
)
def test_unsafe_entries_are_rejected_and_the_rest_proceeds(raw, reason):
    current = index(A)
    current[raw] = entry("x.md", "d9")
    result = diff_folders({}, current)
    assert len(result.rejected) == 1
    assert result.rejected[0][0] == raw and reason in result.rejected[0][1]
    assert result.ops == [Write("d1", "a.md", A, "new")]


def test_duplicate_doc_id_keeps_lexicographically_first_path():
    current = {"/b.md": entry("b.md", "d1"), "/a.md": entry("a.md", "d1")}
    result = diff_folders({}, current)
    assert result.rejected == [("/b.md", "document d1 is already at 'a.md'")]
    assert list(result.accepted) == ["a.md"]


def test_duplicate_path_after_normalization():
    current = {"/a.md": entry("a.md", "d1"), "a.md": entry("a.md", "d2")}
    result = diff_folders({}, current)
    assert result.rejected == [("a.md", "same path as '/a.md' once normalized")]
    assert result.accepted == {"a.md": entry("a.md", "d1")}


@pytest.mark.parametrize(
    ("paths", "kept", "rejected"),
    [
        (["a", "a/b.md"], ["a"], [("/a/b.md", "inside 'a', which is a file")]),
        (["a", "a/b/c.md"], ["a"], [("/a/b/c.md", "inside 'a', which is a file")]),
        (["a/b.md", "A"], ["A"], [("/a/b.md", "inside 'A', which is a file")]),
        (["Note.md", "note.md"], ["Note.md"],
         [("/note.md", "differs only in letter case from 'Note.md'")]),
        (["Dir/a.md", "dir/b.md"], ["Dir/a.md"],
         [("/dir/b.md", "folder 'dir' differs only in letter case from 'Dir'")]),
    ],
)
def test_collisions_reject_the_deeper_or_later_entry(paths, kept, rejected):
    current = index(*(entry(p, f"d{i}") for i, p in enumerate(paths)))
    result = diff_folders({}, current)
    assert result.rejected == rejected
    assert list(result.accepted) == kept
    check_applies({}, result)


def test_folder_entry_is_not_a_file_collision():
    current = index(entry("a", "f1", "folder"), entry("a/b.md", "d1"))
    result = diff_folders({}, current)
    assert result.rejected == [] and list(result.accepted) == ["a", "a/b.md"]


def test_tracked_doc_whose_entry_is_rejected_is_deleted():
    previous = tracked(A)
    result = diff_folders(previous, {"/../a.md": entry("a.md", "d1")})
    assert result.ops == [Delete("d1", "a.md")]
    assert result.rejected == [("/../a.md", "'..' segment in path")]


def test_unusable_tracked_paths_are_never_touched():
    previous = {
        "d1": Tracked("../outside.md", "markdown"),
        "d2": Tracked("x", "markdown"),
        "d3": Tracked("x/inside-a-file.md", "markdown"),  # impossible tree: ignored
    }
    result = diff_folders(previous, index(entry("a.md", "d1"), entry("y.md", "d3")))
    assert result.ops == [
        Delete("d2", "x"),
        Write("d1", "a.md", entry("a.md", "d1"), "new"),
        Write("d3", "y.md", entry("y.md", "d3"), "new"),
    ]


def test_leftover_temporary_file_is_moved_home():
    previous = {"d1": Tracked(tmp("d1"), "markdown")}
    result = diff_folders(previous, index(A))
    assert result.ops == [Move("d1", tmp("d1"), "a.md")]


def test_temporary_name_avoids_a_leftover_one():
    previous = {"d1": Tracked("A.md", "markdown"), "d9": Tracked(tmp("d1"), "markdown")}
    result = diff_folders(previous, index(entry("a.md", "d1"), entry("b.md", "d9")))
    assert result.ops == [
        Move("d1", "A.md", tmp("d1") + "-2"),
        Move("d1", tmp("d1") + "-2", "a.md"),
        Move("d9", tmp("d1"), "b.md"),
    ]
    check_applies(previous, result)


# --------------------------------------------------------------------------- repository policy

CONFIG_AT_ROOT = [
    ".github/workflows/ci.yml", ".github/actions/x/action.yml", ".github/dependabot.yml",
    ".gitlab-ci.yml", ".gitlab/ci/jobs.yml", ".gitmodules", ".lfsconfig", ".gitea/workflows/a.yml",
    ".forgejo/workflows/a.yml", ".circleci/config.yml", ".travis.yml", "bitbucket-pipelines.yml",
    "azure-pipelines.yml", "Jenkinsfile", ".pre-commit-config.yaml", ".devcontainer/devcontainer.json",
]
CONFIG_VARIANTS = [
    ".GitHub/workflows/ci.yml", ".GITLAB-CI.YML", ".gitmodules.", ".gitmodules ", ".gitmodules::$DATA",
    ".g\u200citmodules", ".git\ufeffhub/workflows/x.yml", "GITMOD~1", "gi7eba~2", "jenkinsfile",
]


@pytest.mark.parametrize("path", CONFIG_AT_ROOT + CONFIG_VARIANTS)
def test_repository_config_at_the_root_is_refused_by_default(path):
    result = diff_folders({}, index(A, entry(path, "d9")))
    assert len(result.rejected) == 1 and result.rejected[0][0] == "/" + path
    reason = result.rejected[0][1]
    assert "is repository configuration" in reason and "allow_repository_config = true" in reason
    assert result.ops == [Write("d1", "a.md", A, "new")]


@pytest.mark.parametrize("path", CONFIG_AT_ROOT + CONFIG_VARIANTS)
def test_repository_config_is_synced_when_allowed(path):
    result = diff_folders({}, index(A, entry(path, "d9")), allow_repository_config=True)
    assert result.rejected == [] and len(result.written) == 2


@pytest.mark.parametrize("path", CONFIG_AT_ROOT)
def test_repository_config_names_are_harmless_below_the_root(path):
    # a vault folder under a connector prefix, or a vault subfolder: git and CI never read it
    assert diff_folders({}, index(entry(path, "d9")), prefix="vault").rejected == []
    assert diff_folders({}, index(entry("notes/" + path, "d9"))).rejected == []


@pytest.mark.parametrize("path", [".gitattributes", "notes/.gitattributes", "a/b/.GitAttributes.",
                                  "a/gitatt~1", "a/GI7D29~1"])
@pytest.mark.parametrize("prefix", ["", "vault"])
def test_gitattributes_is_refused_in_every_folder(path, prefix):
    result = diff_folders({}, index(entry(path, "d9")), prefix=prefix)
    assert len(result.rejected) == 1 and "'.gitattributes' is repository configuration" in result.rejected[0][1]


@pytest.mark.parametrize("path", [".gitignore", "notes/.gitignore", ".mailmap", ".githubx/a.md", "github/a.md",
                                  "gitlab-ci.yml", "notes/Jenkinsfile", ".obsidian-like/x.md"])
def test_files_that_run_nothing_are_not_repository_config(path):
    assert diff_folders({}, index(entry(path, "d9"))).rejected == []


def test_a_prefix_that_is_itself_repository_config_refuses_everything():
    result = diff_folders({}, index(A), prefix=".github/workflows")
    assert [r for r, _ in result.rejected] == ["/a.md"]


def test_repository_config_with_a_folder_entry_and_a_tracked_file():
    current = index(A, entry(".github", "f1", "folder"), entry(".github/workflows", "f2", "folder"),
                    entry(".github/workflows/ci.yml", "d2"))
    result = diff_folders({}, current)
    assert sorted(r for r, _ in result.rejected) == ["/.github", "/.github/workflows", "/.github/workflows/ci.yml"]
    assert result.ops == [Write("d1", "a.md", A, "new")]
    # written while it was allowed, then refused: the file we wrote is deleted, the folders go
    allowed = diff_folders({}, current, allow_repository_config=True)
    previous = {e.id: Tracked.of(e) for e in allowed.accepted.values()}
    result = diff_folders(previous, current)
    assert result.ops == [Delete("d2", ".github/workflows/ci.yml"), Rmdir(".github/workflows"), Rmdir(".github")]
    check_applies(previous, result)


# --------------------------------------------------------------------------- path cost


def deep(total: int, segments: int, leaf: str = "leaf.md", name: str = "d") -> str:
    """A path of exactly ``total`` UTF-8 bytes in ``segments`` segments, ending in ``leaf``."""
    width, extra = divmod(total - len(leaf.encode()) - (segments - 1), segments - 1)
    names = [name * (width + (1 if i < extra else 0)) for i in range(segments - 1)]
    path = "/".join([*names, leaf])
    assert len(path.encode()) == total and path.count("/") == segments - 1
    return path


def with_folders(path: str, doc_id: str, type: str = "markdown") -> list[Entry]:
    """The file's entry plus a folder entry for each ancestor, as the Relay keeps them."""
    parts = path.split("/")
    folders = [entry("/".join(parts[:i]), f"{doc_id}-f{i}", "folder") for i in range(1, len(parts))]
    return [*folders, entry(path, doc_id, type)]


def test_deep_path_within_limits_plans_with_a_large_ordinary_folder():
    long_path = deep(4000, 250)
    ordinary = [entry(f"area {i % 7}/topic {i % 31}/note {i}.md", f"n{i}") for i in range(300)]
    tree = with_folders(long_path, "deep")
    result = diff_folders({}, index(*tree, *ordinary))
    assert result.rejected == []
    assert set(result.accepted) == {e.path for e in [*tree, *ordinary]}
    assert [op.path for op in result.ops if isinstance(op, Mkdir)] == [e.path for e in tree[:-1]]
    assert Write("deep", long_path, entry(long_path, "deep"), "new") in result.ops
    assert len(result.written) == 301

    # the same without folder entries (cheap enough for the strict filesystem models)
    result = diff_folders({}, index(tree[-1], *ordinary))
    check_applies({}, result)
    previous = {e.id: Tracked.of(e) for e in result.accepted.values()}
    renamed = long_path.rpartition("/")[0] + "/renamed.md"
    result = diff_folders(previous, index(entry(renamed, "deep"), *ordinary))
    assert result.ops == [Move("deep", long_path, renamed)]
    moved = "Top/" + deep(3900, 249)
    result = diff_folders(previous, index(entry(moved, "deep"), *ordinary))
    assert result.rejected == [] and result.moved == [("deep", long_path, moved)]
    assert len([op for op in result.ops if isinstance(op, Rmdir)]) == 249
    check_applies(previous, result)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("/" + deep(32 * 1024, 16_000, name="a"), "path longer than 4096 bytes"),
        ("/" + deep(4097, 20), "path longer than 4096 bytes"),
        ("/" + "/".join(["é" * 100] * 21), "path longer than 4096 bytes"),  # 2,120 chars, 4,220 bytes
        ("/" + "a/" * 255 + "x.md", "more than 255 segments"),
        ("/" + "a" * 300 + "/x.md", "name longer than 255 bytes"),
    ],
    ids=["32KB", "4097-bytes", "4220-bytes-in-2120-chars", "256-segments", "300-byte-name"],
)
def test_paths_over_the_limits_are_rejected_with_a_reason(raw, reason):
    current = index(A)
    current[raw] = entry("x.md", "d9")
    result = diff_folders({}, current)
    assert len(result.rejected) == 1 and result.rejected[0][0] == raw
    assert reason in result.rejected[0][1]
    assert raw.strip("/")[:40] not in result.rejected[0][1]  # the reason never echoes the path
    assert result.ops == [Write("d1", "a.md", A, "new")]


def test_paths_at_the_limits_are_accepted():
    assert safe_path("/" + deep(4096, 255)) == deep(4096, 255)
    assert safe_path("/" + "x" * 255) == "x" * 255
    assert safe_path("/./" + "a/" * 254 + "b") == "a/" * 254 + "b"


class FoldMeter:
    """Counts the characters the planner folds into comparison keys.

    Every lookup in the planner's case-insensitive models keys on ``plan._fold``; a
    planner that builds a key per ancestor folds O(depth x length) characters per path.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chars = 0
        real = plan_module._fold

        def counted(path: str) -> str:
            self.chars += len(path)
            return real(path)

        monkeypatch.setattr(plan_module, "_fold", counted)


def _scenarios(depth: int) -> dict[str, tuple[dict[str, Tracked], dict[str, Entry]]]:
    path = deep(16 * depth, depth)
    tree = with_folders(path, "deep")
    before = {e.id: Tracked.of(e) for e in tree}
    top = path.split("/", 1)[0]
    recased = [replace(e, path=top.upper() + e.path[len(top):]) for e in tree]
    return {
        "initial": ({}, index(*tree)),
        "file-only-initial": ({}, index(tree[-1])),
        "unchanged": (before, index(*tree)),
        "leaf-renamed": (before, index(*with_folders(path.rpartition("/")[0] + "/other.md", "deep"))),
        "top-folder-recased": (before, index(*recased)),
        "all-deleted": (before, index(A)),
    }


@pytest.mark.parametrize("scenario", list(_scenarios(4)))
def test_planning_work_is_linear_in_the_total_path_length(monkeypatch, scenario):
    """Folded characters per input character stay bounded as paths get deeper.

    Counts work, not seconds: the old planner folded every ancestor prefix of every
    path (a 250-segment path cost ~125 folds of its full length).
    """
    meter = FoldMeter(monkeypatch)
    ratios = []
    for depth in (16, 64, 250):
        previous, current = _scenarios(depth)[scenario]
        size = sum(len(p) for p in current) + sum(len(r.path) for r in previous.values())
        meter.chars = 0
        result = diff_folders(previous, current)
        assert result.rejected == []
        ratios.append(meter.chars / size)
        if depth <= 64:  # the strict models are slow on deep trees; the plans do not differ
            check_applies(previous, result)
    assert max(ratios) <= 8, ratios


# --------------------------------------------------------------------------- mass deletion


def _files(n: int, start: int = 0) -> list[Entry]:
    return [entry(f"f{i}.md", f"d{i}") for i in range(start, start + n)]


@pytest.mark.parametrize(
    ("total", "kept", "expected"),
    [
        (100, 100, None),
        (100, 70, "would delete 30 of 100 files"),
        (100, 75, None),  # 25 deletions: not more than the minimum
        (100, 74, "would delete 26 of 100 files"),
        (1000, 974, None),  # 26 deletions but only 2.6%
        (50, 30, None),  # 40% but only 20 files
        (3, 0, "folder index lists no files while 3 are tracked"),
        (1, 0, "folder index lists no files while 1 are tracked"),
    ],
)
def test_mass_deletion(total, kept, expected):
    files = _files(total)
    previous = tracked(*files)
    result = diff_folders(previous, index(*files[:kept]))
    reason = mass_deletion(previous, result)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected)


def test_mass_deletion_thresholds_are_options():
    files = _files(10)
    previous = tracked(*files)
    result = diff_folders(previous, index(*files[:7]))
    assert mass_deletion(previous, result) is None
    assert mass_deletion(previous, result, ratio=0.2, minimum=2) is not None


def test_mass_deletion_empty_index_with_only_folders_or_nothing_tracked():
    folder = entry("x", "f1", "folder")
    assert mass_deletion(tracked(folder), diff_folders(tracked(folder), {})) is None
    assert mass_deletion({}, diff_folders({}, {})) is None


def test_mass_deletion_index_with_only_rejected_entries_is_held():
    previous = tracked(A)
    result = diff_folders(previous, {"/../a.md": A})
    assert mass_deletion(previous, result) is not None


def test_mass_deletion_ignores_moves():
    files = _files(100)
    previous = tracked(*files)
    moved = [entry(f"archive/{e.path}", e.id) for e in files]
    assert mass_deletion(previous, diff_folders(previous, index(*moved))) is None


# --------------------------------------------------------------------------- purity


def test_plan_module_is_pure():
    tree = ast.parse(Path(plan_module.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "re", "unicodedata", "collections", "dataclasses", "gitsync"}


# --------------------------------------------------------------------------- property

NAMES = ["a", "A", "b", "x.md", "X.md", "y.md"]
DOCS = [f"d{i}" for i in range(7)]
KINDS = [("markdown", None), ("canvas", None), ("folder", None), ("image", H1), ("image", H2)]

paths_st = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
value_st = st.tuples(st.sampled_from(DOCS), st.sampled_from(KINDS))
raw_snapshot_st = st.dictionaries(paths_st, value_st, max_size=7)


def to_index(raw: Mapping[str, tuple[str, tuple[str, str | None]]]) -> dict[str, Entry]:
    return {"/" + p: entry(p, doc_id, type_, hash_) for p, (doc_id, (type_, hash_)) in raw.items()}


@st.composite
def old_and_new(draw):
    """Two raw folder indexes; often the same documents at shuffled, re-cased paths."""
    if draw(st.booleans()):
        old = draw(raw_snapshot_st)
    else:
        paths = draw(st.lists(paths_st, unique=True, max_size=7))
        old = {p: (DOCS[i], draw(st.sampled_from(KINDS))) for i, p in enumerate(paths)}
    if old and draw(st.integers(0, 3)):
        # same documents, paths shuffled: swaps, cycles, chains, file <-> folder trades
        paths = list(old)
        shuffled = draw(st.permutations(paths))
        new = {}
        for i, p in enumerate(paths):
            target = shuffled[i]
            if draw(st.integers(0, 3)) == 0:  # change the letter case of one segment
                parts = target.split("/")
                k = draw(st.integers(0, len(parts) - 1))
                parts[k] = parts[k].swapcase()
                target = "/".join(parts)
            doc_id, kind = old[p]
            if kind[0] == "image" and draw(st.booleans()):
                kind = ("image", H2 if kind[1] == H1 else H1)  # rename + edit
            new[target] = (doc_id, kind)
        new.update(draw(st.dictionaries(paths_st, value_st, max_size=2)))
        for p in draw(st.lists(st.sampled_from(sorted(new)), max_size=2)):
            new.pop(p, None)
    else:
        new = draw(raw_snapshot_st)
    return old, new


def fold(p: str) -> str:
    return p.lower()


def assert_consistent(accepted: Mapping[str, Entry]) -> None:
    """Independent check: the accepted layout can exist on a case-insensitive fs."""
    ids = [e.id for e in accepted.values()]
    assert len(ids) == len(set(ids))
    spelled: dict[str, str] = {}
    for p in accepted:
        for prefix in [*parents(p), p]:
            assert spelled.setdefault(fold(prefix), prefix) == prefix, (prefix, spelled)
    for p, e in accepted.items():
        if e.kind != "folder":
            assert not any(fold(q).startswith(fold(p) + "/") for q in accepted), p


def is_clean(raw: Mapping[str, tuple[str, tuple[str, str | None]]]) -> bool:
    """Would every entry of this generated index be accepted (no duplicate, no clash)?"""
    ids = [v[0] for v in raw.values()]
    if len(ids) != len(set(ids)):
        return False
    spelled: dict[str, str] = {}
    files = {p for p, v in raw.items() if v[1][0] != "folder"}
    for p in raw:
        for prefix in [*parents(p), p]:
            if spelled.setdefault(fold(prefix), prefix) != prefix:
                return False
        if any(fold(q) in {fold(x) for x in parents(p)} for q in files):
            return False
    return True


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(old_and_new())
def test_property_plan_reaches_exactly_the_new_snapshot(snapshots):
    old_raw, new_raw = snapshots
    first = diff_folders({}, to_index(old_raw))
    assert_consistent(first.accepted)
    check_applies({}, first)
    previous = {e.id: Tracked.of(e) for e in first.accepted.values()}

    result = diff_folders(previous, to_index(new_raw))
    assert_consistent(result.accepted)
    assert {"/" + p for p in result.accepted} | {r for r, _ in result.rejected} == {
        "/" + p for p in new_raw
    }
    if is_clean(new_raw):
        assert result.rejected == []

    # (a) strict in-memory filesystems, case sensitive and insensitive
    check_applies(previous, result)

    # (b) a real directory, files holding their doc id
    with tempfile.TemporaryDirectory() as tmpdir:
        root = Path(tmpdir)
        apply_on_disk(root, previous, result.ops)
        assert disk_layout(root) == expected_layout(result)

    # writes exactly where content must be fetched; deletes exactly for files gone
    now = {e.id: e for e in result.accepted.values()}
    expected_writes = {}
    for doc_id, e in now.items():
        rec = previous.get(doc_id)
        if e.kind == "folder":
            continue
        if rec is None:
            expected_writes[doc_id] = "new"
        elif rec.type != e.type:
            expected_writes[doc_id] = "type"
        elif e.kind == "attachment" and e.hash != rec.hash:
            expected_writes[doc_id] = "hash"
    assert {w.doc_id: w.reason for w in result.written} == expected_writes
    gone = {d for d, rec in previous.items()
            if rec.type != "folder" and (d not in now or now[d].kind == "folder")}
    assert {op.doc_id for op in result.deleted} == gone

    # phase order: Delete < Move < Mkdir < Write, Rmdirs only to clear the way or at the end
    rank = {Delete: 0, Move: 1, Mkdir: 2, Write: 3}
    ranks = [rank[type(op)] for op in result.ops if not isinstance(op, Rmdir)]
    assert ranks == sorted(ranks)
    tail = []
    for op in reversed(result.ops):
        if not isinstance(op, Rmdir):
            break
        tail.append(op.path)
    tail.reverse()
    assert tail == sorted(tail, key=lambda p: (-p.count("/"), p))


@settings(max_examples=100, deadline=None, database=None)
@given(raw_snapshot_st)
def test_property_apply_to_mapping_matches_initial_sync(raw):
    result = diff_folders({}, to_index(raw))
    files = {p: e.id for p, e in result.accepted.items() if e.kind != "folder"}
    assert apply_to_mapping(result.ops, {}) == files
    assert apply_to_mapping(result.ops, {}, case_insensitive=True) == files
    again = diff_folders({e.id: Tracked.of(e) for e in result.accepted.values()}, to_index(raw))
    assert again.ops == [] and again.rejected == result.rejected
