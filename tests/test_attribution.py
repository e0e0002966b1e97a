"""Commit authors from the documents' ``users`` map: the stand-in over HTTP, the real
engine, real Dulwich repositories (and a real sshd for the moved remote).

Documents are written by pycrdt clients that register themselves under a relay user
the way yjs's PermanentUserData does (``users[<user>] = {ids, ds}``) and send their
updates over the stand-in's ``POST /d/{id}/update``, as Relay clients do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests
from dulwich.diff_tree import tree_changes
from dulwich.repo import Repo
from pycrdt import Array, Doc, Map, Text

from gitsync import gitrepo
from gitsync.config import Settings, load_connectors
from gitsync.dev.relay import DevRelay, FolderHandle, tiny_png
from gitsync.engine import Engine
from gitsync.relay import RelayClient
from gitsync.state import StateRegistry

SERVICE = "Relay Git Sync <relay-git-sync@localhost>"
ADA = "Ada Lovelace <ada@example.org>"
BOB = "Bøb Åkesson <bøb@exämple.org>"  # unicode in the name and in the email


class Writer:
    """One Yjs client of one relay user, editing documents through the stand-in's HTTP API."""

    def __init__(self, relay: DevRelay, user: str | None, client_id: int):
        self.relay, self.user, self.client_id = relay, user, client_id
        self.docs: dict[str, Doc] = {}

    def _post(self, cid: str, update: bytes) -> None:
        answer = requests.post(f"{self.relay.url}/d/{cid}/update", data=update, timeout=10,
                               headers={"Authorization": f"Bearer {self.relay.api_key}"})
        assert answer.status_code == 200, answer.text

    def write(self, cid: str, change, *, register_again: bool = False) -> None:
        """Apply ``change(doc)`` as this client (first catching up with the server)."""
        doc = self.docs.setdefault(cid, Doc(client_id=self.client_id))
        current = requests.get(f"{self.relay.url}/d/{cid}/as-update", timeout=10,
                               headers={"Authorization": f"Bearer {self.relay.api_key}"})
        if current.status_code == 200:
            doc.apply_update(current.content)
        before = doc.get_state()
        with doc.transaction():
            change(doc)
            if self.user is not None:
                users = doc.get("users", type=Map)
                entry = users[self.user] if self.user in users else None
                if not isinstance(entry, Map):
                    entry = Map()
                    users[self.user] = entry
                    entry["ids"] = Array()
                    entry["ds"] = Array()
                ids = entry["ids"]
                if register_again or float(self.client_id) not in list(ids):
                    ids.append(float(self.client_id))
        self._post(cid, doc.get_update(before))

    def type(self, cid: str, text: str, at: int | None = None, **options) -> None:
        def change(doc: Doc) -> None:
            contents = doc.get("contents", type=Text)
            contents.insert(len(contents) if at is None else at, text)
        self.write(cid, change, **options)


def write_config(data_dir: Path, folder: FolderHandle, *, per_author: bool = False, extra: str = "") -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "git_connectors.toml"
    path.write_text(
        extra
        + '[authors]\n"user-ada" = "Ada Lovelace <ada@example.org>"\n'
        + f'"user-bob" = "{BOB}"\n\n'
        + f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\nrelay_id = "{folder.relay_id}"\n'
        + ("commit_per_author = true\n" if per_author else ""),
        encoding="utf-8",
    )
    return path


def make_engine(relay: DevRelay, data_dir: Path, folder: FolderHandle, **options) -> Engine:
    config = load_connectors(write_config(data_dir, folder, **options))
    settings = Settings(data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=relay.api_key)
    return Engine(settings, RelayClient(relay.url or "", relay.api_key, retries=1, backoff=0.01), config)


def history(engine: Engine) -> list:
    """Commits of the connector's branch, oldest first."""
    connector = engine.connectors.connectors[0]
    with Repo(str(engine.settings.repo_dir(connector))) as repo:
        return list(reversed([entry.commit for entry in repo.get_walker()]))


def changed_paths(engine: Engine, commit) -> set[str]:
    connector = engine.connectors.connectors[0]
    with Repo(str(engine.settings.repo_dir(connector))) as repo:
        parent = repo[commit.parents[0]].tree if commit.parents else None
        out = set()
        for change in tree_changes(repo.object_store, parent, commit.tree):
            for side in (change.old, change.new):
                if side is not None and side.path is not None:
                    out.add(side.path.decode())
        return out


def sync_and_commit(engine: Engine) -> str | None:
    connector = engine.connectors.connectors[0]
    engine.sync_folder(connector)
    return engine.commit(connector)


def author(commit) -> str:
    return commit.author.decode("utf-8")


