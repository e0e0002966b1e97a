"""Wiring: the one-shot sync of the CLI and the long-running service.

The long-running :class:`Service` (webhooks in, workers, commit timer, reconcile) lives
here too; see its docstring.  This module owns no sync logic of its own: it calls the
engine, gitrepo and the work queue in the right order and keeps their status.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from . import __version__
from .backoff import Backoff
from .config import Connector, ConnectorsConfig, Settings, load_connectors
from .engine import Engine, SyncAborted, SyncReport
from .gitrepo import GitError
from .health import HEALTH_FILE, Health, HealthTracker, iso_time
from .metrics import FolderView, Metrics, QueueView
from .preflight import check_config
from .publish import Publisher, PushOutcome, remote_spec
from .redact import redact, redact_url
from .relay import RelayClient, Unauthorized
from .schedule import CommitSchedule
from .service_errors import CredentialsError, DataDirInUse, ServiceError, ServiceUnavailable
from .state import DataDirBusy
from .transports import Transports
from .workqueue import JournalError, Lane, QueueClosed, WorkQueue

__all__ = [
    "CredentialsError",
    "DataDirInUse",
    "Service",
    "ServiceError",
    "ServiceUnavailable",
    "State",
    "SyncOutcome",
    "build_service",
    "open_engine",
    "sync_once",
]

log = logging.getLogger(__name__)

FOREIGN_TTL = 600.0  # seconds a document found in no synced folder is ignored
UNKNOWN_GRACE = 10.0  # seconds after the startup sync before an unknown document is foreign
BATCH_LIMIT = 255  # extra documents of one folder a worker takes along with its key
PUBLISHERS = 2  # threads committing and pushing: a slow push of one folder delays no other
STARTUP_SYNCS = 3  # connectors whose startup sync or reconcile runs at the same time


@dataclass
class SyncOutcome:
    lines: list[str] = field(default_factory=list)
    reports: list[SyncReport] = field(default_factory=list)
    ok: bool = True


def open_engine(settings: Settings, connectors: ConnectorsConfig | None = None, *,
                lock_timeout: float = 0.0, wrap_relay: Callable[[RelayClient], object] | None = None) -> Engine:
    """An engine with its Relay client, for the settings given.

    Args:
        wrap_relay: wraps the client the engine reads with (the service counts reads).

    Raises:
        ConfigError: the Relay URL/key are missing or git_connectors.toml is invalid.
        DataDirInUse: another process uses the data directory.
    """
    settings.require_relay()
    if connectors is None:
        connectors = load_connectors(settings.connectors_path)
    relay = RelayClient(
        settings.relay_server_url or "",
        settings.relay_server_api_key or "",
        timeout=settings.relay_timeout,
        retries=settings.relay_retries,
        pool_size=max(8, settings.fetch_concurrency * 2),
        max_update_bytes=settings.max_update_bytes,
        max_attachment_bytes=settings.max_attachment_bytes,
        allow_private_attachment_urls=settings.allow_private_attachment_urls,
    )
    try:
        return Engine(settings, wrap_relay(relay) if wrap_relay else relay, connectors,  # type: ignore[arg-type]
                      lock_timeout=lock_timeout)
    except DataDirBusy as exc:
        relay.close()
        raise DataDirInUse(str(exc)) from None


def sync_once(
    settings: Settings,
    *,
    selection: tuple[str, str] | None = None,
    confirm_deletions: bool = False,
    push: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SyncOutcome:
    """Sync the selected folder (or every connector), commit once per folder, push.

    A ``selection`` not in git_connectors.toml is synced as a local-only connector.

    Raises:
        CredentialsError: the Relay Server refused the API key.
        ServiceError: nothing is configured to sync.
        ConfigError: settings or git_connectors.toml are invalid.
    """
    settings.require_relay()
    config = Service.check(settings)  # connectors file and SSH key, before any work
    if selection is not None:
        connector = config.find(*selection) or Connector(relay_id=selection[0], folder_id=selection[1])
        targets = [connector]
        config = replace(
            config, connectors=tuple(config.connectors) + (() if config.find(*selection) else (connector,)))
    else:
        targets = list(config.connectors)
        if not targets:
            raise ServiceError(
                f"no connectors configured: add [[git_connector]] tables to {settings.connectors_path} "
                "or pass --relay-id and --folder-id"
            )
    engine = open_engine(settings, config)
    publisher = Publisher(settings, config)
    outcome = SyncOutcome()
    try:
        for connector in targets:
            try:
                report = engine.sync_folder(connector, full=True, confirm_deletions=confirm_deletions,
                                            progress=progress)
            except Unauthorized as exc:
                raise CredentialsError(str(exc)) from None
            except SyncAborted as exc:
                outcome.ok = False
                outcome.lines.append(f"{connector.name}: failed: {exc}")
                continue
            except Exception as exc:  # a bug: say so for this folder, carry on with the others
                log.exception("sync failed relay=%s folder=%s", connector.relay_id, connector.folder_id)
                outcome.ok = False
                outcome.lines.append(f"{connector.name}: failed: internal error: {exc}")
                continue
            report.commit = engine.commit(connector, report=report)
            outcome.reports.append(report)
            outcome.lines.append(report.summary())
            for path, reason in report.skipped:
                outcome.lines.append(f"  skipped {path}: {reason}")
            for path, reason in report.failed:
                outcome.lines.append(f"  failed {path}: {reason} (run sync again to retry)")
            if report.failed:
                outcome.ok = False
            if report.held:
                outcome.lines.append(
                    f"  held: {report.held}; to apply it: cli.py sync --relay-id {connector.relay_id} "
                    f"--folder-id {connector.folder_id} --confirm-deletions"
                )
            if push and connector.url:
                line, ok = push_connector(engine, connector, publisher)
                outcome.lines.append(line)
                outcome.ok = outcome.ok and ok
    finally:
        publisher.close()
        engine.close()
    return outcome


def push_connector(engine: Engine, connector: Connector, publisher: Publisher) -> tuple[str, bool]:
    """Push the connector's branch to its remote; returns a line for the operator."""
    result = publisher.push(engine, connector)
    where = redact_url(connector.url)
    if result.ok:
        return f"  push to {where} ({connector.branch}): {result.status}", True
    return f"  push to {where} ({connector.branch}) failed: {result.error}", False


