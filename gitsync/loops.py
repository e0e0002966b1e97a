"""The service's background loops: workers, publishers and the reconciler.

Each loop is a small class that owns its threads and shows, per thread, what it is
doing (a :class:`~enum.StrEnum` state that ``/api/status`` lists). The loops hold no
sync logic: they take work from the queue or the commit schedule, call the engine or
the publisher, and record the outcome in the shared :class:`Ledger`. The
:class:`~gitsync.service.Service` wires them together and runs their lifecycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .backoff import Backoff
from .config import Connector, ConnectorsConfig
from .engine import SyncAborted
from .gitrepo import GitError
from .health import HealthTracker
from .publish import PushOutcome
from .redact import redact
from .relay import Unauthorized

if TYPE_CHECKING:
    from .service import Service

__all__ = [
    "FolderPhase",
    "FolderStatus",
    "Ledger",
    "PublisherState",
    "Publishers",
    "Reconciler",
    "ReconcilerState",
    "WorkerState",
    "Workers",
]

log = logging.getLogger(__name__)

FOREIGN_TTL = 600.0  # seconds a document found in no synced folder is ignored
UNKNOWN_GRACE = 10.0  # seconds after the startup sync before an unknown document is foreign
BATCH_LIMIT = 255  # extra documents of one folder a worker takes along with its key
STARTUP_SYNCS = 3  # connectors whose startup sync or reconcile runs at the same time

Key = tuple[str, str]


class FolderPhase(StrEnum):
    """Where a folder is, as ``/api/status`` shows it."""

    WAITING = "waiting"  # nothing done yet: the startup sync has not reached it
    INITIAL_SYNC = "initial_sync"  # its startup sync runs
    RECONCILING = "reconciling"  # a reconcile or requested full sync runs
    SYNCING = "syncing"  # a worker syncs webhook-driven work
    IDLE = "idle"  # in step with the Relay Server
    HELD = "held"  # in step, but a mass deletion waits for confirmation
    BACKING_OFF = "backing_off"  # the last attempt failed; retried later


@dataclass
class FolderStatus:
    """What /api/status shows per connector (failures and errors: :class:`HealthTracker`)."""

    state: FolderPhase = FolderPhase.WAITING
    last_success: float | None = None
    last_commit: str | None = None
    push: PushOutcome | None = None
    unpushed: int | None = None


class Ledger:
    """Per-folder status and the service's counters, written by every loop.

    Args:
        config: the connectors (each starts as ``waiting``).
        health_tracker: where failures and recoveries are counted for ``/health``.
        secrets: removed from every recorded error.
    """

    COUNTS = ("accepted", "merged", "ignored", "processed", "failed", "commits", "pushes")

    def __init__(self, config: ConnectorsConfig, health_tracker: HealthTracker, secrets: list[str]):
        self.health_tracker = health_tracker
        self.retry = Backoff()  # per queue key (and per connector for full syncs)
        self._secrets = secrets
        self._status = {c.key: FolderStatus() for c in config.connectors}
        self._counts = dict.fromkeys(self.COUNTS, 0)
        self._lock = threading.Lock()

    def folder(self, key: Key) -> FolderStatus:
        """The status of the connector ``key`` (created for a connector added later)."""
        return self._status.setdefault(key, FolderStatus())

    def peek(self, key: Key) -> FolderStatus:
        """The status of ``key`` without adding it."""
        return self._status.get(key) or FolderStatus()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def backoff(self, key: object) -> float:
        """Count a failure of ``key``; returns the seconds to wait before retrying it."""
        return self.retry.failure(key)

    def record_error(self, connector: Connector, message: str, *, kind: str = "read",
                     permanent: bool = False) -> None:
        """Count a failure of the folder's ``kind`` of work (read, commit, internal)."""
        self.folder(connector.key).state = FolderPhase.BACKING_OFF
        error = redact(message, self._secrets)
        fails = self.health_tracker.failed(connector.key, kind, error, permanent=permanent)
        self.count("failed")
        log.warning("sync failed, will retry relay=%s folder=%s fails=%d error=%s",
                    connector.relay_id, connector.folder_id, fails, error)