@pytest.fixture
def folder(relay_server: DevRelay) -> FolderHandle:
    return relay_server.add_folder()


@pytest.fixture
def ada(relay_server) -> Writer:
    return Writer(relay_server, "user-ada", 1001)


@pytest.fixture
def bob(relay_server) -> Writer:
    return Writer(relay_server, "user-bob", 2002)


def two_notes(folder: FolderHandle, ada: Writer, bob: Writer) -> tuple[str, str]:
    """``ada.md`` and ``bob.md``, each first written by its owner (index entries by nobody)."""
    a = folder.put_markdown("ada.md", "", user=None)
    b = folder.put_markdown("bob.md", "", user=None)
    a_cid, b_cid = folder.doc_compound_id("ada.md"), folder.doc_compound_id("bob.md")
    assert a and b
    ada.type(a_cid, "Ada's note.\n")
    bob.type(b_cid, "Bob's note.\n")
    return a_cid, b_cid


def test_each_writers_edit_is_credited_to_them(relay_server, folder, ada, bob, tmp_path):
    a_cid, b_cid = two_notes(folder, ada, bob)
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        assert sync_and_commit(engine)  # first sight of every document: claims nobody
        ada.type(a_cid, "More from Ada.\n")
        assert sync_and_commit(engine)
        bob.type(b_cid, "More from Bob.\n")
        assert sync_and_commit(engine)
        first, by_ada, by_bob = history(engine)
        assert (author(first), first.committer.decode()) == (SERVICE, SERVICE)
        assert (author(by_ada), by_ada.committer.decode()) == (ADA, SERVICE)
        assert (author(by_bob), by_bob.committer.decode()) == (BOB, SERVICE)
        for commit in (by_ada, by_bob):
            assert b"Co-authored-by" not in commit.message and b"Authors:" not in commit.message
        assert changed_paths(engine, by_ada) == {"ada.md"} and changed_paths(engine, by_bob) == {"bob.md"}
        assert engine.attribution.counts(engine.connectors.connectors[0]) == {"attributed": 2, "unattributed": 2}
    finally:
        engine.close()


def test_both_editing_gives_author_and_trailer(relay_server, folder, ada, bob, tmp_path):
    a_cid, b_cid = two_notes(folder, ada, bob)
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        sync_and_commit(engine)
        ada.type(a_cid, "Ada writes a long paragraph here.\n")  # more operations than bob
        bob.type(b_cid, "Bob: ok.\n")
        bob.type(a_cid, "(bob) ", at=0)  # bob also edits ada's note
        assert sync_and_commit(engine)
        commit = history(engine)[-1]
        assert author(commit) == ADA and commit.committer.decode() == SERVICE
        message = commit.message.decode("utf-8")
        assert message.startswith("Update ada.md, update bob.md\n") or message.startswith("Update bob.md, update ada.md\n")
        assert message.endswith(f"\n\nAuthors: Ada Lovelace, Bøb Åkesson\n\nCo-authored-by: {BOB}\n")
    finally:
        engine.close()


def test_commit_per_author_chains_to_the_interval_tree(relay_server, folder, ada, bob, tmp_path):
    a_cid, b_cid = two_notes(folder, ada, bob)
    folder.put_markdown("shared.md", "", user=None)
    s_cid = folder.doc_compound_id("shared.md")
    split = make_engine(relay_server, tmp_path / "split", folder, per_author=True)
    single = make_engine(relay_server, tmp_path / "single", folder)
    try:
        for engine in (split, single):
            sync_and_commit(engine)
        ada.type(a_cid, "Ada again.\n")
        bob.type(b_cid, "Bob again.\n")
        bob.type(s_cid, "b")
        ada.type(s_cid, "ada wrote most of shared.md\n")  # shared.md goes to ada
        folder.put_markdown("new by bob.md", "", user="user-bob")  # entry by bob, empty note
        for engine in (split, single):
            sync_and_commit(engine)
        base, first, second = history(split)[-3:]
        assert {author(first), author(second)} == {ADA, BOB}
        by = {author(first): first, author(second): second}
        assert changed_paths(split, by[ADA]) == {"ada.md", "shared.md"}
        assert changed_paths(split, by[BOB]) == {"bob.md", "new by bob.md"}
        assert by[ADA].message.decode().endswith(f"Authors: Ada Lovelace, Bøb Åkesson\n\nCo-authored-by: {BOB}\n")
        assert b"Co-authored-by" not in by[BOB].message
        assert second.parents == [first.id] and first.parents == [base.id]
        # the chain ends at exactly the tree one commit of the interval has
        assert second.tree == history(single)[-1].tree
        assert {c.committer.decode() for c in (first, second)} == {SERVICE}
    finally:
        split.close()
        single.close()


