"""One shared folder's websocket to the Relay Server: live events and document heads.

Why: a service that cannot accept inbound webhooks (home servers, NAT, locked-down
networks) can still follow a folder live over an outbound websocket, and the same
socket answers "what is every document's current head" in batches of 100, which makes
restarts and reconciles cost a handful of round trips instead of one fetch per document.

:class:`FolderSocket` keeps one socket open from its own thread:

- connects to ``{base}/d/{relay}-{folder}/ws/{relay}-{folder}?token=<api key>``
  (``wss://`` for ``https://``); the URL is never logged with its token;
- answers the server's sync step 1 with an empty step 2 (a silent reader writes
  nothing, which also works for read-only keys), subscribes to ``document.updated``
  and hands each event to ``on_event(doc_id, event)``;
- answers nothing else, ignores message tags it does not know, and closes and
  reconnects on a malformed frame;
- reconnects with capped exponential backoff and jitter; a refused key (HTTP 401/403
  before the upgrade) cannot heal by itself, so it says so in the status and retries
  only every few minutes;
- pings (websockets keepalive): a connection silent past the ping timeout is dropped
  and reconnected;
- :meth:`FolderSocket.heads` asks the live socket for document heads (from any thread
  but the socket's own).

``on_connect`` runs on the socket thread after every (re)connect, once the subscription
is sent: it must return quickly (schedule a catch-up elsewhere; calling :meth:`heads`
from it would wait on itself).
"""

from __future__ import annotations

import logging
import queue
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from . import yframes
from .ids import compound_id
from .redact import redact

__all__ = [
    "FolderSocket",
    "HeadsUnavailable",
    "SocketStatus",
    "TransportState",
    "redact_token",
    "socket_url",
]

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024  # a heads answer for 100 busy documents can be large
HEADS_WINDOW = 8  # heads queries in flight at once
_TOKEN_QUERY = re.compile(r"(?i)([?&]token=)[^&\s'\"]*")


def redact_token(text: str) -> str:
    """``...?token=secret`` -> ``...?token=REDACTED`` anywhere in ``text``."""
    return _TOKEN_QUERY.sub(r"\1REDACTED", text)


class _RedactToken(logging.Filter):
    """The websockets library logs the request line (with our token) at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_token(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_token(a) if isinstance(a, str) else a for a in record.args)
        return True


_WIRE_LOG = logging.getLogger(__name__ + ".wire")
_WIRE_LOG.addFilter(_RedactToken())


class TransportState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    UNAUTHORIZED = "unauthorized"
    STOPPED = "stopped"


class HeadsUnavailable(Exception):
    """No heads answer: the socket is not connected, closed meanwhile, or timed out."""


@dataclass(frozen=True)
class SocketStatus:
    """A snapshot for ``/api/status``; times are Unix seconds, errors are redacted."""

    state: TransportState
    connected_since: float | None
    reconnects: int
    last_event: float | None
    events: int
    heads_queries: int
    malformed_frames: int
    unknown_frames: int
    last_error: str | None
    last_error_at: float | None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        return out


def socket_url(base_url: str, relay_id: str, folder_id: str, token: str) -> str:
    """The folder's websocket URL: ``ws(s)://host[/prefix]/d/{id}/ws/{id}?token=...``.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL.
    """
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError("the Relay Server URL must be http:// or https://")
    doc = compound_id(relay_id, folder_id)
    path = f"{parts.path}/d/{doc}/ws/{doc}"
    return urlunsplit((scheme, parts.netloc, path, f"token={quote(token, safe='')}", ""))


def _describe(exc: BaseException) -> str:
    """A short cause for a connection failure, never containing the URL."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name could not be resolved"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake or certificate error"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else None
        return f"connection closed (code {code})" if code else "connection lost"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return f"{type(exc).__name__}: {redact_token(str(exc))}"


_CLOSED = object()  # put in the answer queue when the connection ends


