"""gitsync.authors (pure) and the authorship readers of gitsync.ydoc.

Documents come from two sources: yjs itself (``tests/fixtures/yjs/note_two_users*.bin``,
written by yjs's PermanentUserData, the layout Relay documents carry) and pycrdt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pycrdt import Array, Doc, Map, Text

from gitsync import ydoc
from gitsync.authors import (
    DEFAULT_TEMPLATE,
    UNKNOWN,
    AuthorBook,
    AuthorGroup,
    Credit,
    InvalidIdentity,
    assign_changes,
    check_template,
    credit,
    decode_state_vector,
    encode_state_vector,
    known,
    merge_writers,
    message_with_credit,
    parse_identity,
    split_by_author,
    writers_since,
)

FIXTURES = Path(__file__).parent / "fixtures" / "yjs"
ADA, BOB = 3000000001, 12345  # the yjs fixtures' client ids


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --------------------------------------------------------------------------- documents


def test_yjs_permanent_user_data_is_read():
    seen = ydoc.read_authorship(fixture("note_two_users.bin"))
    assert seen.users == {ADA: "user-ada", BOB: "user-bob"}
    assert decode_state_vector(seen.state_vector) == {ADA: 20, BOB: 22}
    assert ydoc.read_users(fixture("note_two_users.bin")) == seen.users
    assert ydoc.state_vector(fixture("note_two_users.bin")) == seen.state_vector


def test_yjs_second_writer_is_credited_with_his_operations():
    before = fixture("note_two_users_before.bin")  # after ada's first edit
    seen = ydoc.read_authorship(fixture("note_two_users.bin"))
    # bob: 17 characters, 4 operations registering him, 1 delete set record
    assert writers_since(before, seen.state_vector, seen.users) == {"user-bob": 22}


def test_yjs_server_compaction_credits_nobody_and_keeps_the_users():
    dup = ydoc.read_authorship(fixture("note_two_users_dup.bin"))
    compacted = ydoc.read_authorship(fixture("note_two_users_compacted.bin"))
    assert compacted.users == dup.users == {ADA: "user-ada", BOB: "user-bob"}
    assert writers_since(dup.state_vector, compacted.state_vector, compacted.users) == {UNKNOWN: 1}
    assert known(writers_since(dup.state_vector, compacted.state_vector, compacted.users)) == {}
    assert ydoc.read_text(fixture("note_two_users_compacted.bin")) == ydoc.read_text(fixture("note_two_users.bin"))


def test_users_map_tolerates_garbage_and_refuses_shared_ids():
    doc = Doc(client_id=7)
    root = doc.get("users", type=Map)
    with doc.transaction():
        good = Map()
        root["good"] = good
        good["ids"] = Array([1.0, 2, 2.5, -3, True, "4", 2**60, None])
        root["plain"] = {"ids": [5, 6.0]}          # a plain object reads the same
        root["thief"] = {"ids": [2]}                # claims good's client 2: nobody gets it
        root["no-ids"] = {"ds": []}
        root["scalar"] = "not a map"
        root[""] = {"ids": [9]}                     # no user id
        root["x" * 300] = {"ids": [10]}             # too long to be a user id
        nested = Map()
        root["nested"] = nested
        nested["ids"] = Map({"a": 1})               # ids that are not a list
    users = ydoc.read_users(doc.get_update())
    assert users == {1: "good", 5: "plain", 6: "plain"}


def test_document_without_users_map():
    doc = Doc()
    doc.get("contents", type=Text).insert(0, "hello")
    assert ydoc.read_users(doc.get_update()) == {}
    assert ydoc.read_users(b"\x00\x00") == {}
    with pytest.raises(ydoc.CorruptUpdate):
        ydoc.read_authorship(b"\x01\x02garbage")


# --------------------------------------------------------------------------- state vectors


def test_state_vector_round_trip_and_bad_bytes():
    vector = {2**53 - 1: 1, 0: 5, 300: 2**32}
    data = encode_state_vector(vector)
    assert decode_state_vector(data) == vector
    assert encode_state_vector(decode_state_vector(data)) == data
    assert decode_state_vector(b"\x00") == {}
    for bad in (b"", b"\x05\x01", b"\x01\x80", b"\xff" * 12):
        with pytest.raises(ValueError):
            decode_state_vector(bad)


def test_writers_since_rules():
    users = {1: "ada", 2: "bob"}
    now = encode_state_vector({1: 10, 2: 4, 3: 7})
    # first sight: nobody, unless the document is new to a synced folder
    assert writers_since(None, now, users) == {}
    assert writers_since(None, now, users, new=True) == {"ada": 10, "bob": 4, UNKNOWN: 7}
    assert writers_since(encode_state_vector({1: 10, 2: 1}), now, users) == {"bob": 3, UNKNOWN: 7}
    assert writers_since(now, now, users) == {}
    assert writers_since(b"\xff", now, users) == {}  # a damaged row: nobody, never a crash
    # two clients of one user add up
    assert writers_since(b"\x00", encode_state_vector({1: 2, 4: 3}), {1: "ada", 4: "ada"}) == {"ada": 5}


def test_merge_and_known():
    assert merge_writers({"ada": 1}, {"ada": 2, UNKNOWN: 3}) == {"ada": 3, UNKNOWN: 3}
    assert known({"ada": 1, UNKNOWN: 5, "bob": 0}) == {"ada": 1}


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Ada", "must look like 'Name <email@example.org>'"),
        ("<ada@example.org>", "needs a name"),
        ("Ada <>", "needs an email"),
        ("Ada <ada at example.org>", "needs an email"),
        ("Ada <ada>", "needs an email"),
        ("Ada\n <ada@example.org>", "control characters"),
        ("Ada <a@b> <c@d>", "must look like"),
        ("A" * 300 + " <a@example.org>", "at most 256"),
    ],
)
def test_bad_identities(text, message):
    with pytest.raises(InvalidIdentity, match=message):
        parse_identity(text)


def test_identities_keep_unicode_and_normalize_spaces():
    assert parse_identity("  Zoë Ångström   <zoë@exämple.org> ") == "Zoë Ångström <zoë@exämple.org>"


def test_users_without_entry_get_a_safe_identity_from_the_template():
    book = AuthorBook({"ada": "Ada Lovelace <ada@example.org>"})
    assert book.identity("ada") == "Ada Lovelace <ada@example.org>"
    assert book.identity("user-42") == "user-42 <user-42@users.relay.invalid>"
    # hostile ids cannot break the header: no <, >, newline; the email keeps a safe set
    evil = book.identity("x> \nCommitter: evil <e@vil")
    assert "\n" not in evil and evil.count("<") == 1 and evil.endswith("@users.relay.invalid>")
    assert parse_identity(evil) == evil
    assert book.identity("Zoë") == "Zoë <Zo@users.relay.invalid>"
    assert book.identity("<<>>") == "unknown <user@users.relay.invalid>"
    custom = AuthorBook(template="Relay user {user} <relay+{user}@example.org>")
    assert custom.identity("u1") == "Relay user u1 <relay+u1@example.org>"


def test_templates_are_checked():
    assert check_template(DEFAULT_TEMPLATE) == DEFAULT_TEMPLATE
    for bad in ("{user}", "{user} <>", "<{user}@x.org>", 5):
        with pytest.raises(InvalidIdentity):
            check_template(bad)


# --------------------------------------------------------------------------- commits

BOOK = AuthorBook({"ada": "Ada <ada@example.org>", "ada-laptop": "Ada <ada@example.org>",
                   "bob": "Bob <bob@example.org>"})


def test_credit_most_operations_wins_and_one_person_with_two_ids_counts_once():
    writers = {"a.md": {"ada": 3, UNKNOWN: 100}, "b.md": {"bob": 5}, "c.md": {"ada-laptop": 4}}
    who = credit(["a.md", "b.md", "c.md"], writers, BOOK)
    assert who == Credit("Ada <ada@example.org>", ("Bob <bob@example.org>",),
                         {"Ada <ada@example.org>": 7, "Bob <bob@example.org>": 5})
    assert credit(["a.md"], {"a.md": {UNKNOWN: 9}}, BOOK) == Credit()
    assert credit(["x.md"], {}, BOOK).author is None


def test_ties_are_broken_by_identity():
    who = credit(["a"], {"a": {"bob": 2, "ada": 2}}, BOOK)
    assert who.author == "Ada <ada@example.org>"


def test_split_by_author():
    writers = {
        "v/a.md": {"ada": 5},
        "v/b.md": {"bob": 1, "ada": 3},    # both wrote it: ada wrote more
        "v/c.md": {"bob": 9},
        "v/gone.md": {UNKNOWN: 2},        # nobody known
        "v/d.md": {},
    }
    groups = split_by_author(["v/a.md", "v/b.md", "v/c.md", "v/gone.md", "v/d.md"], writers, BOOK)
    assert [g.paths for g in groups] == [("v/gone.md", "v/d.md"), ("v/a.md", "v/b.md"), ("v/c.md",)]
    assert groups[0].credit == Credit()
    assert groups[1].credit.author == "Ada <ada@example.org>"
    assert groups[1].credit.co_authors == ("Bob <bob@example.org>",)  # he wrote part of b.md
    assert groups[2].credit.people == ("Bob <bob@example.org>",)


def test_changes_follow_their_paths():
    groups = [AuthorGroup(("v/a.md",), Credit()), AuthorGroup(("v/b.md", "v/c.md"), Credit())]
    changes = [["update", "a.md"], ["rename", "x.md", "c.md"], ["delete", "zzz.md"], ["add", "b.md"]]
    assert assign_changes(changes, groups, "v") == [
        [["update", "a.md"]],
        [["rename", "x.md", "c.md"], ["delete", "zzz.md"], ["add", "b.md"]],
    ]
    assert assign_changes([["update", "a.md"]], [AuthorGroup(("a.md",), Credit())]) == [[["update", "a.md"]]]


def test_message_gets_authors_line_and_trailers_only_for_several_people():
    base = "Update a.md\n\n- update a.md\n"
    assert message_with_credit(base, Credit("Ada <ada@example.org>")) == base
    text = message_with_credit(base, Credit("Ada <ada@example.org>", ("Bob <bob@example.org>", "Zoë <z@ex.org>")))
    assert text == ("Update a.md\n\n- update a.md\n\nAuthors: Ada, Bob, Zoë\n\n"
                    "Co-authored-by: Bob <bob@example.org>\nCo-authored-by: Zoë <z@ex.org>\n")