def test_compaction_of_users_changes_no_author_and_makes_no_commit(relay_server, folder, ada, bob, tmp_path):
    a_cid, b_cid = two_notes(folder, ada, bob)
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        sync_and_commit(engine)
        ada.type(a_cid, "Ada edits.\n", register_again=True)  # a reconnect: her id listed twice
        engine.sync_folder(engine.connectors.connectors[0])
        relay_server.compact_users(a_cid)  # between the edit and its commit
        relay_server.compact_users(folder.compound_id)
        assert sync_and_commit(engine)
        assert author(history(engine)[-1]) == ADA
        assert b"Co-authored-by" not in history(engine)[-1].message
        relay_server.compact_users(a_cid)  # nothing to compact: no update at all
        ada.type(a_cid, "", register_again=True)  # only a second registration
        relay_server.compact_users(a_cid)  # a real compaction, content unchanged
        assert sync_and_commit(engine) is None
        bob.type(b_cid, "Bob edits.\n")
        assert sync_and_commit(engine)
        commit = history(engine)[-1]
        assert author(commit) == BOB and b"Co-authored-by" not in commit.message
    finally:
        engine.close()


def test_an_edit_that_changed_nothing_credits_nobody_later(relay_server, folder, ada, bob, tmp_path):
    a_cid, _ = two_notes(folder, ada, bob)
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        sync_and_commit(engine)
        ada.type(a_cid, "typed, then removed")

        def remove(doc: Doc) -> None:
            contents = doc.get("contents", type=Text)
            del contents[len(contents) - len("typed, then removed"):len(contents)]

        ada.write(a_cid, remove)
        assert sync_and_commit(engine) is None  # the file is as it was
        bob.type(a_cid, "Bob's line.\n")
        assert sync_and_commit(engine)
        commit = history(engine)[-1]
        assert author(commit) == BOB and b"Co-authored-by" not in commit.message
    finally:
        engine.close()


def test_document_without_users_falls_back_to_the_service_identity(relay_server, folder, ada, tmp_path):
    anonymous = Writer(relay_server, None, 3003)
    folder.put_markdown("plain.md", "", user=None)
    folder.put_markdown("ada.md", "", user=None)
    p_cid, a_cid = folder.doc_compound_id("plain.md"), folder.doc_compound_id("ada.md")
    anonymous.type(p_cid, "no users map here\n")
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        sync_and_commit(engine)
        anonymous.type(p_cid, "an edit nobody is known for\n")
        assert sync_and_commit(engine)
        commit = history(engine)[-1]
        assert (author(commit), commit.committer.decode()) == (SERVICE, SERVICE)
        assert commit.message == b"Update plain.md\n\n- update plain.md\n"
        # with a known writer in the same interval, she authors it; nobody else is named
        anonymous.type(p_cid, "more\n")
        ada.type(a_cid, "hi\n")
        sync_and_commit(engine)
        commit = history(engine)[-1]
        assert author(commit) == ADA and b"Co-authored-by" not in commit.message
        assert engine.attribution.counts(engine.connectors.connectors[0]) == {"attributed": 1, "unattributed": 4}
    finally:
        engine.close()


def test_unicode_identities_are_written_as_utf8(relay_server, folder, bob, tmp_path, git_binary):
    folder.put_markdown("bob.md", "", user=None)
    cid = folder.doc_compound_id("bob.md")
    bob.type(cid, "x")
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        sync_and_commit(engine)
        bob.type(cid, "ünïcödé\n")
        sync_and_commit(engine)
        commit = history(engine)[-1]
        assert commit.author == BOB.encode("utf-8")
        assert commit.encoding == b"utf-8"
        repo_dir = engine.settings.repo_dir(engine.connectors.connectors[0])
        # what git itself reads back (git plays the person reading the history)
        shown = subprocess.run([git_binary, "-c", "safe.directory=*", "-C", str(repo_dir), "log", "-1",
                                "--format=%an|%ae|%cn|%ce"], capture_output=True, check=True).stdout
        assert shown.decode("utf-8").strip() == "Bøb Åkesson|bøb@exämple.org|Relay Git Sync|relay-git-sync@localhost"
    finally:
        engine.close()