class Loop:
    """Threads running one loop, each with a state; stopped by the service's stop event.

    Args:
        svc: the service whose engine, queue, publisher and ledger the loop uses (read
            at each use, so they may be opened after the loop is made).
        stop: set when the service stops; every thread ends soon after.
        threads: how many threads run the loop.
    """

    name = "loop"
    numbered = True  # thread names end in -N (worker-0, worker-1, ...)
    idle: StrEnum
    stopped: StrEnum

    def __init__(self, svc: Service, stop: threading.Event, threads: int = 1):
        self.svc = svc
        self.stop = stop
        self.size = threads
        self.threads: list[threading.Thread] = []
        self._states: dict[str, StrEnum] = {}

    def _thread_name(self, n: int) -> str:
        return f"{self.name}-{n}" if self.numbered else self.name

    def start(self) -> None:
        """Start the threads (a new set; the old ones must have ended)."""
        self.threads = [threading.Thread(target=self._main, name=self._thread_name(n), daemon=True)
                        for n in range(self.size)]
        self._states = {t.name: self.idle for t in self.threads}
        for thread in self.threads:
            thread.start()

    def _main(self) -> None:
        try:
            self.run()
        finally:
            self._set(self.stopped)

    def run(self) -> None:
        raise NotImplementedError

    def join(self, deadline: float) -> None:
        """Wait for the threads to end, at most until ``deadline`` (monotonic)."""
        for thread in self.threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def _set(self, state: StrEnum) -> None:
        """Record what the calling thread does now (ignored for threads not of this loop)."""
        name = threading.current_thread().name
        if name in self._states:
            self._states[name] = state

    def states(self) -> dict[str, str]:
        """Each thread's state by thread name."""
        return {name: state.value for name, state in list(self._states.items())}


# --- workers ------------------------------------------------------------------------


class WorkerState(StrEnum):
    IDLE = "idle"  # waiting for a key
    SYNCING = "syncing"  # fetching and applying a batch of keys
    STOPPED = "stopped"


