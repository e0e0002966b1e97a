"""How the service hears of changes: per connector, webhooks, a folder websocket, or both.

Webhooks arrive through the web layer. For connectors on the websocket transport this
module keeps one :class:`~gitsync.wsclient.FolderSocket` each and feeds its events to
the same durable work queue as webhooks (through ``Service.accept``), so coalescing,
batching, commits and pushes are shared.

It also owns the websocket connectors' catch-up, used at startup, at each reconcile and
after every reconnect: instead of fetching every document, ask the socket for every
known document's head, queue only the documents whose head changed since the heads
stored last time, and re-read the folder document (always). The first catch-up of a
connector (no heads stored yet) asks for the heads *before* a full sync, so that even
the first restart afterwards is cheap. When heads cannot be had (socket down, an older
server that does not answer them) the catch-up is a full sync, as in webhook mode.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from functools import partial

from . import ydoc
from .config import Connector, ConnectorsConfig, Settings, resolve_transport
from .engine import SyncAborted, SyncReport
from .events import WebhookEvent
from .heads import HEADS_FILE, HeadStore, docs_to_fetch
from .ids import InvalidId, compound_id, parse_compound_id
from .relay import RelayError
from .service_errors import ServiceUnavailable
from .wsclient import FolderSocket, HeadsUnavailable
from .yframes import Event, Head

__all__ = ["Transports"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
CONNECT_WAIT = 15.0  # seconds a startup catch-up waits for the first connection attempt
_CONTENT_KINDS = ("text", "canvas")  # documents with a Yjs head; attachments have none


class _Background:
    """Run one call on a thread of its own; :meth:`result` joins it and returns or raises."""

    def __init__(self, call: Callable[[], SyncReport]):
        self._call = call
        self._value: SyncReport | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="folder-read", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self, *, swallow: bool = False) -> SyncReport:
        self._thread.join()
        if self._error is not None and not swallow:
            raise self._error
        return self._value  # type: ignore[return-value]


class Transports:
    """The sockets of the websocket connectors and their catch-ups.

    Args:
        settings: relay URL and key, data directory.
        config: the connectors.
        engine: reads folder state and syncs folders.
        queue: the service's durable work queue.
        accept: ``Service.accept``: takes a :class:`~gitsync.events.WebhookEvent`.
        resync: runs a connector's guarded catch-up (the service's status and retry
            handling around :meth:`catch_up`); called after every reconnect once the
            startup sync is done.
        socket_options: extra :class:`FolderSocket` arguments (backoff, timeouts).
    """

    def __init__(self, settings: Settings, config: ConnectorsConfig, engine, queue,
                 accept: Callable[[dict], dict], resync: Callable[[Connector], None],
                 socket_options: dict | None = None):
        self.settings = settings
        self.engine = engine
        self.queue = queue
        self._accept, self._resync = accept, resync
        self.modes = {c.key: resolve_transport(c, settings) for c in config.connectors}
        self._connectors = {c.key: c for c in config.connectors}
        self.sockets: dict[tuple[str, str], FolderSocket] = {}
        for connector in config.connectors:
            if self.modes[connector.key] in ("websocket", "both"):
                self.sockets[connector.key] = FolderSocket(
                    settings.relay_server_url or "", settings.relay_server_api_key or "",
                    connector.relay_id, connector.folder_id,
                    on_event=partial(self._on_event, connector),
                    on_connect=partial(self._on_connect, connector),
                    **(socket_options or {}),
                )
        self.heads = HeadStore(settings.data_dir / "state" / HEADS_FILE) if self.sockets else None
        self._stop = threading.Event()
        self._ready = threading.Event()  # the startup sync is done: reconnects catch up
        self._cond = threading.Condition()
        self._pending: set[tuple[str, str]] = set()
        self._locks = {key: threading.Lock() for key in self.sockets}
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def listens(self, connector: Connector) -> bool:
        """True when the connector has a websocket (``websocket`` or ``both``)."""
        return connector.key in self.sockets

    def start(self) -> None:
        if not self.sockets or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        for sock in self.sockets.values():
            sock.start()
        self._thread = threading.Thread(target=self._catch_up_loop, name="catch-up", daemon=True)
        self._thread.start()

    def startup_done(self) -> None:
        """From now on every reconnect is followed by a catch-up."""
        self._ready.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the sockets and end the catch-up thread (idempotent)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for sock in self.sockets.values():
            sock.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        if self.heads is not None:
            self.heads.close()

    def status(self, connector: Connector) -> dict:
        """``{"mode": ...}`` plus, for a websocket, the socket's status."""
        out: dict = {"mode": self.modes.get(connector.key, "webhook")}
        sock = self.sockets.get(connector.key)
        if sock is not None:
            out.update(sock.status().as_dict())
        return out

    # -- events -------------------------------------------------------------------------

    def _on_event(self, connector: Connector, doc_id: str, event: Event) -> None:
        try:
            cid = parse_compound_id(doc_id)
        except InvalidId:
            log.debug("websocket event for a non-document id ignored relay=%s folder=%s",
                      connector.relay_id, connector.folder_id)
            return
        if cid.relay_id != connector.relay_id:
            return
        try:
            self._accept(WebhookEvent(str(cid), cid.relay_id, cid.doc_id))
        except ServiceUnavailable:
            if self._stop.is_set():
                return  # stopping: the next start's catch-up covers it
            raise  # the socket reconnects; the catch-up after it covers the event

    def _on_connect(self, connector: Connector) -> None:
        with self._cond:
            self._pending.add(connector.key)
            self._cond.notify_all()

    def _catch_up_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._stop.is_set() and not (self._ready.is_set() and self._pending):
                    self._cond.wait(1.0)
                if self._stop.is_set():
                    return
                key = self._pending.pop()
            try:
                self._resync(self._connectors[key])
            except Exception:  # the service records its own errors; never die
                log.exception("catch-up after reconnect failed relay=%s folder=%s", *key)

    # -- catch-up -----------------------------------------------------------------------

    def catch_up(self, connector: Connector, *, progress: Progress | None = None) -> SyncReport:
        """Bring a websocket connector up to date with as few fetches as heads allow.

        Re-reads the folder (the folder document is always read), queues the documents
        whose head changed, and stores the new heads. Falls back to a full sync when
        heads cannot be had.

        Raises:
            SyncAborted: the folder cannot be read, or the service is stopping.
            relay.Unauthorized: the Relay Server refused the API key.
        """
        key = connector.key
        sock = self.sockets[key]
        assert self.heads is not None
        with self._locks[key]:
            connected = sock.wait_attempted(CONNECT_WAIT)
            with self._cond:
                self._pending.discard(key)  # this catch-up covers every connect so far
            if self._stop.is_set():
                raise SyncAborted("service is stopping")
            if not connected:
                log.info("websocket not connected, full sync instead relay=%s folder=%s",
                         connector.relay_id, connector.folder_id)
                return self.engine.sync_folder(connector, full=True, progress=progress)
            try:
                stored = self.heads.get_many(key)
            except Exception as exc:  # an unreadable store only costs fetches
                log.warning("stored heads unreadable, treating all as changed relay=%s folder=%s "
                            "error=%s", connector.relay_id, connector.folder_id, exc)
                stored = {}
            try:
                if stored:
                    return self._incremental(connector, sock, stored, progress)
                return self._seed(connector, sock, progress)
            except HeadsUnavailable as exc:
                if self._stop.is_set():
                    raise SyncAborted("service is stopping") from None
                log.info("document heads unavailable, full sync instead relay=%s folder=%s "
                         "reason=%s", connector.relay_id, connector.folder_id, exc)
                return self.engine.sync_folder(connector, full=True, progress=progress)

    def _content_docs(self, connector: Connector) -> list[str]:
        state = self.engine.folder_state(connector)
        return [doc_id for doc_id, rec in list(state.files.items())
                if ydoc.Entry(path=rec.path, id=doc_id, type=rec.type, hash=rec.hash).kind
                in _CONTENT_KINDS]

    def _ask(self, connector: Connector, sock: FolderSocket, doc_ids: Iterable[str]) -> dict[str, Head]:
        """doc id -> head. The server indexes heads by compound id, but entries its
        offline backfill made are keyed by the bare document UUID: documents without an
        answer are asked again that way (one more round trip only when some lack one)."""
        guids = {compound_id(connector.relay_id, d): d for d in doc_ids}
        found = {guids[g]: head for g, head in sock.heads(list(guids)).items()}
        missing = [d for d in guids.values() if d not in found]
        if missing:
            found.update(sock.heads(missing))
        return found

    def _incremental(self, connector: Connector, sock: FolderSocket, stored: dict[str, bytes],
                     progress: Progress | None) -> SyncReport:
        """Heads of the known documents, queue the changed ones; the folder is re-read
        meanwhile (that read fetches only new documents, never a known one, so it may
        run while the heads are asked)."""
        known = self._content_docs(connector)
        folder = _Background(lambda: self.engine.sync_folder(connector, full=False, progress=progress))
        try:
            answered = self._ask(connector, sock, known)
        except BaseException:
            folder.result(swallow=True)  # never two syncs of one folder at once
            raise
        changed = docs_to_fetch(known, stored, answered)
        for doc_id in changed:
            self.queue.put((connector.relay_id, doc_id))  # durable before the heads below
        assert self.heads is not None
        fresh = {d: answered[d] for d in known
                 if d in answered and stored.get(d) != answered[d].snapshot}
        self.heads.put_many(connector.key, fresh)
        gone = set(stored) - set(known)
        if gone:
            self.heads.forget(connector.key, gone)
        log.info("heads catch-up relay=%s folder=%s documents=%d changed=%d unanswered=%d",
                 connector.relay_id, connector.folder_id, len(known), len(changed),
                 len(known) - len(answered))
        return folder.result()

    def _seed(self, connector: Connector, sock: FolderSocket,
              progress: Progress | None) -> SyncReport:
        """No heads stored yet: ask for the index's documents' heads, then a full sync,
        then store the heads of what that sync settled."""
        ids = set(self._content_docs(connector))
        try:
            update = self.engine.relay.get_update(compound_id(connector.relay_id, connector.folder_id))
            ids.update(e.id for e in ydoc.read_folder(update).values() if e.kind in _CONTENT_KINDS)
        except (RelayError, ydoc.CorruptUpdate) as exc:
            log.debug("folder index not pre-read relay=%s folder=%s error=%s",
                      connector.relay_id, connector.folder_id, exc)  # the sync reports it
        answered = self._ask(connector, sock, ids)
        report = self.engine.sync_folder(connector, full=True, progress=progress)
        failed = {path for path, _ in report.failed}
        state = self.engine.folder_state(connector)
        settled = {doc_id: answered[doc_id] for doc_id, rec in list(state.files.items())
                   if doc_id in answered and rec.path not in failed}
        assert self.heads is not None
        self.heads.put_many(connector.key, settled)
        log.info("document heads recorded relay=%s folder=%s documents=%d",
                 connector.relay_id, connector.folder_id, len(settled))
        return report