def describe_connectors(settings: Settings, config: ConnectorsConfig) -> list[str]:
    """One line per connector: folder, remote, branch, prefix and host-key trust."""
    from . import gitrepo
    from .ssh import host_key_name, parse_known_hosts, read_known_hosts_file

    known = parse_known_hosts(read_known_hosts_file(settings.learned_hosts_path) + list(config.known_hosts))
    lines = []
    for connector in config.connectors:
        prefix = f" prefix={connector.prefix}" if connector.prefix else ""
        prefix += " commit_per_author=true" if connector.commit_per_author else ""
        line = f"{connector.name} branch={connector.branch}{prefix} remote="
        if not connector.url:
            lines.append(line + "(local only)")
            continue
        try:
            spec = remote_spec(settings, connector)
        except gitrepo.GitError as exc:
            lines.append(line + f"invalid: {exc}")
            continue
        trust = ""
        if spec.kind == "ssh":
            name = host_key_name(spec.host or "", spec.port)
            trusted = known.lookup(name) is not None
            trust = " host-key=" + ("trusted" if trusted else "UNKNOWN (add it to known_hosts)")
        lines.append(line + spec.display + trust)
    return lines


def check_remotes(settings: Settings, config: ConnectorsConfig):
    """Connect to each remote and read its branch; yields ``(line, ok)``."""
    publisher = Publisher(settings, config)
    try:
        for connector in config.connectors:
            if not connector.url:
                continue
            try:
                spec = publisher.spec(connector)
                head = publisher.remote_head(connector)
            except Exception as exc:
                yield f"{connector.name}: {redact_url(connector.url)}: {redact(str(exc), publisher.secrets)}", False
                continue
            state = f"{connector.branch} at {head[:10]}" if head else f"{connector.branch} absent (will be created)"
            yield f"{connector.name}: {spec.display}: reachable, {state}", True
    finally:
        publisher.close()


# --- the long-running service ---------------------------------------------------------