class FolderSocket:
    """The websocket of one shared folder, kept open by a thread of its own.

    Args:
        base_url: the Relay Server URL (``https://relay.example.com``).
        api_key: the token sent in the query string (the server reads it only there).
        relay_id, folder_id: the shared folder.
        on_event: called on the socket thread with ``(doc_id, event)`` for every
            ``document.updated`` event; if it raises, the socket is closed and
            reconnected so that the catch-up after the reconnect covers the event.
        on_connect: called on the socket thread after every (re)connect.
        backoff_base, backoff_cap: seconds of the first reconnect delay and its cap;
            each delay is drawn between 50% and 100% of ``base * 2**attempt``.
        unauthorized_backoff: seconds between attempts while the key is refused.
        stable_after: a connection that lived this long resets the backoff.
        ping_interval, ping_timeout, open_timeout: websocket keepalive and handshake
            limits in seconds.
        heads_timeout: seconds to wait for each heads answer.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        relay_id: str,
        folder_id: str,
        *,
        on_event: Callable[[str, yframes.Event], None],
        on_connect: Callable[[], None] | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        unauthorized_backoff: float = 300.0,
        stable_after: float = 30.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float = 10.0,
        heads_timeout: float = 30.0,
    ):
        if not api_key:
            raise ValueError("api_key must be a non-empty string (RELAY_SERVER_API_KEY)")
        self.relay_id, self.folder_id = relay_id, folder_id
        self.name = f"{relay_id}/{folder_id}"
        self._url = socket_url(base_url, relay_id, folder_id, api_key)
        self._secrets = [api_key, quote(api_key, safe="")]
        self._on_event, self._on_connect = on_event, on_connect
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.unauthorized_backoff, self.stable_after = unauthorized_backoff, stable_after
        self._ping_interval, self._ping_timeout = ping_interval, ping_timeout
        self._open_timeout, self.heads_timeout = open_timeout, heads_timeout
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._attempted = threading.Event()  # the first connection attempt has ended
        self._lock = threading.Lock()
        self._heads_lock = threading.Lock()
        self._answers: queue.Queue[object] = queue.Queue()
        self._conn: ClientConnection | None = None
        self._thread: threading.Thread | None = None
        self._random = random.Random()
        self._state = TransportState.STOPPED
        self._connected_since: float | None = None
        self._ever_connected = False
        self._counts = {"reconnects": 0, "events": 0, "heads_queries": 0, "malformed_frames": 0,
                        "unknown_frames": 0}
        self._last_event: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    def __repr__(self) -> str:
        return f"FolderSocket({self.name}, state={self._state.value})"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the socket thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"socket-{self.folder_id[:8]}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the socket and join the thread (idempotent)."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing to do
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        self._set_state(TransportState.STOPPED)

    def wait_connected(self, timeout: float) -> bool:
        """True once the socket is connected (within ``timeout`` seconds)."""
        return self._connected.wait(timeout)

    def wait_attempted(self, timeout: float) -> bool:
        """Wait until the first connection attempt succeeded or failed; True if connected."""
        self._attempted.wait(timeout)
        return self._connected.is_set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def status(self) -> SocketStatus:
        with self._lock:
            return SocketStatus(
                state=self._state,
                connected_since=self._connected_since,
                last_event=self._last_event,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                **self._counts,
            )

    def drop(self) -> None:
        """Close the current connection; the thread reconnects (for tests and operators)."""
        conn = self._conn
        if conn is not None:
            conn.close()

    # -- heads --------------------------------------------------------------------------

    def heads(self, guids: Iterable[str], timeout: float | None = None) -> dict[str, yframes.Head]:
        """Ask the server for the heads of ``guids`` (``<relay>-<doc>`` ids).

        Queries go out 100 guids per frame, a few frames in flight at a time. Guids the
        server does not know are absent from the result.

        Raises:
            HeadsUnavailable: not connected, the connection ended meanwhile, or an answer
                did not come within ``timeout`` (default ``heads_timeout``) seconds.
            RuntimeError: called from the socket's own thread.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("heads() must not be called from the socket thread")
        wanted = list(dict.fromkeys(guids))
        timeout = self.heads_timeout if timeout is None else timeout
        with self._heads_lock:
            conn = self._conn
            if conn is None or not self._connected.is_set():
                raise HeadsUnavailable(f"websocket of folder {self.name} is not connected")
            while True:  # answers to an earlier query that timed out, or an old close
                try:
                    self._answers.get_nowait()
                except queue.Empty:
                    break
            parts = list(yframes.batches(wanted))
            found: dict[str, yframes.Head] = {}
            keep = set(wanted)
            sent = received = 0
            while received < len(parts):
                while sent < len(parts) and sent - received < HEADS_WINDOW:
                    try:
                        conn.send(yframes.encode(yframes.QuerySubdocs(parts[sent])))
                    except (ConnectionClosed, OSError) as exc:
                        raise HeadsUnavailable(
                            f"websocket of folder {self.name} closed during a heads query "
                            f"({_describe(exc)})") from None
                    sent += 1
                try:
                    answer = self._answers.get(timeout=timeout)
                except queue.Empty:
                    raise HeadsUnavailable(
                        f"no heads answer from the relay within {timeout:g}s for folder "
                        f"{self.name}") from None
                if answer is _CLOSED:
                    raise HeadsUnavailable(
                        f"websocket of folder {self.name} closed during a heads query")
                received += 1
                assert isinstance(answer, yframes.Subdocs)
                found.update((g, h) for g, h in answer.heads.items() if g in keep)
            with self._lock:
                self._counts["heads_queries"] += len(parts)
            return found

    # -- the socket thread --------------------------------------------------------------

    def retry_delay(self, attempt: int, *, unauthorized: bool = False) -> float:
        """Seconds before reconnect attempt ``attempt`` (0-based): capped exponential with
        jitter, or the long wait of a refused key (it will not heal by itself)."""
        if unauthorized:
            return self.unauthorized_backoff * self._random.uniform(0.8, 1.0)
        delay = min(self.backoff_cap, self.backoff_base * 2 ** min(attempt, 30))
        return delay * self._random.uniform(0.5, 1.0)

    def _set_state(self, state: TransportState, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if error is not None:
                self._last_error = redact(redact_token(error), self._secrets)
                self._last_error_at = time.time()

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._set_state(TransportState.CONNECTING)
            delay: float | None = None
            try:
                conn = connect(
                    self._url,
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_timeout,
                    close_timeout=2,
                    max_size=MAX_FRAME,
                    compression=None,
                    logger=_WIRE_LOG,
                    user_agent_header="relay-git-sync",
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    error = (f"relay refused the API key for the websocket of folder {self.name} "
                             f"(HTTP {status}): check RELAY_SERVER_API_KEY; retrying every "
                             f"{self.unauthorized_backoff:g}s")
                    self._set_state(TransportState.UNAUTHORIZED, error)
                    log.error("websocket refused relay=%s folder=%s status=%d: check "
                              "RELAY_SERVER_API_KEY", self.relay_id, self.folder_id, status)
                    delay = self.retry_delay(attempt, unauthorized=True)
                elif status == 404:
                    error = (f"relay has no shared folder {self.name} (HTTP 404 on the websocket): "
                             "check relay_id and shared_folder_id")
                else:
                    error = f"websocket upgrade for folder {self.name} refused with HTTP {status}"
                if delay is None:
                    self._set_state(TransportState.BACKING_OFF, error)
                    log.warning("websocket connect failed relay=%s folder=%s error=%s",
                                self.relay_id, self.folder_id, self._last_error)
            except (OSError, TimeoutError, WebSocketException) as exc:
                self._set_state(TransportState.BACKING_OFF,
                                f"cannot connect the websocket of folder {self.name}: "
                                f"{_describe(exc)}")
                log.warning("websocket connect failed relay=%s folder=%s error=%s",
                            self.relay_id, self.folder_id, self._last_error)
            else:
                started = time.monotonic()
                with conn:  # closes it on the way out, whatever happened
                    self._serve(conn)
                if time.monotonic() - started >= self.stable_after:
                    attempt = 0
            self._attempted.set()
            if self._stop.is_set():
                break
            if delay is None:
                delay = self.retry_delay(attempt)
                attempt += 1
                if self._state != TransportState.BACKING_OFF:
                    self._set_state(TransportState.BACKING_OFF)
            log.debug("websocket reconnect scheduled relay=%s folder=%s in=%.2fs",
                      self.relay_id, self.folder_id, delay)
            self._stop.wait(delay)
        self._set_state(TransportState.STOPPED)

    def _serve(self, conn: ClientConnection) -> None:
        """Run one connection until it ends; never raises."""
        with self._lock:
            self._conn = conn
            if self._ever_connected:
                self._counts["reconnects"] += 1
            self._ever_connected = True
            self._state = TransportState.CONNECTED
            self._connected_since = time.time()
            reconnects = self._counts["reconnects"]
        try:
            if self._stop.is_set():
                return
            log.info("websocket connected relay=%s folder=%s reconnects=%d",
                     self.relay_id, self.folder_id, reconnects)
            conn.send(yframes.encode(yframes.EventSubscribe((yframes.DOCUMENT_UPDATED,))))
            self._connected.set()
            self._attempted.set()
            if self._on_connect is not None:
                try:
                    self._on_connect()
                except Exception:
                    log.exception("websocket on_connect failed relay=%s folder=%s",
                                  self.relay_id, self.folder_id)
            while True:
                data = conn.recv()
                if isinstance(data, str):
                    continue  # text messages are not part of the protocol
                try:
                    messages = yframes.decode_frame(data)
                except yframes.FrameError as exc:
                    with self._lock:
                        self._counts["malformed_frames"] += 1
                    self._set_state(TransportState.CONNECTED,
                                    f"malformed frame from the relay on folder {self.name}: "
                                    f"{exc}; reconnected")
                    log.warning("websocket malformed frame, reconnecting relay=%s folder=%s "
                                "error=%s", self.relay_id, self.folder_id, exc)
                    conn.close(code=1007, reason="malformed frame")
                    return
                for message in messages:
                    if not self._handle(conn, message):
                        conn.close(code=1011, reason="event not taken")
                        return
        except ConnectionClosed as exc:
            if not self._stop.is_set():
                self._set_state(TransportState.BACKING_OFF,
                                f"websocket of folder {self.name} lost: {_describe(exc)}")
                log.warning("websocket closed, will reconnect relay=%s folder=%s reason=%s",
                            self.relay_id, self.folder_id, _describe(exc))
        except Exception as exc:  # a bug or an odd socket error: reconnect, never die
            log.exception("websocket failed, will reconnect relay=%s folder=%s",
                          self.relay_id, self.folder_id)
            self._set_state(TransportState.BACKING_OFF,
                            f"websocket of folder {self.name} failed: {_describe(exc)}")
            try:
                conn.close()
            except Exception:
                pass
        finally:
            self._connected.clear()
            with self._lock:
                self._conn = None
                self._connected_since = None
            self._answers.put(_CLOSED)

    def _handle(self, conn: ClientConnection, message: yframes.Message) -> bool:
        """Act on one message; False when the connection must be reset."""
        if isinstance(message, yframes.SyncStep1):
            conn.send(yframes.encode(yframes.SyncStep2()))
        elif isinstance(message, yframes.Event):
            if message.event_type != yframes.DOCUMENT_UPDATED:
                return True
            with self._lock:
                self._counts["events"] += 1
                self._last_event = time.time()
            try:
                self._on_event(message.doc_id, message)
            except Exception as exc:
                self._set_state(TransportState.CONNECTED,
                                f"event for {message.doc_id} not taken ({exc}); reconnected")
                log.warning("websocket event not taken, reconnecting relay=%s folder=%s doc=%s "
                            "error=%s", self.relay_id, self.folder_id, message.doc_id, exc)
                return False
        elif isinstance(message, yframes.Subdocs):
            self._answers.put(message)
        elif isinstance(message, yframes.Unknown):
            with self._lock:
                self._counts["unknown_frames"] += 1
            log.debug("websocket message with unknown tag ignored relay=%s folder=%s tag=%d",
                      self.relay_id, self.folder_id, message.tag)
        return True
