"""The long-running service: lifecycle and wiring.

:class:`Service` opens the engine, the publisher, the durable queue and the transports,
makes the loops of :mod:`gitsync.loops` (workers, publishers, reconciler) and runs them:
start, drain and stop, accept webhook events, report health and status. It owns no sync
logic: the loops call the engine and the publisher, the one-shot work of the command
line is in :mod:`gitsync.oneshot`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from enum import StrEnum

from . import __version__
from .config import Connector, ConnectorsConfig, Settings
from .events import Accepted, WebhookEvent
from .health import HEALTH_FILE, Health, HealthTracker, iso_time
from .intake import Intake
from .loops import Ledger, Publishers, Reconciler, Workers
from .metrics import FolderView, Metrics, QueueView
from .oneshot import check_config, open_engine
from .publish import Publisher
from .redact import redact_url
from .schedule import CommitSchedule
from .service_errors import CredentialsError, DataDirInUse, ServiceError, ServiceUnavailable
from .transports import Transports
from .workqueue import WorkQueue

__all__ = [
    "CredentialsError",
    "DataDirInUse",
    "Service",
    "ServiceError",
    "ServiceUnavailable",
    "State",
    "build_service",
]

log = logging.getLogger(__name__)

PUBLISHERS = 2  # threads committing and pushing: a slow push of one folder delays no other


# --- the long-running service ---------------------------------------------------------


class State(StrEnum):
    STARTING = "starting"
    INITIAL_SYNC = "initial_sync"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Service:
    """Webhooks in, folders synced by a worker pool, commits every interval, pushes.

    The loops (all started by :meth:`start`, never at import or in ``create_app``; see
    :mod:`gitsync.loops`):

    - :class:`~gitsync.loops.Workers` (``worker-N``): take a key from the durable queue,
      sync that document or folder, mark the key done once the result is saved;
    - :class:`~gitsync.loops.Publishers` (``publisher-N``): commit each folder as its
      schedule makes it due, and push it;
    - :class:`~gitsync.loops.Reconciler` (``reconciler``): the startup full sync of every
      connector, then a full sync every ``reconcile_interval`` (webhooks can be lost:
      the Relay Server never retries), and the full syncs asked for.

    A crash loses nothing accepted: keys stay in the journal until their effects are in
    the saved state, and saved state lists the paths still to commit.
    """

    def __init__(self, settings: Settings, connectors: ConnectorsConfig | None = None, *,
                 queue: WorkQueue | None = None, metrics: Metrics | None = None):
        """``queue`` and ``metrics``: the ones a :class:`gitsync.starter.ServiceStarter`
        opened and served webhooks with while this service opened."""
        if metrics is None:  # else the starter that made the metrics has said so
            log.info("relay-git-sync %s starting pid=%d data_dir=%s", __version__, os.getpid(), settings.data_dir)
        self.settings = settings
        self.config = connectors if connectors is not None else self.check(settings)
        self.metrics = metrics if metrics is not None else Metrics()
        self.health_tracker = HealthTracker(settings.data_dir / "state" / HEALTH_FILE, grace=settings.health_grace)
        folder_docs = {f"{c.relay_id}-{c.folder_id}" for c in self.config.connectors}
        # A gunicorn worker replacing another waits for it to let go of the data dir.
        self.engine = open_engine(settings, self.config, lock_timeout=60.0,
                                  wrap_relay=lambda relay: self.metrics.instrument(relay, lambda: folder_docs))
        self.publisher = Publisher(settings, self.config)
        self.schedule = CommitSchedule(settings.commit_interval)
        self.engine.on_change = self._on_change
        # A document's first webhook is fetched at once; later ones within `debounce`
        # seconds of that fetch's start merge into one more fetch at the interval's end.
        self.queue = queue if queue is not None else WorkQueue(
            settings.queue_dir / "journal.jsonl", min_interval=settings.debounce)
        self.state = State.STARTING
        self.initial_sync_done = threading.Event()
        self._stop = threading.Event()
        self.ledger = Ledger(self.config, self.health_tracker, [*settings.secrets, *self.config.secrets])
        self.workers = Workers(self, self._stop, settings.workers)
        self.publishers = Publishers(self, self._stop, PUBLISHERS)
        self.reconciler = Reconciler(self, self._stop, on_startup_done=self._startup_done)
        self._lock = threading.Lock()
        self.intake = Intake((c.relay_id for c in self.config.connectors), self.ledger.count,
                             on_journal=lambda problem: self.health_tracker.note("journal", None, problem))
        self._down_since: dict[tuple[str, str], float] = {}  # websocket seen not connected since
        # Websocket connectors: their sockets feed accept(); their startup, reconcile
        # and reconnects catch up by document heads (see transports.py).
        self.transports = Transports(settings, self.config, self.engine, self.queue,
                                     accept=self.accept, resync=self.reconciler.full_sync)
        self.metrics.connectors([c.key for c in self.config.connectors],
                                with_remote=[c.key for c in self.config.connectors if c.url])
        self.metrics.observe(queue=self._queue_view, folders=self._folder_views)

    @staticmethod
    def check(settings: Settings) -> ConnectorsConfig:
        """Validate what the service needs before any thread or process starts.

        Raises:
            ConfigError: git_connectors.toml or SSH_PRIVATE_KEY is invalid.
        """
        return check_config(settings)

    # --- lifecycle ------------------------------------------------------------------

    @property
    def loops(self) -> tuple[Workers, Publishers, Reconciler]:
        return self.workers, self.publishers, self.reconciler

    @property
    def threads(self) -> list[threading.Thread]:
        """Every loop's threads (of the last start)."""
        return [thread for loop in self.loops for thread in loop.threads]

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def start(self) -> None:
        """Start the threads (idempotent; safe to call again after a fork)."""
        if self.running:
            return
        self._stop.clear()
        self._set_state(State.INITIAL_SYNC)
        self.transports.start()
        for loop in self.loops:
            loop.start()
        log.info("service started workers=%d connectors=%d commit_interval=%ss",
                 self.settings.workers, len(self.config.connectors), self.settings.commit_interval)

    def stop(self, timeout: float = 25.0) -> None:
        """Drain the queue, make the final commits and pushes, then stop every thread.

        Work not finished within ``timeout`` stays in the journal for the next start.
        """
        if self.state in (State.STOPPING, State.STOPPED):
            return
        deadline = time.monotonic() + timeout
        self._set_state(State.STOPPING)
        self.transports.stop()  # no new events; the next start catches up by heads
        self.queue.expedite()  # work waiting for its interval or a retry is drained too
        drained = self.queue.wait_idle(timeout=max(0.0, timeout * 0.6))
        if not drained:
            log.warning("stopping with work still queued; it resumes on the next start "
                        "pending=%d", self.queue.pending_count)
        self._stop.set()
        self.reconciler.wake()
        self.queue.close()
        for loop in self.loops:
            loop.join(deadline)
        self.publishers.commit_and_push_all(final=True)
        self.publisher.close()
        self.engine.close()
        self.transports.close()
        self._set_state(State.STOPPED)
        log.info("service stopped")

    def _set_state(self, state: State) -> None:
        if self.state != state:
            log.info("service state changed from=%s to=%s", self.state.value, state.value)
            self.state = state

    def _startup_done(self) -> None:
        """The reconciler ended the startup sync of every connector."""
        self.initial_sync_done.set()
        self.transports.startup_done()
        if self.state == State.INITIAL_SYNC:
            self._set_state(State.RUNNING)

    # --- webhooks -------------------------------------------------------------------

    def accept(self, event: WebhookEvent) -> Accepted:
        """Durably queue a webhook event; the web layer answers 202 (200 when ignored).

        Raises:
            ServiceUnavailable: shutting down or the journal is unwritable (answered 503).
        """
        return self.intake.accept(self.queue, event, closing=self.state in (State.STOPPING, State.STOPPED))

    def _on_change(self, connector: Connector) -> None:
        self.schedule.changed(connector.key)

    def request_full_sync(self, selection: tuple[str, str] | None = None, *,
                          confirm_deletions: bool = False) -> list[Connector]:
        """Queue a full sync of one connector (or all) on the reconciler thread.

        Runs after the startup sync; a websocket connector gets a real full sync, not a
        catch-up by heads. ``confirm_deletions`` applies a held mass deletion.

        Returns:
            The connectors queued.

        Raises:
            NotConfigured: no connector syncs ``selection``.
            ServiceUnavailable: the service is stopping.
        """
        from .service_errors import NotConfigured

        if self.state in (State.STOPPING, State.STOPPED):
            raise ServiceUnavailable("service is shutting down; not queued")
        if selection is not None:
            connector = self.config.find(*selection)
            if connector is None:
                raise NotConfigured(f"no connector for relay {selection[0]} folder {selection[1]} "
                                    f"in {self.settings.connectors_path}")
            targets = [connector]
        else:
            targets = list(self.config.connectors)
        self.reconciler.request(targets, confirm_deletions=confirm_deletions)
        log.info("full sync requested folders=%d confirm_deletions=%s", len(targets), confirm_deletions)
        return targets

    # --- reporting ------------------------------------------------------------------

    def _observe_conditions(self) -> None:
        """Note what health reads from outside the failure streaks: held deletions and
        websockets that are refused or have stayed down."""
        now = time.time()
        tracker = self.health_tracker
        for connector in self.config.connectors:
            key = connector.key
            held = self.engine.folder_state(connector).held_deletion
            tracker.note("held_deletion", key,
                         f"mass deletion held: {held.count} file(s), {held.reason}" if held else None)
            transport = self.transports.status(connector)
            state = transport.get("state")
            if state is None or state == "connected":
                self._down_since.pop(key, None)
                tracker.note("websocket", key, None)
                continue
            if state == "stopped":
                continue
            since = self._down_since.setdefault(key, now)
            error = transport.get("last_error") or f"websocket {state}"
            tracker.note("websocket", key, error, permanent=state == "unauthorized", since=since)

    def health(self) -> dict:
        """``/health``: ``status`` is ok, degraded (with reasons) or unhealthy (answered 503)."""
        self._observe_conditions()
        verdict, reasons = self.health_tracker.evaluate([c.key for c in self.config.connectors])
        if self.state in (State.STOPPING, State.STOPPED) and verdict == Health.OK:
            verdict = Health.DEGRADED
        body = {
            "status": verdict.value,
            "version": __version__,
            "state": self.state.value,
            "initial_sync": "done" if self.initial_sync_done.is_set() else "running",
            "queue": self.queue.pending_count if not self.queue.closed else 0,
        }
        if reasons:
            body["reasons"] = [r.as_dict() for r in reasons]
        return body

    def status(self) -> dict:
        """``/api/status``: per folder state, failures, errors, push and transport; times in ISO 8601."""
        folders = []
        for connector in self.config.connectors:
            st = self.ledger.peek(connector.key)
            fstate = self.engine.folder_state(connector)
            health = self.health_tracker.folder(connector.key)
            transport = self.transports.status(connector)
            for name in ("connected_since", "last_event", "last_error_at"):
                if name in transport:
                    transport[name] = iso_time(transport[name])
            push = st.push.as_status() if st.push else None
            if push is not None:
                push["at"] = iso_time(push["at"])
            folders.append({
                "relay_id": connector.relay_id,
                "folder_id": connector.folder_id,
                "remote": redact_url(connector.url) if connector.url else None,
                "branch": connector.branch,
                "prefix": connector.prefix,
                "state": st.state.value,
                "last_success": iso_time(st.last_success),
                "last_sync": iso_time(fstate.last_sync),
                "failures": health.failures,
                "last_error": health.last_error,
                "last_error_at": iso_time(health.last_error_at),
                "problems": [{"kind": p.kind, "error": p.error, "since": iso_time(p.since),
                              "failures": p.failures, "permanent": p.permanent} for p in health.problems],
                "last_commit": st.last_commit,
                # list()/dict() copy in one step: workers change these while we read
                "files": sum(1 for r in list(fstate.files.values()) if r.type != "folder"),
                "uncommitted_paths": len(fstate.dirty),
                "unpushed_commits": st.unpushed if connector.url else None,
                "held_deletion": ({"reason": held.reason, "since": iso_time(held.since), "count": held.count}
                                  if (held := fstate.held_deletion) else None),
                "push": push,
                "left_out": [{"path": path, "reason": reason} for path, reason in self.engine.left_out(connector)],
                "transport": transport,
                "authorship": self.engine.attribution.counts(connector),
            })
        counts = self.ledger.counts()
        # committed changes (paths) credited to a relay user, or to nobody (service identity)
        counts["changes_attributed"] = sum(f["authorship"]["attributed"] for f in folders)
        counts["changes_unattributed"] = sum(f["authorship"]["unattributed"] for f in folders)
        health = self.health()
        return {
            "version": __version__,
            "state": self.state.value,
            "health": health["status"],
            "health_reasons": health.get("reasons", []),
            "initial_sync": "done" if self.initial_sync_done.is_set() else "running",
            "queue": ({k: v for k, v in self.queue.snapshot().items() if k != "journal"}
                      | {"oldest_age_seconds": round(self.queue.oldest_age(), 1)}
                      if not self.queue.closed else {}),
            "counts": counts,
            "loops": {name: state for loop in self.loops for name, state in loop.states().items()},
            "folders": folders,
        }

    def _queue_view(self) -> QueueView:
        if self.queue.closed:
            return QueueView()
        snap = self.queue.snapshot()
        return QueueView(pending=snap["pending"], in_progress=snap["in_progress"], deferred=snap["deferred"],
                         oldest_age=self.queue.oldest_age())

    def _folder_views(self) -> list[FolderView]:
        views = []
        for connector in self.config.connectors:
            held = self.engine.folder_state(connector).held_deletion
            transport = self.transports.status(connector)
            views.append(FolderView(
                connector.relay_id, connector.folder_id,
                held_files=held.count if held else 0,
                failures=self.health_tracker.folder(connector.key).failures,
                websocket=transport if "state" in transport else None,
            ))
        return views

    def public_key(self) -> tuple[str, str] | None:
        return self.publisher.public_key()


def build_service(settings: Settings) -> Service:
    """The service for ``wsgi.py`` (not started: gunicorn's worker hook starts it).

    Raises:
        ConfigError: the Relay settings are missing, or git_connectors.toml or the SSH
            key is invalid.
    """
    settings.require_relay()
    return Service(settings)