class Workers(Loop):
    """Take a key from the durable queue, sync that document or folder, mark it done once
    the result is saved (or put it back for later)."""

    name = "worker"
    idle = WorkerState.IDLE
    stopped = WorkerState.STOPPED

    def __init__(self, svc: Service, stop: threading.Event, threads: int):
        super().__init__(svc, stop, threads)
        self._foreign: dict[Key, float] = {}  # docs of folders we do not sync
        self._unknown_since: dict[Key, float] = {}  # docs waiting for an index
        self._refreshed: dict[str, float] = {}  # relay -> last folder refresh for an unknown doc

    def run(self) -> None:
        svc = self.svc
        while not self.stop.is_set():
            self._set(WorkerState.IDLE)
            key = svc.queue.get(timeout=0.5)
            if key is None:
                continue
            self._set(WorkerState.SYNCING)
            batch = [key]
            try:
                found = svc.engine.locate(*key)
                if found is not None and found[1] == "doc":
                    # Documents of the same folder queued meanwhile: one fetch round, one save.
                    folder = found[0].key
                    batch += svc.queue.take_matching(
                        lambda k, folder=folder: (hit := svc.engine.locate(*k)) is not None
                        and hit[1] == "doc" and hit[0].key == folder,
                        limit=BATCH_LIMIT,
                    )
                retry_in = self.process(batch, found)
            except Exception:  # a bug must not kill the worker; the keys are retried
                log.exception("unexpected error processing relay=%s doc=%s", *key)
                retry_in = dict.fromkeys(batch, 30.0)
            for item in batch:
                try:
                    if retry_in.get(item) is not None:
                        svc.queue.put_later(item, retry_in[item])
                    svc.queue.done(item)
                except Exception:  # closed while stopping: the journal keeps the key
                    pass

    def process(self, batch: list[Key], found) -> dict[Key, float | None]:
        """Sync what the keys name; returns per key a delay to retry after (None: done).

        ``batch`` is one key, or several documents of the folder ``found`` names.
        """
        if found is None:
            return {batch[0]: self.unknown_document(batch[0])}
        svc, ledger = self.svc, self.svc.ledger
        connector, what = found
        status = ledger.folder(connector.key)
        # No folder lock here: the engine fetches outside it and writes under it, so a
        # long full sync of this folder does not hold this webhook back.
        started, synced = time.monotonic(), False
        try:
            status.state = FolderPhase.SYNCING
            if what == "folder":
                report = svc.engine.sync_folder(connector, full=False)
            else:
                report = svc.engine.sync_docs(connector, [doc for _, doc in batch])
            synced = not report.failed
        except Unauthorized as exc:
            ledger.record_error(connector, f"relay refused the API key: {exc}", permanent=True)
            return dict.fromkeys(batch, 60.0)
        except SyncAborted as exc:
            ledger.record_error(connector, str(exc))
            return {key: ledger.backoff(key) for key in batch}
        except Exception as exc:  # a bug: keep the worker alive, say so in status, retry
            log.exception("unexpected error syncing relay=%s folder=%s", connector.relay_id, connector.folder_id)
            ledger.record_error(connector, f"internal error: {exc}", kind="internal")
            return {key: ledger.backoff(key) for key in batch}
        finally:
            svc.metrics.sync_finished("interactive", time.monotonic() - started, ok=synced)
        ledger.count("processed", len(batch))
        result: dict[Key, float | None] = dict.fromkeys(batch)
        for doc in report.unknown:  # moved out of the folder meanwhile
            key = (connector.relay_id, doc)
            result[key] = self.unknown_document(key)
        if report.failed:
            ledger.record_error(connector, "; ".join(f"{p}: {r}" for p, r in report.failed[:3]))
            # Retrying documents that did not fail costs one fetch each: their update
            # hash is unchanged, so nothing is rewritten.
            for key in batch:
                if key[1] not in report.unknown:
                    result[key] = ledger.backoff(key)
            return result
        status.state = FolderPhase.HELD if report.held else FolderPhase.IDLE
        for key in batch:
            ledger.retry.reset(key)
            self._unknown_since.pop(key, None)
        status.last_success = time.time()
        ledger.health_tracker.succeeded(connector.key, "read", "internal")
        return result

    def unknown_document(self, key: Key) -> float | None:
        """A document no folder index lists yet: refresh the relay's folders and retry.

        Its content webhook can beat its folder's, and during the startup sync nothing
        is known yet. Only a document still unknown ``UNKNOWN_GRACE`` seconds after the
        startup sync (with folder refreshes in between) is taken to belong to a folder we
        do not sync; it is then remembered for a while so its edits cost nothing (a move
        into a synced folder arrives as that folder's webhook). The decision is by time,
        not by attempts: a burst of webhooks must not use up the grace period.
        """
        relay_id, doc_id = key
        now = time.monotonic()
        seen = self._foreign.get(key)
        if seen is not None and now - seen < FOREIGN_TTL:
            return None
        if not self.svc.initial_sync_done.is_set():
            return 2.0  # nothing is known before the startup sync: ask again after it
        first = self._unknown_since.setdefault(key, now)
        if now - first >= UNKNOWN_GRACE:
            del self._unknown_since[key]
            if len(self._foreign) > 100_000:
                self._foreign.clear()
            self._foreign[key] = now
            log.debug("document not in any synced folder, ignored for a while relay=%s doc=%s",
                      relay_id, doc_id)
            return None
        if now - self._refreshed.get(relay_id, 0.0) >= 1.0:  # one refresh per relay per second
            self._refreshed[relay_id] = now
            for connector in self.svc.config.connectors:
                if connector.relay_id == relay_id:
                    self.svc.queue.put((relay_id, connector.folder_id))
        return 2.0

    def is_foreign(self, key: Key) -> bool:
        """Whether ``key`` is a document currently taken to be of a folder we do not sync."""
        return key in self._foreign


# --- publishers ---------------------------------------------------------------------


class PublisherState(StrEnum):
    WAITING = "waiting"  # for a folder's commit to be due
    COMMITTING = "committing"
    PUSHING = "pushing"
    STOPPED = "stopped"


