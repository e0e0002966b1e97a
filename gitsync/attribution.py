"""The engine's bookkeeping of who wrote what: kept state vectors, writers per dirty path,
and the commits that credit them.

The rules live in :mod:`gitsync.authors` (pure); this module applies them to the sync
state (:mod:`gitsync.state`): each document's state vector at its last applied change
(``RelayState.doc_clocks``) and, per path changed since the last commit, who wrote it
(``FolderState.writers``). Both are saved with the rest of the state, in the same
transaction as the dirty paths they describe. The caller holds the folder's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from . import authors
from .config import Connector
from .gitrepo import CommitPart
from .ids import compound_id
from .state import FolderState, StateRegistry
from .ydoc import Authorship

__all__ = ["Attribution"]

Describe = Callable[[list[list[str]]], str]


class Attribution:
    """Writers of applied changes, kept in the sync state, turned into commit authors.

    Args:
        states: the engine's state registry.
        book: relay user id -> commit identity (``[authors]``).
        service: the service identity: committer, and author when nobody is known.
    """

    def __init__(self, states: StateRegistry, book: authors.AuthorBook, service: str):
        self.states = states
        self.book = book
        self.service = service
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], dict[str, int]] = {}

    # --- while syncing ------------------------------------------------------------------

    def writers(self, connector: Connector, doc_id: str, seen: Authorship, *, new: bool = False) -> dict[str, int]:
        """Who wrote ``doc_id`` since its kept state vector (a first sight claims nobody)."""
        clocks = self.states.relay(connector.relay_id).doc_clocks
        return authors.writers_since(clocks.get(compound_id(connector.relay_id, doc_id)),
                                     seen.state_vector, seen.users, new=new)

    def keep(self, connector: Connector, doc_id: str, seen: Authorship) -> None:
        """Measure the document's next change from ``seen``."""
        clocks = self.states.relay(connector.relay_id).doc_clocks
        clocks[compound_id(connector.relay_id, doc_id)] = seen.state_vector

    def applied(self, connector: Connector, state: FolderState, doc_id: str, repo_path: str,
                seen: Authorship | None, *, written: bool, settled: bool, new: bool,
                fallback: dict[str, int] | None = None) -> bool:
        """Account for one document's change that was just applied to ``repo_path``.

        Args:
            seen: the document's authorship (None for attachments: no Yjs content).
            written: the file was written (it is a dirty path now).
            settled: the file holds the document's content (written or already equal):
                its state vector is kept, so an edit that changed nothing (the server
                compacting ``users``, text typed and removed) credits nobody later.
            new: the document is new to the folder.
            fallback: writers to credit when the document names nobody (the folder
                document's change that added the entry or changed an attachment's hash).

        Returns:
            True when ``fallback`` was credited.
        """
        writers: dict[str, int] = {}
        if seen is not None and settled:
            # A document new to a folder synced before is new as a whole.
            writers = self.writers(connector, doc_id, seen, new=new and state.last_sync is not None)
            self.keep(connector, doc_id, seen)
        if not written:
            return False
        used = fallback is not None and not authors.known(writers)
        if used:
            writers = authors.merge_writers(writers, fallback or {})
        state.add_writers(repo_path, writers)
        return used

    # --- committing ---------------------------------------------------------------------

    def commit_parts(self, connector: Connector, state: FolderState, paths: list[str],
                     describe: Describe) -> list[CommitPart]:
        """The commit of the pending ``paths``, or one per author (``commit_per_author``)."""
        writers = {p: dict(state.writers.get(p, {})) for p in paths}
        groups: Sequence[authors.AuthorGroup]
        if connector.commit_per_author:
            groups = authors.split_by_author(paths, writers, self.book)
            lines = authors.assign_changes(state.changes, groups, connector.prefix)
        else:
            groups = [authors.AuthorGroup(tuple(paths), authors.credit(paths, writers, self.book))]
            lines = [[list(line) for line in state.changes]]
        return [
            CommitPart(group.paths, authors.message_with_credit(describe(group_lines), group.credit),
                       group.credit.author or self.service)
            for group, group_lines in zip(groups, lines, strict=True)
        ]

    def committed(self, connector: Connector, state: FolderState, paths: list[str]) -> None:
        """Count committed paths with and without a known writer (before their writers go)."""
        attributed = sum(1 for p in paths if authors.known(state.writers.get(p, {})))
        with self._lock:
            counts = self._counts.setdefault(connector.key, {"attributed": 0, "unattributed": 0})
            counts["attributed"] += attributed
            counts["unattributed"] += len(paths) - attributed

    def counts(self, connector: Connector) -> dict[str, int]:
        """Committed changes (paths) credited to a relay user or to nobody, since start."""
        with self._lock:
            return dict(self._counts.get(connector.key, {"attributed": 0, "unattributed": 0}))
