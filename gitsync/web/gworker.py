"""A gunicorn worker whose threads never wait for a slow client.

gunicorn's ``gthread`` worker hands a new connection to a pool thread as soon as the
first bytes arrive, and that thread then blocks (without a timeout) until the whole
request head is in. A handful of clients that send half a request line and stall hold
every thread: ``/health`` and ``POST /webhooks`` stop answering, and the Relay Server
never retries a webhook it could not deliver.

:class:`HeadFirstWorker` reads each request in the worker's main loop instead, with
non-blocking sockets, and hands it to a thread only once the head (and a body of up to
:data:`BUFFERED_BODY_BYTES` announced by ``Content-Length``) is complete. A slow client
then costs a socket and a small buffer, not a thread; one that has not sent its request
within :data:`REQUEST_TIMEOUT` seconds is disconnected. Reads a thread still makes
(a chunked or oversized body, pipelined requests) time out after :data:`IO_TIMEOUT`.

How many connections wait at once is bounded by gunicorn's ``worker_connections``.
TLS and HTTP/2 are not used by this service (a reverse proxy terminates them); when
configured anyway, connections take gunicorn's own path.

Used by ``gunicorn.conf.py`` as ``worker_class``; built on gunicorn's gthread worker
(gunicorn 27).
"""

from __future__ import annotations

import re
import selectors
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

__all__ = [
    "BUFFERED_BODY_BYTES",
    "HEAD_BYTES",
    "IO_TIMEOUT",
    "REQUEST_TIMEOUT",
    "HeadFirstWorker",
    "request_complete",
]

REQUEST_TIMEOUT = 10.0  # seconds from connecting (or from the previous answer) to a whole request
IO_TIMEOUT = 10.0  # seconds a pool thread waits for any one read from the client
HEAD_BYTES = 16 * 1024  # a head longer than this goes to gunicorn's parser, which refuses it
BUFFERED_BODY_BYTES = 256 * 1024  # bodies up to this size are read before a thread is used
_RECV_BYTES = 64 * 1024

_COMPLETE, _CLOSED, _MORE = object(), object(), object()
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*([0-9]{1,12})[ \t]*\r?$", re.I | re.M)


def request_complete(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds what a thread needs to answer without waiting.

    True once the head is complete and, when it announces a body by ``Content-Length``
    of at most :data:`BUFFERED_BODY_BYTES`, that body too; also true for a head that
    grew past :data:`HEAD_BYTES` (gunicorn refuses it at once). A chunked or larger body
    is read by the thread, bounded by :data:`IO_TIMEOUT` per read.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > HEAD_BYTES
    match = _CONTENT_LENGTH.search(data, 0, end + 2)
    if match is None:
        return True
    length = int(match.group(1))
    return length > BUFFERED_BODY_BYTES or len(data) - (end + 4) >= length


class _BufferedConn(TConn):
    """A connection whose first bytes were read by the main loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received = bytearray()

    def init(self) -> None:
        # Runs in the pool thread after gunicorn made the socket blocking: give the
        # parser what the main loop read and bound every further read.
        super().init()
        if self.received:
            self.parser.unreader.unread(bytes(self.received))
            self.received = bytearray()
        self.sock.settimeout(IO_TIMEOUT)


class HeadFirstWorker(ThreadWorker):
    """gthread, but a request reaches a pool thread only once it has fully arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading_conns: deque[_BufferedConn] = deque()  # oldest deadline first
        self._buffering = not self.cfg.is_ssl and getattr(
            self.cfg, "http2_cleartext", None
        ) not in ("prior-knowledge", "both")

    def accept(self, listener: Any) -> None:
        if not self._buffering:
            super().accept(listener)
            return
        try:
            client_sock, client_addr = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        self.nr_conns += 1
        conn = _BufferedConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._start_request(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection has bytes: read its next request in the loop too."""
        if not isinstance(conn, _BufferedConn):
            super().on_client_socket_readable(conn, client)
            return
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_request(conn)

    def _cap_keepalive(self, deadline: float) -> None:
        # A stopping worker gives clients still sending a request the same short grace
        # as kept-alive ones, so slow clients cannot hold up the drain.
        super()._cap_keepalive(deadline)
        for conn in self.reading_conns:
            conn.timeout = min(conn.timeout, deadline)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.reading_conns and self.reading_conns[0].timeout <= now:
            conn = self.reading_conns.popleft()
            self._drop(conn)

    # -------------------------------------------------------------- reading in the loop

    def _start_request(self, conn: _BufferedConn) -> None:
        """Read what has arrived; hand a whole request on, else wait for the rest."""
        conn.sock.setblocking(False)
        conn.data_ready = True  # gunicorn's own wait-for-data step is not needed
        outcome = self._receive(conn)
        if outcome is _COMPLETE:  # the usual case on a busy kept-alive connection
            self.enqueue_req(conn)
        elif outcome is _CLOSED:
            self.nr_conns -= 1
            conn.close()
        else:
            conn.timeout = time.monotonic() + REQUEST_TIMEOUT
            self.reading_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

    def _on_bytes(self, conn: _BufferedConn, client: Any) -> None:
        outcome = self._receive(conn)
        if outcome is _COMPLETE:
            self.poller.unregister(conn.sock)
            self.reading_conns.remove(conn)
            self.enqueue_req(conn)
        elif outcome is _CLOSED:  # the client went away before sending a request
            self.reading_conns.remove(conn)
            self._drop(conn)

    @staticmethod
    def _receive(conn: _BufferedConn) -> object:
        """One non-blocking read: _COMPLETE, _CLOSED, or _MORE (nothing or not enough)."""
        try:
            chunk = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return _MORE
        except OSError:
            return _CLOSED
        if not chunk:
            return _CLOSED
        conn.received += chunk
        return _COMPLETE if request_complete(conn.received) else _MORE

    def _drop(self, conn: _BufferedConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.nr_conns -= 1
        conn.close()