class Publishers(Loop):
    """Commit and push folders as their schedule makes them due (leading edge, at most
    one commit per folder per interval). Several publishers run, and a folder whose lock
    is busy is tried again shortly: no folder waits on another."""

    name = "publisher"
    idle = PublisherState.WAITING
    stopped = PublisherState.STOPPED

    def run(self) -> None:
        svc = self.svc
        sweep_at = time.monotonic() + svc.settings.commit_interval
        while not self.stop.is_set():
            self._set(PublisherState.WAITING)
            wait = svc.schedule.seconds_to_next()
            svc.schedule.wait(min(wait if wait is not None else 1.0, 1.0))
            if time.monotonic() >= sweep_at:
                # Changes made without a notification (a crash's leftovers, a catch-up)
                # and pushes waiting out a backoff are picked up here.
                sweep_at = time.monotonic() + svc.settings.commit_interval
                for connector in svc.config.connectors:
                    if self._needs_publishing(connector):
                        svc.schedule.changed(connector.key)
            for key in svc.schedule.take_due():
                connector = svc.config.find(*key)
                if connector is None:
                    svc.schedule.committed(key, made=False)
                    continue
                lock = svc.engine.lock(connector)
                if not lock.acquire(timeout=0.05):
                    svc.schedule.retry(key, 0.25)  # a sync is writing: come back shortly
                    continue
                lock.release()
                made = False
                try:
                    made = self.commit_and_push(connector, on_commit=lambda key=key: svc.schedule.started(key))
                except GitError as exc:  # e.g. a lock file someone holds: said plainly, retried
                    svc.ledger.record_error(connector, f"commit failed: {exc}")
                except Exception as exc:  # one broken repository must not stop the others
                    log.exception("commit or push failed relay=%s folder=%s",
                                  connector.relay_id, connector.folder_id)
                    svc.ledger.record_error(connector, f"commit or push failed: {exc}")
                finally:
                    svc.schedule.committed(key, made=made)

    def _needs_publishing(self, connector: Connector) -> bool:
        """Whether the folder has paths to commit or, past its backoff, commits to push.

        A repository that cannot be read says yes: the commit that follows reports why,
        and the thread lives on for the other folders.
        """
        svc = self.svc
        try:
            return bool(svc.engine.pending_paths(connector) or (
                connector.url and svc.publisher.due(connector)
                and svc.publisher.has_unpushed(svc.engine, connector)))
        except Exception as exc:
            log.debug("publish check failed relay=%s folder=%s error=%s",
                      connector.relay_id, connector.folder_id, exc)
            return True

    def commit_and_push_all(self, *, final: bool = False) -> None:
        """Commit and push every folder (the last round when the service stops)."""
        for connector in self.svc.config.connectors:
            try:
                self.commit_and_push(connector, final=final)
            except GitError as exc:  # e.g. a lock file someone holds: said plainly, retried
                self.svc.ledger.record_error(connector, f"commit failed: {exc}", kind="commit")
            except Exception as exc:  # one broken repository must not stop the others
                log.exception("commit or push failed relay=%s folder=%s",
                              connector.relay_id, connector.folder_id)
                self.svc.ledger.record_error(connector, f"commit or push failed: {exc}", kind="commit")

    def commit_and_push(self, connector: Connector, *, final: bool = False, force_push: bool = False,
                        on_commit: Callable[[], None] | None = None) -> bool:
        """Commit the folder's pending paths, then push (see :meth:`Publisher.publish`);
        True when a commit was made."""
        svc, ledger = self.svc, self.svc.ledger
        status = ledger.folder(connector.key)
        self._set(PublisherState.COMMITTING)
        done = svc.publisher.publish(svc.engine, connector, force_push=force_push, final=final,
                                     on_push=lambda: self._set(PublisherState.PUSHING), on_commit=on_commit)
        ledger.health_tracker.succeeded(connector.key, "commit")
        if done.commit:
            status.last_commit = done.commit
            svc.metrics.committed(connector.key)
            ledger.count("commits")
        if connector.url and (done.commit or done.push is not None or status.unpushed is None):
            status.unpushed = self.count_unpushed(connector)
        if done.push is None:
            return bool(done.commit)
        push = status.push = done.push
        sent = push.ok and push.status != "up-to-date"
        svc.metrics.pushed(connector.key, ok=push.ok, sent=sent, permanent=push.permanent, at=push.at)
        if push.ok:
            ledger.health_tracker.succeeded(connector.key, "push")
        else:
            ledger.health_tracker.failed(connector.key, "push", push.error or "push failed",
                                         permanent=push.permanent)
        if sent:
            ledger.count("pushes")
        return bool(done.commit)

    def count_unpushed(self, connector: Connector) -> int | None:
        """Local commits the remote does not have yet (a local read, no network)."""
        from .gitrepo import count_unpushed

        engine = self.svc.engine
        try:
            with engine.repo_lock(connector):
                count = count_unpushed(engine.repo(connector), branch=connector.branch,
                                       remote_name=connector.remote_name)
        except Exception as exc:  # only a number for status and metrics
            log.debug("unpushed commits not counted relay=%s folder=%s error=%s",
                      connector.relay_id, connector.folder_id, exc)
            return None
        self.svc.metrics.unpushed_commits(connector.key, count)
        return count


