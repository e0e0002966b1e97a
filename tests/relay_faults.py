"""Fault injection for the Relay Server stand-in, for tests only.

:class:`FaultyRelay` is :class:`gitsync.dev.relay.DevRelay` plus the knobs tests use to
play a broken or hostile Relay Server: failing or redirecting requests, raw bytes for a
document, wrong bytes or a foreign download URL for an attachment, dishonest framing
(gzip nobody asked for, chunked, a false ``Content-Length``), held or paused document
reads, refused, dropped or abused websockets. It is built only on the stand-in's
extension point (:meth:`~gitsync.dev.relay.DevRelay.intercept`,
:meth:`~gitsync.dev.relay.DevRelay.reframe`, :meth:`~gitsync.dev.relay.DevRelay.sockets`),
so the development tool itself carries none of this.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from gitsync.dev.relay import DevRelay, Reply, Request

__all__ = ["FaultyRelay", "Framing"]

_REDIRECTS = (301, 302, 303, 307, 308)
_REDIRECT_BODY = 256 * 1024
_HOLD_LIMIT = 60.0  # seconds a held read waits at most, so a forgotten release ends


@dataclass(frozen=True)
class Framing:
    """How the answers for one target are put on the wire (:meth:`FaultyRelay.frame_response`)."""

    gzip: bool = False
    chunked: bool = False
    content_length: int | None = None


def _chunk_encoded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if chunk:
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"


class FaultyRelay(DevRelay):
    """The stand-in with fault injection (same constructor as :class:`DevRelay`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._faults: list[tuple[int, str | None]] = []
        self._raw: dict[str, tuple[bytes, str, int]] = {}
        self._blob_bytes: dict[str, bytes] = {}
        self._download_urls: dict[str, str] = {}
        self._framing: dict[str, Framing] = {}
        self._socket_refusal: int | None = None
        self._open = threading.Event()
        self._open.set()
        self._held_docs: set[str] = set()
        self._held_gate = threading.Event()
        self._held_gate.set()
        self._held_waiting = 0

    def stop(self) -> None:
        self._open.set()
        self._held_gate.set()
        super().stop()

    # -- HTTP faults ------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, *, path_prefix: str | None = None) -> None:
        """The next ``n`` requests (any path but ``/ready``, or only those whose path
        starts with ``path_prefix``, e.g. ``"/blob/"``) answer ``status``; a redirect
        status (301, 302, 303, 307, 308) sends the client back to the same URL."""
        with self._lock:
            self._faults.extend([(status, path_prefix)] * n)

    def clear_faults(self) -> None:
        """Forget every injected failure not yet served."""
        with self._lock:
            self._faults.clear()

    def set_raw(self, compound: str, data: bytes | None, *,
                content_type: str = "application/octet-stream", status: int = 200) -> None:
        """Serve ``data`` verbatim for this document's as-update (None: back to normal)."""
        key = self._key(compound)
        with self._lock:
            if data is None:
                self._raw.pop(key, None)
            else:
                self._raw[key] = (bytes(data), content_type, status)

    def set_blob_bytes(self, digest: str, data: bytes) -> None:
        """Serve ``data`` for the blob ``digest`` (a hash mismatch when they differ)."""
        with self._lock:
            self._blob_bytes[digest] = bytes(data)

    def set_download_url(self, digest: str, url: str) -> None:
        """Answer ``url`` as the download URL of ``digest``."""
        with self._lock:
            self._download_urls[digest] = url

    def frame_response(self, target: str, *, gzip: bool = False, chunked: bool = False,
                       content_length: int | None = None) -> None:
        """Change how the answers for ``target`` are put on the wire.

        Args:
            target: a document's compound id (its as-update) or a blob's sha256 digest.
            gzip: compress the body and say ``Content-Encoding: gzip``, whatever the
                client asked for.
            chunked: send ``Transfer-Encoding: chunked`` (the size is found by reading).
            content_length: declare this length whatever the body is; the connection
                is closed after the body when it differs.

        All defaults: honest framing again.
        """
        key = target.lower() if len(target) == 64 else self._key(target)
        framing = Framing(gzip=gzip, chunked=chunked, content_length=content_length)
        with self._lock:
            if framing == Framing():
                self._framing.pop(key, None)
            else:
                self._framing[key] = framing

    def pause(self) -> None:
        """Hold every document read until :meth:`resume` (a slow or stuck server)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def hold(self, compound_ids: Iterable[str]) -> None:
        """Hold reads of these documents (only) until :meth:`release`."""
        with self._lock:
            self._held_docs = {self._key(c) for c in compound_ids}
            self._held_gate.clear()

    def release(self) -> None:
        with self._lock:
            self._held_docs = set()
        self._held_gate.set()

    @property
    def held_waiting(self) -> int:
        """Reads currently held by :meth:`hold`."""
        with self._lock:
            return self._held_waiting

    # -- websocket faults -------------------------------------------------------------

    def refuse_sockets(self, status: int | None) -> None:
        """Answer every websocket upgrade with ``status`` (None: accept again)."""
        self._socket_refusal = status

    def drop_sockets(self) -> int:
        """Cut every websocket's TCP connection without a close frame; returns how many."""
        sockets = self.sockets()
        for sock in sockets:
            sock.abort()
        return len(sockets)

    def send_to_sockets(self, frame: bytes, compound: str | None = None) -> int:
        """Send raw bytes as one binary message to every socket (of one document)."""
        return sum(1 for s in self.sockets(compound) if s.send(frame))

    # -- the hooks --------------------------------------------------------------------

    def intercept(self, request: Request) -> Reply | None:
        if request.route == "socket":
            refusal = self._socket_refusal
            return None if refusal is None else Reply.error(refusal, "injected failure")
        if request.route == "as-update":
            self._open.wait(timeout=_HOLD_LIMIT)
            self._wait_if_held(request.target)
        fault = self._take_fault(request.path)
        if fault in _REDIRECTS:
            return self._redirect(fault, request)
        if fault is not None:
            return Reply.error(fault, "injected failure")
        with self._lock:
            raw = self._raw.get(request.target or "") if request.route == "as-update" else None
            blob = self._blob_bytes.get(request.target or "") if request.route == "blob" else None
            url = (self._download_urls.get(request.target or "")
                   if request.route == "download-url" else None)
        if raw is not None:
            data, content_type, status = raw
            return self.reframe(request, Reply.of(status, data, content_type))
        if blob is not None:
            mimetype = self._blobs.get(request.target or "", (b"", "application/octet-stream"))[1]
            return self.reframe(request, Reply.of(200, blob, mimetype))
        if url is not None:
            return Reply.of(200, json.dumps({"downloadUrl": url}).encode(), "application/json")
        return None

    def reframe(self, request: Request, reply: Reply) -> Reply:
        with self._lock:
            framing = self._framing.get((request.target or "").lower()
                                        if request.route == "blob" else request.target or "")
        if framing is None:
            return reply
        chunks: Iterable[bytes] = reply.chunks
        length = int(reply.header("Content-Length") or 0)
        headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
        if framing.gzip:
            body = gzip_module.compress(b"".join(chunks), compresslevel=6)
            chunks, length = [body], len(body)
            headers.append(("Content-Encoding", "gzip"))
        close = False
        if framing.content_length is not None:
            headers.append(("Content-Length", str(framing.content_length)))
            # A false length leaves the connection unusable: end it after this answer,
            # so a client waiting for missing bytes sees the end of the stream.
            close = framing.content_length != length
        elif framing.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
            chunks = _chunk_encoded(chunks)
        else:
            headers.append(("Content-Length", str(length)))
        return replace(reply, headers=tuple(headers), chunks=chunks, close=close)

    # -- internals --------------------------------------------------------------------

    def _take_fault(self, path: str) -> int | None:
        with self._lock:
            for i, (status, prefix) in enumerate(self._faults):
                if prefix is None or path.startswith(prefix):
                    del self._faults[i]
                    return status
            return None

    @staticmethod
    def _redirect(status: int, request: Request) -> Reply:
        """Back to the same URL, with a body the client has no reason to read."""
        location = request.path + (f"?{request.query}" if request.query else "")
        return Reply(status, (("Location", location), ("Content-Type", "text/plain"),
                              ("Content-Length", str(_REDIRECT_BODY))), [b"r" * _REDIRECT_BODY])

    def _wait_if_held(self, key: str | None) -> None:
        with self._lock:
            if key is None or key not in self._held_docs:
                return
            self._held_waiting += 1
        try:
            self._held_gate.wait(timeout=_HOLD_LIMIT)
        finally:
            with self._lock:
                self._held_waiting -= 1
