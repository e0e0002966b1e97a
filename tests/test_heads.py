"""Stored document heads and the choice of what to fetch from a heads answer."""

from __future__ import annotations

import threading

from pycrdt import Doc, Snapshot, Text

from gitsync.heads import HeadStore, docs_to_fetch
from gitsync.yframes import Head

A = ("relay-a", "folder-a")
B = ("relay-a", "folder-b")


def _snapshots() -> tuple[bytes, bytes, bytes]:
    doc = Doc()
    text = doc.get("contents", type=Text)
    text.insert(0, "hello")
    first = Snapshot.from_doc(doc).encode()
    del text[0:1]  # a deletion changes only the delete set
    second = Snapshot.from_doc(doc).encode()
    text.insert(0, "J")
    return first, second, Snapshot.from_doc(doc).encode()


def test_docs_to_fetch_compares_heads_by_content():
    one, two, three = _snapshots()
    known = ["same", "deleted-in", "edited", "unstored", "unanswered"]
    stored = {"same": one, "deleted-in": one, "edited": two, "unanswered": one}
    answered = {"same": Head(one, 1), "deleted-in": Head(two, 2), "edited": Head(three, 3),
                "unstored": Head(one, 1), "stranger": Head(one, 1)}
    assert docs_to_fetch(known, stored, answered) == ["deleted-in", "edited", "unstored",
                                                       "unanswered"]
    assert docs_to_fetch([], stored, answered) == []


def test_store_round_trip_per_connector(tmp_path):
    one, two, _ = _snapshots()
    store = HeadStore(tmp_path / "state" / "heads.sqlite3")
    store.put_many(A, {"d1": Head(one, 5), "d2": Head(two, 6)})
    store.put_many(B, {"d1": Head(two, 7)})
    store.put_many(A, {"d2": Head(one, 8)})  # replaced
    assert store.get_many(A) == {"d1": one, "d2": one}
    assert store.get_many(B) == {"d1": two}
    assert store.count(A) == 2
    store.forget(A, ["d1"])
    assert store.get_many(A) == {"d2": one}
    store.forget(B)
    assert store.get_many(B) == {}
    store.put_many(A, {})
    store.close()
    reopened = HeadStore(tmp_path / "state" / "heads.sqlite3")
    assert reopened.get_many(A) == {"d2": one}
    reopened.close()


def test_a_damaged_file_is_set_aside(tmp_path):
    path = tmp_path / "heads.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = HeadStore(path)
    assert store.get_many(A) == {}
    store.put_many(A, {"d": Head(b"\x00\x00", 1)})
    assert store.count(A) == 1
    assert (tmp_path / "heads.sqlite3.damaged").read_bytes().startswith(b"this is not")
    store.close()


def test_threads_share_one_store(tmp_path):
    store = HeadStore(tmp_path / "heads.sqlite3")

    def work(n: int) -> None:
        for i in range(50):
            store.put_many(A, {f"d{n}-{i}": Head(bytes([n, i]), i)})
            store.get_many(A)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count(A) == 200
    store.close()