# --- reconciler ---------------------------------------------------------------------


class ReconcilerState(StrEnum):
    STARTUP = "startup"  # the startup sync of every connector runs
    WAITING = "waiting"  # for the next reconcile or a requested sync
    SYNCING = "syncing"  # a reconcile or requested full sync runs
    STOPPED = "stopped"


class Reconciler(Loop):
    """The startup sync of every connector, then a reconcile every interval (webhooks can
    be lost: the Relay Server never retries), and the full syncs asked for through
    :meth:`request`.

    Connectors are synced ``STARTUP_SYNCS`` at a time: a large folder does not hold back
    the startup of the others (their fetches share the bulk lane).

    Args:
        on_startup_done: called once the startup sync of every connector has ended.
    """

    name = "reconciler"
    numbered = False
    idle = ReconcilerState.STARTUP
    stopped = ReconcilerState.STOPPED

    def __init__(self, svc: Service, stop: threading.Event, on_startup_done: Callable[[], None]):
        super().__init__(svc, stop, 1)
        self._on_startup_done = on_startup_done
        self._wake = threading.Event()  # syncs were requested, or the service stops
        self._requested: dict[Key, bool] = {}  # POST /api/sync: key -> confirm deletions
        self._lock = threading.Lock()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        svc = self.svc
        self._set(ReconcilerState.STARTUP)
        with ThreadPoolExecutor(STARTUP_SYNCS, thread_name_prefix="startup") as pool:
            failed = sum(not ok for ok in pool.map(self.startup_sync, svc.config.connectors))
        if self.stop.is_set():
            return
        self._on_startup_done()
        log.log(logging.WARNING if failed else logging.INFO, "initial sync complete folders=%d failed=%d",
                len(svc.config.connectors), failed)
        interval = svc.settings.reconcile_interval
        next_due = time.monotonic() + interval if interval > 0 else None
        while not self.stop.is_set():
            self._set(ReconcilerState.WAITING)
            wait = None if next_due is None else max(0.0, next_due - time.monotonic())
            self._wake.wait(wait)
            if self.stop.is_set():
                return
            self._set(ReconcilerState.SYNCING)
            self.run_requested()
            if next_due is not None and time.monotonic() >= next_due:
                with ThreadPoolExecutor(STARTUP_SYNCS, thread_name_prefix="reconcile") as pool:
                    list(pool.map(lambda c: self.guarded_sync(c, "reconcile"), svc.config.connectors))
                next_due = time.monotonic() + interval

    def startup_sync(self, connector: Connector) -> bool:
        """One connector's startup: commit a crash's leftovers, adopt the remote, full sync."""
        if self.stop.is_set():
            return True
        svc = self.svc
        try:
            svc.engine.drop_torn_writes(connector)
            if connector.url:
                # Commit what a crash left uncommitted, then start from the remote's
                # history (adopted into an empty repository, or our unpushed commits
                # rebuilt on it) so the first sync builds on top of it.
                svc.publishers.commit_and_push(connector, force_push=True)
            return self.full_sync(connector, kind="startup")
        except Exception as exc:  # the other connectors still get their startup sync
            log.exception("startup sync failed relay=%s folder=%s", connector.relay_id, connector.folder_id)
            svc.ledger.record_error(connector, f"startup sync failed: {exc}", kind="internal")
            return False

    def guarded_sync(self, connector: Connector, kind: str, *, confirm_deletions: bool = False) -> None:
        try:
            self.full_sync(connector, kind=kind, confirm_deletions=confirm_deletions)
        except Exception as exc:
            log.exception("%s sync failed relay=%s folder=%s", kind, connector.relay_id, connector.folder_id)
            self.svc.ledger.record_error(connector, f"{kind} sync failed: {exc}", kind="internal")

    def request(self, targets: list[Connector], *, confirm_deletions: bool) -> None:
        """Queue a full sync of ``targets``; ``confirm_deletions`` sticks until it runs."""
        with self._lock:
            for connector in targets:
                self._requested[connector.key] = self._requested.get(connector.key, False) or confirm_deletions
        self._wake.set()

    def run_requested(self) -> None:
        """Run the full syncs asked for through :meth:`request`."""
        with self._lock:
            self._wake.clear()
            requested, self._requested = self._requested, {}
        for connector in self.svc.config.connectors:
            if connector.key in requested and not self.stop.is_set():
                self.guarded_sync(connector, "manual", confirm_deletions=requested[connector.key])

    def full_sync(self, connector: Connector, *, kind: str = "reconcile", confirm_deletions: bool = False) -> bool:
        """Startup, reconcile or requested sync of one connector: a full sync, or for a
        connector with a websocket (except when requested) a catch-up by document heads,
        also run after each reconnect. Returns True when the folder could be read."""
        svc, ledger = self.svc, self.svc.ledger
        status = ledger.folder(connector.key)
        status.state = FolderPhase.INITIAL_SYNC if kind == "startup" else FolderPhase.RECONCILING
        started, synced = time.monotonic(), False
        try:
            if svc.transports.listens(connector) and kind != "manual":
                report = svc.transports.catch_up(connector, progress=_progress_logger(connector))
            else:
                report = svc.engine.sync_folder(connector, full=True, confirm_deletions=confirm_deletions,
                                                progress=_progress_logger(connector))
            synced = not report.failed
        except (SyncAborted, Unauthorized) as exc:
            refused = isinstance(exc, Unauthorized)
            ledger.record_error(connector, f"relay refused the API key: {exc}" if refused else str(exc),
                                permanent=refused)
            # retried by the work queue with backoff, like a folder webhook
            svc.queue.put_later((connector.relay_id, connector.folder_id), ledger.backoff(connector.key))
            return False
        except Exception as exc:
            log.exception("full sync crashed relay=%s folder=%s", connector.relay_id, connector.folder_id)
            ledger.record_error(connector, f"internal error: {exc}", kind="internal")
            svc.queue.put_later((connector.relay_id, connector.folder_id), ledger.backoff(connector.key))
            return False
        finally:
            svc.metrics.sync_finished(kind, time.monotonic() - started, ok=synced)
        ledger.retry.reset(connector.key)
        status.state = FolderPhase.HELD if report.held else FolderPhase.IDLE
        status.last_success = time.time()
        ledger.health_tracker.succeeded(connector.key, "read", "internal")
        if report.failed:
            svc.queue.put_later((connector.relay_id, connector.folder_id), 5.0)
        return True


def _progress_logger(connector: Connector, every: float = 5.0) -> Callable[[int, int], None]:
    """Log a long full sync's progress at most every ``every`` seconds."""
    last = [time.monotonic()]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] >= every:
            last[0] = now
            log.info("full sync progress relay=%s folder=%s documents=%d/%d",
                     connector.relay_id, connector.folder_id, done, total)

    return report