class State(StrEnum):
    STARTING = "starting"
    INITIAL_SYNC = "initial_sync"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class FolderStatus:
    """What /api/status shows per connector (failures and errors: :class:`HealthTracker`)."""

    state: str = "waiting"
    last_success: float | None = None
    last_commit: str | None = None
    push: PushOutcome | None = None
    unpushed: int | None = None


class Service:
    """Webhooks in, folders synced by a worker pool, commits every interval, pushes.

    Threads (all started by :meth:`start`, never at import or in ``create_app``):

    - ``worker-N``: take a key from the durable queue, sync that document or folder
      under the folder lock, mark the key done once the result is saved;
    - ``committer``: every ``commit_interval`` commit each dirty folder and push it;
    - ``reconciler``: the startup full sync of every connector, then a full sync every
      ``reconcile_interval`` (webhooks can be lost: the Relay Server never retries).

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
        self._threads: list[threading.Thread] = []
        self._status = {c.key: FolderStatus() for c in self.config.connectors}
        self._retry = Backoff()  # per queue key (and per connector for full syncs)
        self._foreign: dict[tuple[str, str], float] = {}  # docs of folders we do not sync
        self._unknown_since: dict[tuple[str, str], float] = {}  # docs waiting for an index
        self._refreshed: dict[str, float] = {}  # relay -> last folder refresh for an unknown doc
        self._counts = {"accepted": 0, "merged": 0, "ignored": 0, "processed": 0, "failed": 0,
                        "commits": 0, "pushes": 0}
        self._lock = threading.Lock()
        self._secrets = [*settings.secrets, *self.config.secrets]
        self._relays = {c.relay_id for c in self.config.connectors}
        self._unknown_relays: set[str] = set()  # relays whose ignored webhooks were logged
        self._wake = threading.Event()  # the reconciler has requested syncs to run
        self._requested: dict[tuple[str, str], bool] = {}  # POST /api/sync: key -> confirm deletions
        self._down_since: dict[tuple[str, str], float] = {}  # websocket seen not connected since
        # Websocket connectors: their sockets feed accept(); their startup, reconcile
        # and reconnects catch up by document heads (see transports.py).
        self.transports = Transports(settings, self.config, self.engine, self.queue,
                                     accept=self.accept, resync=self._full_sync)
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
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        """Start the threads (idempotent; safe to call again after a fork)."""
        if self.running:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._worker, name=f"worker-{n}", daemon=True)
            for n in range(self.settings.workers)
        ]
        self._threads += [
            threading.Thread(target=self._publisher, name=f"publisher-{n}", daemon=True)
            for n in range(PUBLISHERS)
        ]
        self._threads.append(threading.Thread(target=self._reconciler, name="reconciler", daemon=True))
        self._set_state(State.INITIAL_SYNC)
        self.transports.start()
        for thread in self._threads:
            thread.start()
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
        self._wake.set()
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._commit_and_push_all(final=True)
        self.publisher.close()
        self.engine.close()
        self.transports.close()
        self._set_state(State.STOPPED)
        log.info("service stopped")

    def _set_state(self, state: State) -> None:
        if self.state != state:
            log.info("service state changed from=%s to=%s", self.state.value, state.value)
            self.state = state

    # --- webhooks -------------------------------------------------------------------

    def accept(self, event: dict) -> dict:
        """Durably queue a validated webhook event; answered 202 by the web layer.

        Raises:
            ServiceUnavailable: shutting down or the journal is unwritable (answered 503).
        """
        relay_id, doc_id = event["relay_id"], event["doc_uuid"]
        if relay_id not in self._relays:
            with self._lock:
                self._counts["ignored"] += 1
                first = relay_id not in self._unknown_relays
                if first and len(self._unknown_relays) < 10_000:
                    self._unknown_relays.add(relay_id)
            # Once per relay: a Relay Server sending us another relay's events is a
            # configuration matter (its webhook prefix, or a missing connector).
            log.log(logging.WARNING if first else logging.DEBUG,
                    "webhook ignored, no connector for relay relay=%s doc=%s (add a [[git_connector]] "
                    "for it, or set this relay's webhook prefix on the Relay Server)", relay_id, doc_id)
            return {"status": "ignored", "reason": "no connector for this relay", "doc_id": event["doc_id"]}
        if self.state in (State.STOPPING, State.STOPPED):
            raise ServiceUnavailable("service is shutting down; not accepted")
        try:
            created = self.queue.put((relay_id, doc_id), lane=Lane.INTERACTIVE)
        except QueueClosed:
            raise ServiceUnavailable("service is shutting down; not accepted") from None
        except JournalError as exc:
            log.error("cannot journal a webhook, answering 503 doc=%s error=%s", doc_id, exc)
            self.health_tracker.note("journal", None, "cannot store webhooks durably: is the data "
                                     "directory writable and not full?")
            raise ServiceUnavailable(
                "cannot store the event durably (is the data directory writable and not full?)"
            ) from None
        self.health_tracker.note("journal", None, None)
        with self._lock:
            self._counts["accepted" if created else "merged"] += 1
        return {"status": "queued" if created else "merged", "doc_id": event["doc_id"]}

    # --- workers --------------------------------------------------------------------

    def _worker(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            batch = [key]
            try:
                found = self.engine.locate(*key)
                if found is not None and found[1] == "doc":
                    # Documents of the same folder queued meanwhile: one fetch round, one save.
                    folder = found[0].key
                    batch += self.queue.take_matching(
                        lambda k, folder=folder: (hit := self.engine.locate(*k)) is not None
                        and hit[1] == "doc" and hit[0].key == folder,
                        limit=BATCH_LIMIT,
                    )
                retry_in = self._process(batch, found)
            except Exception:  # a bug must not kill the worker; the keys are retried
                log.exception("unexpected error processing relay=%s doc=%s", *key)
                retry_in = dict.fromkeys(batch, 30.0)
            for item in batch:
                try:
                    if retry_in.get(item) is not None:
                        self.queue.put_later(item, retry_in[item])
                    self.queue.done(item)
                except Exception:  # closed while stopping: the journal keeps the key
                    pass

    def _backoff(self, key: tuple[str, str]) -> float:
        return self._retry.failure(key)

    def _process(self, batch: list[tuple[str, str]], found) -> dict[tuple[str, str], float | None]:
        """Sync what the keys name; returns per key a delay to retry after (None: done).

        ``batch`` is one key, or several documents of the folder ``found`` names.
        """
        if found is None:
            return {batch[0]: self._unknown_document(batch[0])}
        connector, what = found
        status = self._status.setdefault(connector.key, FolderStatus())
        # No folder lock here: the engine fetches outside it and writes under it, so a
        # long full sync of this folder does not hold this webhook back.
        started, synced = time.monotonic(), False
        try:
            status.state = "syncing"
            if what == "folder":
                report = self.engine.sync_folder(connector, full=False)
            else:
                report = self.engine.sync_docs(connector, [doc for _, doc in batch])
            synced = not report.failed
        except Unauthorized as exc:
            self._record_error(connector, f"relay refused the API key: {exc}", permanent=True)
            return dict.fromkeys(batch, 60.0)
        except SyncAborted as exc:
            self._record_error(connector, str(exc))
            return {key: self._backoff(key) for key in batch}
        except Exception as exc:  # a bug: keep the worker alive, say so in status, retry
            log.exception("unexpected error syncing relay=%s folder=%s", connector.relay_id, connector.folder_id)
            self._record_error(connector, f"internal error: {exc}", kind="internal")
            return {key: self._backoff(key) for key in batch}
        finally:
            self.metrics.sync_finished("interactive", time.monotonic() - started, ok=synced)
        with self._lock:
            self._counts["processed"] += len(batch)
        result: dict[tuple[str, str], float | None] = dict.fromkeys(batch)
        for doc in report.unknown:  # moved out of the folder meanwhile
            key = (connector.relay_id, doc)
            result[key] = self._unknown_document(key)
        if report.failed:
            self._record_error(connector, "; ".join(f"{p}: {r}" for p, r in report.failed[:3]))
            # Retrying documents that did not fail costs one fetch each: their update
            # hash is unchanged, so nothing is rewritten.
            for key in batch:
                if key[1] not in report.unknown:
                    result[key] = self._backoff(key)
            return result
        status.state = "held" if report.held else "idle"
        for key in batch:
            self._retry.reset(key)
            self._unknown_since.pop(key, None)
        status.last_success = time.time()
        self.health_tracker.succeeded(connector.key, "read", "internal")
        return result

    def _unknown_document(self, key: tuple[str, str]) -> float | None:
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
        if not self.initial_sync_done.is_set():
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
            for connector in self.config.connectors:
                if connector.relay_id == relay_id:
                    self.queue.put((relay_id, connector.folder_id))
        return 2.0

    def _record_error(self, connector: Connector, message: str, *, kind: str = "read",
                      permanent: bool = False) -> None:
        """Count a failure of the folder's ``kind`` of work (read, commit, internal)."""
        status = self._status.setdefault(connector.key, FolderStatus())
        status.state = "backing_off"
        error = redact(message, self._secrets)
        fails = self.health_tracker.failed(connector.key, kind, error, permanent=permanent)
        with self._lock:
            self._counts["failed"] += 1
        log.warning("sync failed, will retry relay=%s folder=%s fails=%d error=%s",
                    connector.relay_id, connector.folder_id, fails, error)

    # --- commit timer and reconcile -------------------------------------------------

    def _on_change(self, connector: Connector) -> None:
        self.schedule.changed(connector.key)

    def _publisher(self) -> None:
        """Commit and push folders as their schedule makes them due (leading edge, at
        most one commit per folder per interval). Several publishers run, and a folder
        whose lock is busy is tried again shortly: no folder waits on another."""
        sweep_at = time.monotonic() + self.settings.commit_interval
        while not self._stop.is_set():
            wait = self.schedule.seconds_to_next()
            self.schedule.wait(min(wait if wait is not None else 1.0, 1.0))
            if time.monotonic() >= sweep_at:
                # Changes made without a notification (a crash's leftovers, a catch-up)
                # and pushes waiting out a backoff are picked up here.
                sweep_at = time.monotonic() + self.settings.commit_interval
                for connector in self.config.connectors:
                    if self.engine.pending_paths(connector) or (
                            connector.url and self.publisher.due(connector)
                            and self.publisher.has_unpushed(self.engine, connector)):
                        self.schedule.changed(connector.key)
            for key in self.schedule.take_due():
                connector = self.config.find(*key)
                if connector is None:
                    self.schedule.committed(key, made=False)
                    continue
                lock = self.engine.lock(connector)
                if not lock.acquire(timeout=0.05):
                    self.schedule.retry(key, 0.25)  # a sync is writing: come back shortly
                    continue
                lock.release()
                made = False
                try:
                    made = self._commit_and_push(connector)
                except GitError as exc:  # e.g. a lock file someone holds: said plainly, retried
                    self._record_error(connector, f"commit failed: {exc}")
                except Exception as exc:  # one broken repository must not stop the others
                    log.exception("commit or push failed relay=%s folder=%s",
                                  connector.relay_id, connector.folder_id)
                    self._record_error(connector, f"commit or push failed: {exc}")
                finally:
                    self.schedule.committed(key, made=made)

    def _commit_and_push_all(self, *, final: bool = False) -> None:
        for connector in self.config.connectors:
            try:
                self._commit_and_push(connector, final=final)
            except GitError as exc:  # e.g. a lock file someone holds: said plainly, retried
                self._record_error(connector, f"commit failed: {exc}", kind="commit")
            except Exception as exc:  # one broken repository must not stop the others
                log.exception("commit or push failed relay=%s folder=%s",
                              connector.relay_id, connector.folder_id)
                self._record_error(connector, f"commit or push failed: {exc}", kind="commit")

    def _commit_and_push(self, connector: Connector, *, final: bool = False,
                         force_push: bool = False) -> bool:
        """Commit the folder's pending paths, then push (see :meth:`Publisher.publish`);
        True when a commit was made."""
        status = self._status.setdefault(connector.key, FolderStatus())
        done = self.publisher.publish(self.engine, connector, force_push=force_push, final=final)
        self.health_tracker.succeeded(connector.key, "commit")
        if done.commit:
            status.last_commit = done.commit
            self.metrics.committed(connector.key)
            with self._lock:
                self._counts["commits"] += 1
        if connector.url and (done.commit or done.push is not None or status.unpushed is None):
            status.unpushed = self._count_unpushed(connector)
        if done.push is None:
            return bool(done.commit)
        push = status.push = done.push
        sent = push.ok and push.status != "up-to-date"
        self.metrics.pushed(connector.key, ok=push.ok, sent=sent, permanent=push.permanent, at=push.at)
        if push.ok:
            self.health_tracker.succeeded(connector.key, "push")
        else:
            self.health_tracker.failed(connector.key, "push", push.error or "push failed", permanent=push.permanent)
        if sent:
            with self._lock:
                self._counts["pushes"] += 1
        return bool(done.commit)

    def _count_unpushed(self, connector: Connector) -> int | None:
        """Local commits the remote does not have yet (a local read, no network)."""
        from .gitrepo import count_unpushed

        try:
            with self.engine.repo_lock(connector):
                count = count_unpushed(self.engine.repo(connector), branch=connector.branch,
                                       remote_name=connector.remote_name)
        except Exception as exc:  # only a number for status and metrics
            log.debug("unpushed commits not counted relay=%s folder=%s error=%s",
                      connector.relay_id, connector.folder_id, exc)
            return None
        self.metrics.unpushed_commits(connector.key, count)
        return count

    def _reconciler(self) -> None:
        """The startup sync of every connector, then a reconcile every interval, and the
        full syncs asked for through :meth:`request_full_sync`.

        Connectors are synced ``STARTUP_SYNCS`` at a time: a large folder does not hold
        back the startup of the others (their fetches share the bulk lane)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(STARTUP_SYNCS, thread_name_prefix="startup") as pool:
            failed = sum(not ok for ok in pool.map(self._startup_sync, self.config.connectors))
        if self._stop.is_set():
            return
        self.initial_sync_done.set()
        self.transports.startup_done()
        if self.state == State.INITIAL_SYNC:
            self._set_state(State.RUNNING)
        log.log(logging.WARNING if failed else logging.INFO, "initial sync complete folders=%d failed=%d",
                len(self.config.connectors), failed)
        interval = self.settings.reconcile_interval
        next_due = time.monotonic() + interval if interval > 0 else None
        while not self._stop.is_set():
            wait = None if next_due is None else max(0.0, next_due - time.monotonic())
            self._wake.wait(wait)
            if self._stop.is_set():
                return
            self._run_requested()
            if next_due is not None and time.monotonic() >= next_due:
                with ThreadPoolExecutor(STARTUP_SYNCS, thread_name_prefix="reconcile") as pool:
                    list(pool.map(lambda c: self._guarded_sync(c, "reconcile"), self.config.connectors))
                next_due = time.monotonic() + interval

    def _startup_sync(self, connector: Connector) -> bool:
        """One connector's startup: commit a crash's leftovers, adopt the remote, full sync."""
        if self._stop.is_set():
            return True
        try:
            self.engine.drop_torn_writes(connector)
            if connector.url:
                # Commit what a crash left uncommitted, then start from the remote's
                # history (adopted into an empty repository, or our unpushed commits
                # rebuilt on it) so the first sync builds on top of it.
                self._commit_and_push(connector, force_push=True)
            return self._full_sync(connector, kind="startup")
        except Exception as exc:  # the other connectors still get their startup sync
            log.exception("startup sync failed relay=%s folder=%s", connector.relay_id, connector.folder_id)
            self._record_error(connector, f"startup sync failed: {exc}", kind="internal")
            return False

    def _guarded_sync(self, connector: Connector, kind: str, *, confirm_deletions: bool = False) -> None:
        try:
            self._full_sync(connector, kind=kind, confirm_deletions=confirm_deletions)
        except Exception as exc:
            log.exception("%s sync failed relay=%s folder=%s", kind, connector.relay_id, connector.folder_id)
            self._record_error(connector, f"{kind} sync failed: {exc}", kind="internal")

    def _run_requested(self) -> None:
        """Run the full syncs asked for through :meth:`request_full_sync`."""
        with self._lock:
            self._wake.clear()
            requested, self._requested = self._requested, {}
        for connector in self.config.connectors:
            if connector.key in requested and not self._stop.is_set():
                self._guarded_sync(connector, "manual", confirm_deletions=requested[connector.key])

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
        with self._lock:
            for connector in targets:
                self._requested[connector.key] = self._requested.get(connector.key, False) or confirm_deletions
        self._wake.set()
        log.info("full sync requested folders=%d confirm_deletions=%s", len(targets), confirm_deletions)
        return targets

    def _full_sync(self, connector: Connector, *, kind: str = "reconcile", confirm_deletions: bool = False) -> bool:
        """Startup, reconcile or requested sync of one connector: a full sync, or for a
        connector with a websocket (except when requested) a catch-up by document heads,
        also run after each reconnect. Returns True when the folder could be read."""
        status = self._status.setdefault(connector.key, FolderStatus())
        status.state = "initial_sync" if kind == "startup" else "reconciling"
        started, synced = time.monotonic(), False
        try:
            if self.transports.listens(connector) and kind != "manual":
                report = self.transports.catch_up(connector, progress=_progress_logger(connector))
            else:
                report = self.engine.sync_folder(connector, full=True, confirm_deletions=confirm_deletions,
                                                 progress=_progress_logger(connector))
            synced = not report.failed
        except (SyncAborted, Unauthorized) as exc:
            refused = isinstance(exc, Unauthorized)
            self._record_error(connector, f"relay refused the API key: {exc}" if refused else str(exc),
                               permanent=refused)
            # retried by the work queue with backoff, like a folder webhook
            self.queue.put_later((connector.relay_id, connector.folder_id), self._backoff(connector.key))
            return False
        except Exception as exc:
            log.exception("full sync crashed relay=%s folder=%s", connector.relay_id, connector.folder_id)
            self._record_error(connector, f"internal error: {exc}", kind="internal")
            self.queue.put_later((connector.relay_id, connector.folder_id), self._backoff(connector.key))
            return False
        finally:
            self.metrics.sync_finished(kind, time.monotonic() - started, ok=synced)
        self._retry.reset(connector.key)
        status.state = "held" if report.held else "idle"
        status.last_success = time.time()
        self.health_tracker.succeeded(connector.key, "read", "internal")
        if report.failed:
            self.queue.put_later((connector.relay_id, connector.folder_id), 5.0)
        return True

    # --- reporting ------------------------------------------------------------------

    def _observe_conditions(self) -> None:
        """Note what health reads from outside the failure streaks: held deletions and
        websockets that are refused or have stayed down."""
        now = time.time()
        tracker = self.health_tracker
        for connector in self.config.connectors:
            key = connector.key
            held = self.engine.folder_state(connector).held
            tracker.note("held_deletion", key,
                         f"mass deletion held: {held.get('count')} file(s), {held.get('reason')}" if held else None)
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
            st = self._status.get(connector.key, FolderStatus())
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
                "state": st.state,
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
                "held_deletion": ({k: iso_time(v) if k == "since" else v for k, v in dict(held).items()
                                   if k != "docs"} if (held := fstate.held) else None),
                "push": push,
                "left_out": [{"path": path, "reason": reason} for path, reason in self.engine.left_out(connector)],
                "transport": transport,
                "authorship": self.engine.attribution.counts(connector),
            })
        with self._lock:
            counts = dict(self._counts)
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
            held = self.engine.folder_state(connector).held
            transport = self.transports.status(connector)
            views.append(FolderView(
                connector.relay_id, connector.folder_id,
                held_files=int(held.get("count") or 0) if held else 0,
                failures=self.health_tracker.folder(connector.key).failures,
                websocket=transport if "state" in transport else None,
            ))
        return views

    def public_key(self) -> tuple[str, str] | None:
        return self.publisher.public_key()


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


def build_service(settings: Settings) -> Service:
    """The service for ``wsgi.py`` (not started: gunicorn's worker hook starts it).

    Raises:
        ConfigError: the Relay settings are missing, or git_connectors.toml or the SSH
            key is invalid.
    """
    settings.require_relay()
    return Service(settings)