def test_folder_changes_credit_the_folder_writer(relay_server, folder, tmp_path):
    """Renames and deletions: whoever changed the folder document; attachments: whoever
    wrote the folder entry; a canvas: whoever edited the canvas document."""
    folder.put_markdown("old.md", "old\n", user="user-ada")
    folder.put_markdown("doomed.md", "doomed\n", user="user-ada")
    folder.put_canvas("board.canvas", {"nodes": [{"id": "n1", "type": "text", "text": "t", "x": 0, "y": 0,
                                                  "width": 10, "height": 10}], "edges": []}, user="user-ada")
    engine = make_engine(relay_server, tmp_path, folder, per_author=True)
    try:
        sync_and_commit(engine)
        folder.rename("old.md", "new.md", user="user-ada")
        folder.delete("doomed.md", user="user-bob")
        sync_and_commit(engine)
        # one folder document change by both: both wrote it, the larger share authors
        commit = history(engine)[-1]
        assert changed_paths(engine, commit) == {"old.md", "new.md", "doomed.md"}
        assert author(commit) in (ADA, BOB) and b"Co-authored-by" in commit.message
        folder.put_attachment("pixel.png", tiny_png(), "image/png", user="user-bob")
        folder.set_canvas_text("board.canvas", "n1", "edited by ada", user="user-ada")
        sync_and_commit(engine)
        first, second = history(engine)[-2:]
        by = {author(first): first, author(second): second}
        assert changed_paths(engine, by[BOB]) == {"pixel.png"}
        assert changed_paths(engine, by[ADA]) == {"board.canvas"}
        folder.delete("pixel.png", user="user-ada")
        sync_and_commit(engine)
        assert author(history(engine)[-1]) == ADA
    finally:
        engine.close()


def test_writers_are_kept_across_a_restart_before_the_commit(relay_server, folder, ada, bob, tmp_path):
    a_cid, _ = two_notes(folder, ada, bob)
    engine = make_engine(relay_server, tmp_path, folder)
    sync_and_commit(engine)
    ada.type(a_cid, "Written, then the service stops before committing.\n")
    engine.sync_folder(engine.connectors.connectors[0])
    engine.close()
    registry = StateRegistry(tmp_path, readonly=True)
    folder_state = registry.relay(folder.relay_id).folder(folder.folder_id)
    assert folder_state.writers == {"ada.md": {"user-ada": 51}}
    assert registry.relay(folder.relay_id).doc_clocks  # the state vectors kept
    registry.close()
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        assert engine.commit(engine.connectors.connectors[0])
        assert author(history(engine)[-1]) == ADA
        assert engine.folder_state(engine.connectors.connectors[0]).writers == {}
    finally:
        engine.close()


def test_stand_in_edits_are_registered_under_a_named_user(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "A\n")  # the stand-in's default user
    engine = make_engine(relay_server, tmp_path, folder)
    try:
        sync_and_commit(engine)
        folder.edit_markdown("a.md", "A, edited by the demo user\n")
        sync_and_commit(engine)
        assert author(history(engine)[-1]) == "demo-user <demo-user@users.relay.invalid>"
        folder.edit_markdown("a.md", "A\n", user="user-bob")  # a deletion only
        sync_and_commit(engine)
        assert author(history(engine)[-1]) == BOB
    finally:
        engine.close()


@pytest.mark.ssh
def test_push_to_a_moved_remote_keeps_the_authors(relay_server, folder, ada, bob, tmp_path, git_remote):
    from gitsync.ssh import ParamikoVendor, load_private_key

    a_cid, b_cid = two_notes(folder, ada, bob)
    engine = make_engine(relay_server, tmp_path / "data", folder, per_author=True)
    connector = engine.connectors.connectors[0]
    spec = gitrepo.parse_remote_url(git_remote.url)
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [git_remote.known_hosts_line])

    def push():
        with engine.lock(connector), engine.repo_lock(connector):
            return gitrepo.push_fast_forward(engine.repo(connector), spec, branch="main", vendor=vendor)

    try:
        sync_and_commit(engine)
        push()
        person = git_remote.clone(tmp_path / "person")
        person.write("README.md", "someone else's commit\n")
        person.commit_all("external edit")
        person.push()
        ada.type(a_cid, "Ada, while the remote moved.\n")
        bob.type(b_cid, "Bob, while the remote moved.\n")
        bob.type(a_cid, "(b)", at=0)
        sync_and_commit(engine)
        result = push()
        assert (result.status, result.rebuilt) == ("pushed", 2)
        log = git_remote.bare_git("log", "--reverse", "--format=%an <%ae>|%cn <%ce>|%(trailers:key=Co-authored-by,valueonly)%x00")
        entries = [e.strip() for e in log.split("\x00") if e.strip()]
        assert entries[1].startswith("External Person <external@example.com>|")
        rebuilt = sorted(entries[2:])
        assert rebuilt == sorted([f"{ADA}|{SERVICE}|{BOB}", f"{BOB}|{SERVICE}|"])
    finally:
        engine.close()
