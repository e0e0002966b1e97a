"""A Relay Server stand-in for development and tests: not a product feature.

This is not a Relay Server and must never be deployed as one.  It speaks the few
endpoints relay-git-sync reads (docs/relay-protocol.md) over real HTTP on 127.0.0.1, serving
documents that pycrdt builds in the layouts the Relay plugin uses, so that tests and
``cli.py demo`` exercise the real client, sockets and decoders without a Node server.

Like the real server with ``RELAY_SERVER_WEBHOOK_CONFIG``, it can POST a webhook for every
document change to configured URLs, each taking only the documents whose id starts with
its ``prefix`` (see :meth:`DevRelay.set_webhooks`): one attempt, no retry.

What it offers beyond the protocol: large generated attachments that are never held in
memory, per-document fetch counters, a delay per document read (a Relay Server further
away, for benchmarks), a switch requiring the 3-UUID attachment id, and a builder API
(:class:`FolderHandle`) that edits folders and documents as Yjs transactions.

Fault injection is not here. The stand-in has one small extension point instead: a
subclass may override :meth:`DevRelay.intercept` (answer a request itself, or hold it)
and :meth:`DevRelay.reframe` (change how an answer is put on the wire), and reach the
open websockets through :meth:`DevRelay.sockets`. The test suite builds its faults on
these (``tests/relay_faults.py``).

The document websocket (``/d/{id}/ws/{id}?token=...``) is served on the same port by
upgrading the HTTP request (:mod:`gitsync.dev.wsserver`) and speaks the real frames
(:mod:`gitsync.yframes`): sync step 1 and an empty awareness on connect, ``EVENT``
messages when a document routed to the socket's document changes (every mutation of
this class goes through :meth:`DevRelay.edit`, :meth:`DevRelay.apply_update` or
:meth:`DevRelay.put_update`, which publish), and heads answers computed from the stored
documents. A document may be unrouted, or its head forgotten or indexed by bare UUID,
as the real server's index sometimes has it.

Documents are stored as full Yjs v1 updates (bytes); every edit loads the bytes into a
fresh ``pycrdt.Doc``, changes it in one transaction, and stores the new state.  No
pycrdt object outlives a call, so handler threads never share one.

Authorship as the Relay Server records it: every edit runs as a fresh Yjs client, and
that client's id is registered in the document's root map ``users`` under a named relay
user (``user=``, default :data:`DEMO_USER`; ``None`` registers nothing), laid out as
yjs's PermanentUserData (``users[<user>] = {ids: Y.Array, ds: Y.Array}``). The
registration is written by the stand-in's own client, which no user claims, as the
server's would be; an edit that deletes also pushes a record into its user's ``ds``
with the editing client, as a yjs client does. :meth:`DevRelay.compact_users` plays the
server's compaction (duplicate ids removed, ``ds`` cleared).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import re
import secrets
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pycrdt import Array, Doc, Map, Snapshot, Text

from .. import yframes
from ..ids import InvalidId, compound_id, parse_compound_id, parse_uuid
from .wsserver import OP_BINARY, WsClosed, WsConnection, accept_key

__all__ = [
    "DEMO_USER",
    "DevRelay",
    "DocSocket",
    "FolderHandle",
    "Reply",
    "Request",
    "connectors_snippet",
    "main",
    "sample_vault",
    "tiny_png",
    "tiny_pdf",
]

log = logging.getLogger(__name__)

_EMPTY_UPDATE = b"\x00\x00"
DEMO_USER = "demo-user"
"""The relay user the stand-in registers edits under unless told otherwise."""
_NANOID_ALPHABET = "useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict"
_ATTACHMENT_TYPES = {"image", "pdf", "audio", "video", "base", "file"}
_ROUTE = re.compile(r"^/(d|doc|f)/([0-9A-Za-z-]+)/(as-update|update|download-url)$")
_GENERATED_BLOCK = 1 << 20


@dataclass(frozen=True)
class Request:
    """One request as the extension hooks see it (:meth:`DevRelay.intercept`).

    Attributes:
        method: ``GET`` or ``POST``.
        path: the URL path, without the query string.
        route: ``as-update``, ``update``, ``download-url``, ``blob``, ``socket`` or ``other``.
        target: the document key (``as-update``, ``update``, ``socket``) or the sha256
            digest named (``blob``, ``download-url``); None when the request names none.
        query: the raw query string (may hold a signature or a token).
    """

    method: str
    path: str
    route: str
    target: str | None = None
    query: str = ""


@dataclass(frozen=True)
class Reply:
    """An answer exactly as it is written: status line, headers, body pieces.

    :meth:`of` builds an honest one. An extension may build any other (a body already
    chunk-encoded, a ``Content-Length`` that lies) and sets ``close`` when the
    connection cannot carry another request after it.
    """

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    chunks: Iterable[bytes] = ()
    close: bool = False

    @classmethod
    def of(cls, status: int, body: bytes, content_type: str) -> Reply:
        """``body`` whole, with its type and true length."""
        return cls.streamed(status, [body], len(body), content_type)

    @classmethod
    def streamed(cls, status: int, chunks: Iterable[bytes], length: int, content_type: str) -> Reply:
        """``length`` bytes produced by ``chunks`` while they are sent."""
        return cls(status, (("Content-Type", content_type), ("Content-Length", str(length))), chunks)

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        """The stand-in's JSON error body."""
        return cls.of(status, json.dumps({"error": message}).encode(), "application/json")

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), None when absent."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(frozen=True)
class _Generated:
    """A large attachment made of one repeated block, produced while it is sent."""

    size: int
    block: bytes
    mimetype: str

    def chunks(self) -> Iterator[bytes]:
        left = self.size
        while left > 0:
            piece = self.block[: min(left, len(self.block))]
            left -= len(piece)
            yield piece
_WS_ROUTE = re.compile(r"^/d/([^/]+)/ws/([^/]+)$")


def _norm(path: str) -> str:
    """``notes/a.md`` or ``/notes/a.md`` -> ``/notes/a.md`` (the folder index form)."""
    path = path.strip().strip("/")
    if not path:
        raise ValueError("path must name a file or folder inside the shared folder")
    return "/" + path


def _load(update: bytes, client_id: int | None = None) -> Doc:
    doc: Doc = Doc(client_id=client_id)
    doc.apply_update(update)
    return doc


def _user_entry(doc: Doc, user: str) -> Map:
    """``users[user]`` as PermanentUserData lays it out, created when missing (in a transaction)."""
    users = doc.get("users", type=Map)
    entry = users[user] if user in users else None
    if not isinstance(entry, Map):
        entry = Map()
        users[user] = entry
    for name in ("ids", "ds"):
        if not (name in entry and isinstance(entry[name], Array)):
            entry[name] = Array()
    return entry


def _attachment_type(mimetype: str, path: str) -> str:
    if mimetype.startswith("image/"):
        return "image"
    if mimetype == "application/pdf" or path.lower().endswith(".pdf"):
        return "pdf"
    if mimetype.startswith("audio/"):
        return "audio"
    if mimetype.startswith("video/"):
        return "video"
    return "file"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], relay: DevRelay):
        self.relay = relay
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive client connections so their handler threads exit."""
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("devrelay connection closed client=%s error=%r", client_address, exc)
        else:
            log.error("devrelay handler failed client=%s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Send each response in one write with Nagle off: headers and body written apart
    # meet the client's delayed ACK and cost ~40 ms per keep-alive request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server_version = "devrelay"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        pass  # requests are logged in _dispatch without query strings

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        relay = self.server.relay
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        log.debug("devrelay request method=%s path=%s", method, path)
        body = b""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            body = self.rfile.read(length)
        if path == "/ready" and method == "GET":
            return self._send(200, b'{"ok":true}', "application/json")
        socket_route = _WS_ROUTE.match(path)
        if socket_route and method == "GET":
            return self._websocket(socket_route.group(1), socket_route.group(2), query)
        is_blob = path.startswith("/blob/")
        if not is_blob:
            role = relay._authorize(self.headers.get("Authorization"))
            if role is None:
                return self._error(401, "missing or invalid bearer token")
        match = _ROUTE.match(path)
        request = relay._request(method, path, match, parts.query)
        if request.route == "as-update":
            relay._count(match.group(2) if match else "")
            if relay.read_delay:
                threading.Event().wait(relay.read_delay)  # a Relay Server further away
        override = relay.intercept(request)
        if override is not None:
            return self._reply(override)
        if is_blob and method == "GET":
            return self._blob(request, path[len("/blob/") :], query)
        if not match:
            return self._error(404, "not found")
        kind, ident, action = match.groups()
        if method == "GET" and kind in ("d", "doc") and action == "as-update":
            return self._as_update(request, ident)
        if method == "POST" and kind == "d" and action == "update":
            if role != "write":
                return self._error(403, "read-only token cannot write")
            return self._post_update(ident, body)
        if method == "GET" and kind == "f" and action == "download-url":
            return self._download_url(ident, (query.get("hash") or [""])[0])
        return self._error(404, "not found")

    def _as_update(self, request: Request, ident: str) -> None:
        relay = self.server.relay
        try:
            key = relay._key(ident)
        except InvalidId:
            return self._error(404, "not a document id")
        data = relay.get_update(key)
        if data is None:
            return self._error(404, f"document {ident} not found")
        return self._reply(relay.reframe(request, Reply.of(200, data, "application/octet-stream")))

    def _post_update(self, ident: str, body: bytes) -> None:
        try:
            parse_compound_id(ident)
            self.server.relay.apply_update(ident, body)
        except (InvalidId, ValueError) as exc:
            return self._error(400, str(exc))
        return self._send(200, b"{}", "application/json")

    def _download_url(self, ident: str, digest: str) -> None:
        relay = self.server.relay
        try:
            cid = parse_compound_id(ident)
        except InvalidId:
            return self._error(400, "bad file id")
        if relay.require_folder_file_ids and cid.middle_id is None:
            return self._error(404, "file not found (this server wants <relay>-<folder>-<file>)")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            return self._error(400, "hash must be a sha256 hex digest")
        with relay._lock:
            known = digest in relay._blobs or digest in relay._generated
        if not known:
            return self._error(404, "no file with that hash")
        url = relay._signed_blob_url(digest)
        body = json.dumps({"downloadUrl": url}).encode()
        return self._send(200, body, "application/json")

    def _blob(self, request: Request, digest: str, query: dict[str, list[str]]) -> None:
        relay = self.server.relay
        if self.headers.get("Authorization"):
            # Like S3: a presigned URL plus an Authorization header is an error.
            return self._error(400, "only one auth mechanism allowed")
        sig = (query.get("sig") or [""])[0]
        if not hmac.compare_digest(sig, relay._sign(digest)):
            return self._error(403, "signature does not match")
        with relay._lock:
            blob = relay._blobs.get(digest)
            generated = relay._generated.get(digest)
            relay._blob_fetches[digest] = relay._blob_fetches.get(digest, 0) + 1
        if generated is not None:
            return self._reply(relay.reframe(request, Reply.streamed(
                200, generated.chunks(), generated.size, generated.mimetype)))
        if blob is None:
            return self._error(404, "no such blob")
        data, mimetype = blob
        return self._reply(relay.reframe(request, Reply.of(200, data, mimetype)))

    def _websocket(self, first: str, second: str, query: dict[str, list[str]]) -> None:
        """Check the upgrade like the real server (statuses before any upgrade), then
        hand the connection to :meth:`DevRelay._serve_socket` until it ends."""
        relay = self.server.relay
        with relay._lock:
            relay._socket_attempts += 1
        if first != second:
            return self._error(400, "the document id appears twice in the path and must match")
        verdict = relay._socket_role((query.get("token") or [None])[0], first)
        if verdict in ("missing", "invalid"):
            return self._error(401, "no token provided" if verdict == "missing" else "invalid token")
        if verdict == "other":
            return self._error(403, "token not valid for this document")
        try:
            key: str | None = relay._key(first)
        except InvalidId:
            key = None
        parts = urlsplit(self.path)
        override = relay.intercept(Request("GET", parts.path, "socket", key, parts.query))
        if override is not None:
            return self._reply(override)
        if key is None:
            return self._error(400, "not a document id")
        client_key = self.headers.get("Sec-WebSocket-Key")
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not client_key:
            return self._error(400, "expected a websocket upgrade")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(client_key))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.connection.settimeout(None)
        relay._serve_socket(DocSocket(WsConnection(self.connection, self.rfile), key, verdict))

    def _error(self, status: int, message: str) -> None:
        self._reply(Reply.error(status, message))

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self._reply(Reply.of(status, body, ctype))

    def _reply(self, reply: Reply) -> None:
        """Write ``reply`` as it is (headers and body pieces verbatim)."""
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if reply.close:
            self.close_connection = True
        if self.command == "HEAD":
            return
        for chunk in reply.chunks:
            self.wfile.write(chunk)


class DocSocket:
    """One open document websocket: the document it serves, its role and subscriptions."""

    def __init__(self, ws: WsConnection, key: str, role: str):
        self.ws = ws
        self.key = key
        self.role = role
        self.subscriptions: set[str] = set()

    def send(self, frame: bytes) -> bool:
        """Send ``frame`` as one binary message; False when the socket is gone."""
        try:
            self.ws.send_binary(frame)
            return True
        except WsClosed:
            return False

    def abort(self) -> None:
        """Cut the TCP connection without a close frame."""
        self.ws.abort()


class DevRelay:
    """Relay Server stand-in on 127.0.0.1 (development and tests only).

    Args:
        api_key: the bearer token every endpoint except ``/ready`` and blobs requires.
        read_only_key: optional second token that may read but gets 403 on POST.
        require_folder_file_ids: when True, ``/f/<relay>-<file>/download-url`` answers
            404 and only the ``<relay>-<folder>-<file>`` form works.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        api_key: str = "dev-api-key",
        *,
        read_only_key: str | None = None,
        require_folder_file_ids: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.api_key = api_key
        self.read_only_key = read_only_key
        self.require_folder_file_ids = require_folder_file_ids
        self._host, self._port = host, port
        self._lock = threading.RLock()
        self._docs: dict[str, bytes] = {}
        self._blobs: dict[str, tuple[bytes, str]] = {}
        self._generated: dict[str, _Generated] = {}
        self._fetches: dict[str, int] = {}
        self._blob_fetches: dict[str, int] = {}
        self.read_delay = 0.0  # seconds added to every document read (benchmarks)
        self._secret = secrets.token_bytes(32)
        # the client the stand-in writes ``users`` registrations with (no user claims it)
        self._server_client = secrets.randbits(32)
        # the websocket side: doc key -> routing channel, last change (ms), snapshots
        self._channels: dict[str, str] = {}
        self._modified: dict[str, int] = {}
        self._snapshots: dict[str, bytes] = {}
        self._forgotten: set[str] = set()
        self._backfilled: set[str] = set()  # heads indexed by bare document UUID
        self._doc_tokens: dict[str, str] = {}
        self._sockets: set[DocSocket] = set()
        self._ws_lock = threading.Lock()
        self._heads_queries = 0
        self._events_sent = 0
        self._socket_attempts = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None
        # webhook sender: configs, documents waiting to be announced, deliveries made
        self._webhooks: list[dict[str, Any]] = []
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._sender: threading.Thread | None = None
        self.deliveries: list[tuple[str, str, int | None]] = []  # (url, doc id, HTTP status or None)

    def __repr__(self) -> str:
        return f"DevRelay(url={self.url!r}, api_key=REDACTED, docs={len(self._docs)})"

    def __enter__(self) -> DevRelay:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> str:
        """Listen (port 0 picks a free port) and serve from a daemon thread.

        Returns:
            The base URL, e.g. ``http://127.0.0.1:54321``.
        """
        if self._server is not None:
            raise RuntimeError("devrelay already started")
        self._server = _Server((self._host, self._port), self)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="devrelay",
            daemon=True,
        )
        self._thread.start()
        log.debug("devrelay listening url=%s", self.url)
        return self.url

    def stop(self) -> None:
        """Shut down, join the serving thread and close the socket (idempotent)."""
        sender, self._sender = self._sender, None
        if sender is not None:
            self._outbox.put(None)
            sender.join()
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        if thread is not None:
            thread.join()
        server.close_connections()
        server.server_close()
        self._server = self._thread = None

    # -- documents --------------------------------------------------------------------

    def add_folder(self, relay_id: str | None = None, folder_id: str | None = None) -> FolderHandle:
        """Create an empty shared folder document (random UUIDs when not given)."""
        relay = parse_uuid(relay_id, what="relay_id") if relay_id else str(uuid.uuid4())
        folder = parse_uuid(folder_id, what="folder_id") if folder_id else str(uuid.uuid4())
        handle = FolderHandle(self, relay, folder)
        with self._lock:
            self._docs.setdefault(handle.compound_id, _EMPTY_UPDATE)
        return handle

    def folder(self, relay_id: str, folder_id: str) -> FolderHandle:
        """A handle on an existing folder document."""
        handle = FolderHandle(self, relay_id, folder_id)
        if self.get_update(handle.compound_id) is None:
            raise KeyError(f"no folder {handle.compound_id}")
        return handle

    def get_update(self, compound: str) -> bytes | None:
        """The stored full update of a document (None when unknown)."""
        with self._lock:
            return self._docs.get(self._key(compound))

    def put_update(self, compound: str, update: bytes) -> None:
        """Replace a document's whole state with ``update`` (no validation)."""
        key = self._key(compound)
        with self._lock:
            self._docs[key] = bytes(update)
            self._changed(key, None, None)

    def apply_update(self, compound: str, update: bytes, *, user: str | None = None) -> None:
        """Apply a Yjs v1 update to a document, creating it when new (``POST /update``).

        Args:
            user: register the clients whose clocks the update advanced under this relay
                user, as the server does for a connection's clients (None: no registration).

        Raises:
            ValueError: the bytes are not a decodable update.
        """
        key = self._key(compound)
        with self._lock:
            doc = _load(self._docs.get(key, _EMPTY_UPDATE))
            before, head = doc.get_state(), Snapshot.from_doc(doc).encode()
            doc.apply_update(update)
            if user is not None:
                old = yframes.decode_snapshot(head).state_vector
                new = yframes.decode_snapshot(Snapshot.from_doc(doc).encode()).state_vector
                doc = self._register(doc, [c for c, clock in new.items() if clock > old.get(c, 0)], user)
            self._docs[key] = doc.get_update()
            self._changed(key, doc, doc.get_update(before), head)

    @contextmanager
    def edit(self, compound: str, *, user: str | None = DEMO_USER) -> Iterator[Doc]:
        """Load a document, yield it for changes inside one transaction, store the result.

        Args:
            user: the relay user the edit's client is registered under in ``users``
                (None: no registration, like a document written without one).
        """
        key = self._key(compound)
        with self._lock:
            doc = _load(self._docs.get(key, _EMPTY_UPDATE))
            before, head = doc.get_state(), Snapshot.from_doc(doc).encode()
            with doc.transaction():
                yield doc
            if user is not None:
                doc = self._record_author(doc, head, user)
            self._docs[key] = doc.get_update()
            self._changed(key, doc, doc.get_update(before), head)

    def _record_author(self, doc: Doc, head: bytes, user: str) -> Doc:
        """Register the editing client of ``doc`` under ``user`` if it changed anything.

        A deletion alone advances no clock; like a yjs client keeping PermanentUserData,
        the editor then pushes a record into its user's ``ds`` (the stand-in pushes the
        snapshot after the edit; only the push itself matters to readers).
        """
        after = Snapshot.from_doc(doc).encode()
        if yframes.same_head(head, after):
            return doc
        old, new = yframes.decode_snapshot(head), yframes.decode_snapshot(after)
        if new.delete_set != old.delete_set:
            with doc.transaction():
                _user_entry(doc, user)["ds"].append(after)
        return self._register(doc, [doc.client_id], user)

    def _register(self, doc: Doc, clients: list[int], user: str) -> Doc:
        """``doc`` with ``clients`` added to ``users[user].ids``, written by the stand-in's client."""
        if not clients:
            return doc
        server = _load(doc.get_update(), client_id=self._server_client)
        with server.transaction():
            ids = _user_entry(server, user)["ids"]
            present = {int(v) for v in ids if isinstance(v, int | float)}
            for client in clients:
                if client not in present:
                    ids.append(float(client))  # a JS number, as yjs stores it
        return server

    def compact_users(self, compound: str) -> None:
        """Play the server's compaction of ``users`` when it evicts a document: each user's
        ``ids`` de-duplicated and ``ds`` cleared, written by a client no user claims.
        The content does not change; the update (and a webhook event) does."""
        key = self._key(compound)
        with self._lock:
            doc = _load(self._docs.get(key, _EMPTY_UPDATE))
            before, head = doc.get_state(), Snapshot.from_doc(doc).encode()
            users = doc.get("users", type=Map)
            with doc.transaction():
                for name in list(users.keys()):
                    entry = users[name]
                    if not isinstance(entry, Map):
                        continue
                    ids = entry["ids"] if "ids" in entry else None
                    if isinstance(ids, Array):
                        values = list(ids)
                        unique = list(dict.fromkeys(values))
                        if len(unique) != len(values):
                            del ids[0:len(ids)]
                            ids.extend(unique)
                    ds = entry["ds"] if "ds" in entry else None
                    if isinstance(ds, Array) and len(ds):
                        del ds[0:len(ds)]
            self._docs[key] = doc.get_update()
            self._changed(key, doc, doc.get_update(before), head)

    def _key(self, compound: str) -> str:
        return str(parse_compound_id(compound))

    # -- attachments ------------------------------------------------------------------

    def put_blob(self, data: bytes, mimetype: str = "application/octet-stream") -> str:
        """Store bytes under their sha256; returns the hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._blobs[digest] = (bytes(data), mimetype)
        return digest

    def put_generated_blob(
        self, size: int, *, seed: bytes = b"devrelay", mimetype: str = "application/octet-stream"
    ) -> str:
        """Store a ``size``-byte attachment produced while it is served (never held in
        memory: one 1 MiB block repeated); returns its sha256 hex digest."""
        block = hashlib.shake_256(seed).digest(_GENERATED_BLOCK)
        blob = _Generated(size, block, mimetype)
        hasher = hashlib.sha256()
        for chunk in blob.chunks():
            hasher.update(chunk)
        digest = hasher.hexdigest()
        with self._lock:
            self._generated[digest] = blob
        return digest

    def blob_fetch_count(self, digest: str) -> int:
        with self._lock:
            return self._blob_fetches.get(digest, 0)

    def _sign(self, digest: str) -> str:
        return hmac.new(self._secret, digest.encode(), hashlib.sha256).hexdigest()

    def _signed_blob_url(self, digest: str) -> str:
        return f"{self.url}/blob/{digest}?sig={self._sign(digest)}"

    # -- extension point --------------------------------------------------------------

    def intercept(self, request: Request) -> Reply | None:
        """Called before the stand-in answers ``request``; returns None to let it answer.

        Called in the serving thread after the bearer token was accepted (blobs carry no
        token), and for a websocket after its token was checked, before the upgrade. An
        override may answer instead (return a :class:`Reply`) or block for a while (a
        slow server). Not called for ``/ready``. The default does nothing.
        """
        return None

    def reframe(self, request: Request, reply: Reply) -> Reply:
        """Called with each successful document (as-update) and blob answer before it is
        written; returns what is written. The default returns ``reply`` unchanged."""
        return reply

    def sockets(self, compound: str | None = None) -> list[DocSocket]:
        """The open websockets (of one document)."""
        key = self._key(compound) if compound else None
        with self._ws_lock:
            return [s for s in self._sockets if key is None or s.key == key]

    def _request(self, method: str, path: str, match: re.Match[str] | None, query: str) -> Request:
        """What the hooks are told about a request (its route and the key it names)."""
        if path.startswith("/blob/"):
            return Request(method, path, "blob", path[len("/blob/"):], query)
        if match is None:
            return Request(method, path, "other", None, query)
        action = match.group(3)
        if action == "download-url":
            return Request(method, path, action, (parse_qs(query).get("hash") or [None])[0], query)
        try:
            return Request(method, path, action, self._key(match.group(2)), query)
        except InvalidId:
            return Request(method, path, action, None, query)

    # -- counters -----------------------------------------------------------------------

    def fetch_count(self, compound: str) -> int:
        """How many authorized as-update requests named this document."""
        with self._lock:
            return self._fetches.get(self._key(compound), 0)

    @property
    def total_fetches(self) -> int:
        with self._lock:
            return sum(self._fetches.values())

    def reset_counters(self) -> None:
        with self._lock:
            self._fetches.clear()
            self._blob_fetches.clear()
            self._heads_queries = 0
            self._events_sent = 0
            self._socket_attempts = 0

    def _count(self, ident: str) -> None:
        try:
            key = self._key(ident)
        except InvalidId:
            return
        with self._lock:
            self._fetches[key] = self._fetches.get(key, 0) + 1

    def _authorize(self, header: str | None) -> str | None:
        if not header or not header.startswith("Bearer "):
            return None
        token = header[len("Bearer ") :].encode()
        if hmac.compare_digest(token, self.api_key.encode()):
            return "write"
        if self.read_only_key and hmac.compare_digest(token, self.read_only_key.encode()):
            return "read"
        return None

    # -- the document websocket -------------------------------------------------------

    def route(self, compound: str, channel: str | None) -> None:
        """Route a document's events to ``channel`` (a folder's compound id), or to
        itself when None: a document the real server first loaded without a channel."""
        key = self._key(compound)
        with self._lock:
            if channel is None:
                self._channels.pop(key, None)
            else:
                self._channels[key] = self._key(channel)

    def forget_head(self, compound: str) -> None:
        """Leave the document out of heads answers until it changes again (an entry
        missing from the server's index)."""
        with self._lock:
            self._forgotten.add(self._key(compound))

    def backfill_head(self, compound: str) -> None:
        """Index the document's head under its bare UUID, as the server's offline
        backfill tool does, until it changes again (then under its compound id)."""
        with self._lock:
            self._backfilled.add(self._key(compound))

    def issue_doc_token(self, compound: str) -> str:
        """A token valid for one document's websocket only (others answer 403)."""
        token = "doc-" + secrets.token_urlsafe(12)
        with self._lock:
            self._doc_tokens[token] = self._key(compound)
        return token

    def socket_count(self, compound: str | None = None) -> int:
        """Open websockets (of one document)."""
        return len(self.sockets(compound))

    @property
    def heads_queries(self) -> int:
        """Heads query frames answered since the last :meth:`reset_counters`."""
        return self._heads_queries

    @property
    def socket_attempts(self) -> int:
        """Websocket upgrade requests (answered or refused) since :meth:`reset_counters`."""
        return self._socket_attempts

    @property
    def events_sent(self) -> int:
        """``EVENT`` messages sent since the last :meth:`reset_counters`."""
        return self._events_sent

    def _socket_role(self, token: str | None, ident: str) -> str:
        """``write``/``read`` for a valid token, else ``missing``/``invalid``/``other``."""
        if not token:
            return "missing"
        raw = token.encode()
        if hmac.compare_digest(raw, self.api_key.encode()):
            return "write"
        if self.read_only_key and hmac.compare_digest(raw, self.read_only_key.encode()):
            return "read"
        with self._lock:
            scoped = self._doc_tokens.get(token)
        if scoped is None:
            return "invalid"
        try:
            return "write" if self._key(ident) == scoped else "other"
        except InvalidId:
            return "other"

    def _changed(self, key: str, doc: Doc | None, diff: bytes | None,
                 head: bytes | None = None) -> None:
        """A stored document may have changed (lock held): if so, note when and publish.

        ``head`` is the snapshot before the change: a transaction that changed nothing
        sends nothing, like the real server.
        """
        snapshot = Snapshot.from_doc(doc).encode() if doc is not None else None
        if snapshot is not None and head is not None and yframes.same_head(head, snapshot):
            return
        self._modified[key] = int(time.time() * 1000)
        if self._webhooks:
            self._outbox.put(key)
        self._forgotten.discard(key)
        self._backfilled.discard(key)
        self._snapshots.pop(key, None)
        if snapshot is not None:
            self._snapshots[key] = snapshot
        channel = self._channels.get(key, key)
        event = yframes.encode(yframes.Event(
            event_type=yframes.DOCUMENT_UPDATED,
            doc_id=key,
            event_id="evt_" + "".join(secrets.choice(_NANOID_ALPHABET) for _ in range(21)),
            timestamp=self._modified[key],
            metadata={"channel": channel} if channel != key else None,
            update=diff,
        ))
        with self._ws_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            if sock.key == channel and yframes.DOCUMENT_UPDATED in sock.subscriptions:
                if sock.send(event):
                    self._events_sent += 1
            if sock.key == key and diff:  # the socket's own document: a live sync update
                sock.send(yframes.encode(yframes.SyncUpdate(diff)))

    def _head(self, key: str) -> yframes.Head | None:
        """The document's snapshot and last change, or None when it has none (lock held)."""
        snapshot = self._snapshots.get(key)
        if snapshot is None:
            data = self._docs.get(key)
            if data is None:
                return None
            try:
                snapshot = Snapshot.from_doc(_load(data)).encode()
            except Exception:  # raw bytes from put_update that do not decode
                return None
            self._snapshots[key] = snapshot
        return yframes.Head(snapshot=snapshot, last_seen=self._modified.get(key, 0))

    def _serve_socket(self, sock: DocSocket) -> None:
        """Greet like the real server, then answer frames until the connection ends."""
        with self._ws_lock:
            self._sockets.add(sock)
        try:
            with self._lock:
                state = _load(self._docs.get(sock.key, _EMPTY_UPDATE)).get_state()
            sock.send(yframes.encode(yframes.SyncStep1(state)))
            sock.send(yframes.encode(yframes.Awareness(b"\x00")))  # no clients
            while True:
                opcode, payload = sock.ws.receive()
                if opcode != OP_BINARY:
                    continue  # the real server ignores text messages
                try:
                    message = yframes.decode_frame(payload)[0]
                except yframes.FrameError as exc:
                    log.debug("devrelay socket frame not understood error=%s", exc)
                    continue  # logged and ignored; the connection stays open
                self._on_socket_message(sock, message)
        except WsClosed:
            pass
        finally:
            with self._ws_lock:
                self._sockets.discard(sock)

    def _on_socket_message(self, sock: DocSocket, message: yframes.Message) -> None:
        if isinstance(message, yframes.SyncStep1):
            with self._lock:
                doc = _load(self._docs.get(sock.key, _EMPTY_UPDATE))
                try:
                    update = doc.get_update(message.state_vector)
                except Exception:
                    return
            sock.send(yframes.encode(yframes.SyncStep2(update)))
        elif isinstance(message, (yframes.SyncStep2, yframes.SyncUpdate)):
            if message.update and sock.role == "write":
                try:
                    self.apply_update(sock.key, message.update)
                except Exception:
                    log.debug("devrelay socket update not applied doc=%s", sock.key)
        elif isinstance(message, yframes.EventSubscribe):
            sock.subscriptions.update(message.event_types)
        elif isinstance(message, yframes.EventUnsubscribe):
            sock.subscriptions.difference_update(message.event_types)
        elif isinstance(message, yframes.QuerySubdocs):
            heads = {}
            with self._lock:
                self._heads_queries += 1
                for guid in message.guids:
                    try:
                        key = self._key(guid)
                        by_uuid = False
                    except InvalidId:
                        try:  # a bare document UUID: entries the backfill tool made
                            key = self._key(compound_id(sock.key[:36], parse_uuid(guid)))
                            by_uuid = True
                        except InvalidId:
                            continue
                    if (self._channels.get(key) != sock.key or key in self._forgotten
                            or (key in self._backfilled) != by_uuid):
                        continue
                    head = self._head(key)
                    if head is not None:
                        heads[guid] = head
            sock.send(yframes.encode(yframes.Subdocs(heads)))

    # -- webhooks ---------------------------------------------------------------------

    def set_webhooks(self, config: list[dict[str, Any]]) -> None:
        """Announce every later document change by POST, like the Relay Server's
        ``RELAY_SERVER_WEBHOOK_CONFIG``.

        Args:
            config: entries ``{"url", "auth_token", "prefix" (optional), "timeout_ms"
                (optional, 5000)}``; an entry takes a document only when its compound id
                starts with ``prefix``. The token is sent as ``Authorization: Bearer``.
        """
        with self._lock:
            self._webhooks = [dict(entry) for entry in config]
            if self._webhooks and self._sender is None:
                self._sender = threading.Thread(target=self._send_webhooks, name="devrelay-webhooks", daemon=True)
                self._sender.start()

    def _send_webhooks(self) -> None:
        import requests

        with requests.Session() as session:
            while True:
                key = self._outbox.get()
                if key is None:
                    return
                with self._lock:
                    targets = [w for w in self._webhooks if key.startswith(w.get("prefix") or "")]
                for hook in targets:
                    status: int | None = None
                    try:
                        reply = session.post(hook["url"], json=self.webhook_payload(key),
                                             headers={"Authorization": f"Bearer {hook.get('auth_token', '')}"},
                                             timeout=hook.get("timeout_ms", 5000) / 1000)
                        status = reply.status_code
                    except requests.RequestException as exc:  # one attempt, like the real server
                        log.debug("devrelay webhook not delivered url=%s doc=%s error=%s", hook["url"], key, exc)
                    with self._lock:
                        self.deliveries.append((hook["url"], key, status))

    @staticmethod
    def webhook_payload(
        compound: str, *, user: str | None = None, timestamp: datetime | None = None
    ) -> dict[str, Any]:
        """The JSON body the real server POSTs for one update of ``compound``."""
        when = (timestamp or datetime.now(UTC)).astimezone(UTC)
        return {
            "eventType": "document.updated",
            "eventId": "evt_" + "".join(secrets.choice(_NANOID_ALPHABET) for _ in range(21)),
            "payload": {
                "doc_id": compound,
                "user": user,
                "metadata": {},
                "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            },
        }


class FolderHandle:
    """Builder for one shared folder on a :class:`DevRelay`.

    Paths are given as ``notes/a.md`` and stored as ``/notes/a.md``.  Every method is
    one Yjs transaction on the folder document (and on the file's own document).
    Set ``nested_entries = True`` to store new index values as nested Y.Maps, the
    other form docs/relay-protocol.md says occurs. Every writing method takes ``user=``: the relay
    user its edits are registered under in ``users`` (default :data:`DEMO_USER`; None:
    none).
    """

    def __init__(self, relay: DevRelay, relay_id: str, folder_id: str):
        self.relay = relay
        self.relay_id = relay_id
        self.folder_id = folder_id
        self.compound_id = compound_id(relay_id, folder_id)
        self.nested_entries = False

    def __repr__(self) -> str:
        return f"FolderHandle({self.compound_id})"

    # -- reading ----------------------------------------------------------------------

    def entries(self) -> dict[str, dict[str, Any]]:
        """``/path`` -> entry dict from ``filemeta_v0`` (numbers as pycrdt gives them)."""
        doc = _load(self.relay.get_update(self.compound_id) or _EMPTY_UPDATE)
        return dict(doc.get("filemeta_v0", type=Map).to_py() or {})

    def legacy_docs(self) -> dict[str, str]:
        """The legacy ``docs`` map: ``/path`` -> doc UUID."""
        doc = _load(self.relay.get_update(self.compound_id) or _EMPTY_UPDATE)
        return dict(doc.get("docs", type=Map).to_py() or {})

    def entry(self, path: str) -> dict[str, Any]:
        key = _norm(path)
        found = self.entries().get(key)
        if found is None:
            legacy = self.legacy_docs().get(key)
            if legacy is None:
                raise KeyError(f"no entry at {key} in folder {self.compound_id}")
            return {"id": legacy, "type": "markdown", "version": 0}
        return found

    def doc_id(self, path: str) -> str:
        return str(self.entry(path)["id"])

    def doc_compound_id(self, path: str) -> str:
        """``<relay>-<doc>`` of the document at ``path``."""
        return compound_id(self.relay_id, self.doc_id(path))

    def text(self, path: str) -> str:
        update = self.relay.get_update(self.doc_compound_id(path)) or _EMPTY_UPDATE
        return str(_load(update).get("contents", type=Text))

    # -- writing ----------------------------------------------------------------------

    def mkdir(self, path: str, *, doc_id: str | None = None, user: str | None = DEMO_USER) -> str:
        """Add a ``folder`` entry (and missing parents); returns its id (idempotent)."""
        key = _norm(path)
        with self.relay._lock:
            existing = self.entries().get(key)
            if existing is not None:
                if existing.get("type") != "folder":
                    raise ValueError(f"{key} exists and is a {existing.get('type')}")
                return str(existing["id"])
            self._mkparents(key, user=user)
            new_id = doc_id or str(uuid.uuid4())
            self._set_entries({key: {"id": new_id, "type": "folder", "version": 0}}, user=user)
            return new_id

    def put_markdown(
        self,
        path: str,
        text: str,
        doc_id: str | None = None,
        *,
        doc_type: str = "markdown",
        legacy: bool = True,
        legacy_only: bool = False,
        user: str | None = DEMO_USER,
    ) -> str:
        """Create a text document at ``path``, or edit the existing one to ``text``.

        Args:
            doc_type: the index type (``markdown``; ``document`` or ``file`` also occur).
            legacy: also record the path in the legacy ``docs`` map.
            legacy_only: record it only there (an entry missing from ``filemeta_v0``).

        Returns:
            The document UUID.
        """
        key = _norm(path)
        with self.relay._lock:
            try:
                existing = self.entry(key)
            except KeyError:
                existing = None
            if existing is not None:
                self.edit_markdown(key, text, user=user)
                return str(existing["id"])
            self._mkparents(key, user=user)
            new_id = doc_id or str(uuid.uuid4())
            self.relay.route(compound_id(self.relay_id, new_id), self.compound_id)
            with self.relay.edit(compound_id(self.relay_id, new_id), user=user) as doc:
                if text:
                    doc.get("contents", type=Text).insert(0, text)
            entry = {"id": new_id, "type": doc_type, "version": 0}
            self._set_entries(
                {} if legacy_only else {key: entry},
                legacy={key: new_id} if (legacy or legacy_only) else None,
                user=user,
            )
            return new_id

    def edit_markdown(self, path: str, text: str, *, user: str | None = DEMO_USER) -> None:
        """Change the text to ``text`` as one minimal delete + insert (a real Yjs diff)."""
        cid = self.doc_compound_id(path)
        with self.relay.edit(cid, user=user) as doc:
            ytext = doc.get("contents", type=Text)
            old = str(ytext)
            if old == text:
                return
            prefix = 0
            limit = min(len(old), len(text))
            while prefix < limit and old[prefix] == text[prefix]:
                prefix += 1
            suffix = 0
            while (
                suffix < limit - prefix
                and old[len(old) - 1 - suffix] == text[len(text) - 1 - suffix]
            ):
                suffix += 1
            # pycrdt indexes Text in UTF-8 bytes; cut at code point boundaries.
            start = len(old[:prefix].encode())
            end = len(old[: len(old) - suffix].encode())
            if end > start:
                del ytext[start:end]
            inserted = text[prefix : len(text) - suffix]
            if inserted:
                ytext.insert(start, inserted)

    def put_canvas(self, path: str, canvas: dict[str, Any], doc_id: str | None = None, *,
                   user: str | None = DEMO_USER) -> str:
        """Create or replace a canvas: nodes/edges maps plus a Y.Text per text node."""
        key = _norm(path)
        with self.relay._lock:
            existing = self.entries().get(key)
            new_id = str(existing["id"]) if existing else (doc_id or str(uuid.uuid4()))
            if existing is None:
                self.relay.route(compound_id(self.relay_id, new_id), self.compound_id)
            with self.relay.edit(compound_id(self.relay_id, new_id), user=user) as doc:
                nodes = doc.get("nodes", type=Map)
                edges = doc.get("edges", type=Map)
                for k in list(nodes.keys()):
                    del nodes[k]
                for k in list(edges.keys()):
                    del edges[k]
                for node in canvas.get("nodes", []):
                    nodes[str(node["id"])] = dict(node)
                    if node.get("type") == "text":
                        ytext = doc.get(str(node["id"]), type=Text)
                        if len(ytext):
                            del ytext[0 : len(ytext)]
                        if node.get("text"):
                            ytext.insert(0, str(node["text"]))
                for edge in canvas.get("edges", []):
                    edges[str(edge["id"])] = dict(edge)
            if existing is None:
                self._mkparents(key, user=user)
                self._set_entries({key: {"id": new_id, "type": "canvas", "version": 0}}, user=user)
            return new_id

    def set_canvas_text(self, path: str, node_id: str, text: str, *, user: str | None = DEMO_USER) -> None:
        """Change a text node's live Y.Text only (its node object's ``text`` goes stale)."""
        with self.relay.edit(self.doc_compound_id(path), user=user) as doc:
            ytext = doc.get(node_id, type=Text)
            if len(ytext):
                del ytext[0 : len(ytext)]
            ytext.insert(0, text)

    def put_attachment(
        self,
        path: str,
        data: bytes,
        mimetype: str = "application/octet-stream",
        doc_id: str | None = None,
        *,
        doc_type: str | None = None,
        synctime: int | None = None,
        user: str | None = DEMO_USER,
    ) -> str:
        """Store ``data`` as a blob and point the entry at its hash (new or updated)."""
        key = _norm(path)
        digest = self.relay.put_blob(data, mimetype)
        with self.relay._lock:
            existing = self.entries().get(key)
            new_id = str(existing["id"]) if existing else (doc_id or str(uuid.uuid4()))
            if existing is None:
                self._mkparents(key, user=user)
            entry = {
                "id": new_id,
                "type": doc_type or _attachment_type(mimetype, key),
                "version": 0,
                "hash": digest,
                "mimetype": mimetype,
                "synctime": synctime if synctime is not None else int(time.time() * 1000),
            }
            self._set_entries({key: entry}, user=user)
            return new_id

    def set_entry(self, key: str, value: Any, *, user: str | None = DEMO_USER) -> None:
        """Write any raw value under ``key`` in ``filemeta_v0``, both taken verbatim (no
        leading ``/`` added, no checks), for malformed and hostile entry tests."""
        with self.relay._lock:
            self._set_entries({key: value}, user=user)

    def rename(self, old: str, new: str, *, user: str | None = DEMO_USER) -> None:
        """Move an entry (same doc id); a folder takes its children along."""
        src, dst = _norm(old), _norm(new)
        with self.relay._lock:
            entries, legacy = self.entries(), self.legacy_docs()
            if src not in entries and src not in legacy:
                raise KeyError(f"no entry at {src} in folder {self.compound_id}")
            if dst in entries or dst in legacy:
                raise ValueError(f"{dst} already exists in folder {self.compound_id}")
            self._mkparents(dst, user=user)
            moves = {
                p: dst + p[len(src) :]
                for p in set(entries) | set(legacy)
                if p == src or p.startswith(src + "/")
            }
            with self.relay.edit(self.compound_id, user=user) as doc:
                meta, docs = doc.get("filemeta_v0", type=Map), doc.get("docs", type=Map)
                for p, q in moves.items():
                    if p in entries:
                        value = entries[p]
                        del meta[p]
                        meta[q] = Map(value) if self.nested_entries else value
                    if p in legacy:
                        del docs[p]
                        docs[q] = legacy[p]

    def delete(self, path: str, *, user: str | None = DEMO_USER) -> None:
        """Remove an entry (a folder: with its children); documents stay on the server."""
        key = _norm(path)
        with self.relay._lock:
            entries, legacy = self.entries(), self.legacy_docs()
            if key not in entries and key not in legacy:
                raise KeyError(f"no entry at {key} in folder {self.compound_id}")
            with self.relay.edit(self.compound_id, user=user) as doc:
                meta, docs = doc.get("filemeta_v0", type=Map), doc.get("docs", type=Map)
                for p in list(entries):
                    if p == key or p.startswith(key + "/"):
                        del meta[p]
                for p in list(legacy):
                    if p == key or p.startswith(key + "/"):
                        del docs[p]

    def touch(self, path: str | None = None) -> None:
        """A housekeeping update with no content change (the ``users`` map), like the
        server's compaction: the update bytes change, the content does not."""
        cid = self.doc_compound_id(path) if path else self.compound_id
        with self.relay.edit(cid, user=None) as doc:
            users = doc.get("users", type=Map)
            users["devrelay"] = {"touched": secrets.token_hex(4)}

    # -- internals --------------------------------------------------------------------

    def compact_users(self, path: str | None = None) -> None:
        """The server's compaction of ``users`` (:meth:`DevRelay.compact_users`) on the
        document at ``path``, or on the folder document."""
        self.relay.compact_users(self.doc_compound_id(path) if path else self.compound_id)

    def _mkparents(self, key: str, *, user: str | None = DEMO_USER) -> None:
        parts = key.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.mkdir("/".join(parts[:i]), user=user)

    def _set_entries(self, values: dict[str, Any], *, legacy: dict[str, str] | None = None,
                     user: str | None = DEMO_USER) -> None:
        with self.relay.edit(self.compound_id, user=user) as doc:
            meta = doc.get("filemeta_v0", type=Map)
            for k, v in values.items():
                meta[k] = Map(v) if self.nested_entries and isinstance(v, dict) else v
            if legacy:
                docs = doc.get("docs", type=Map)
                for k, v in legacy.items():
                    docs[k] = v


# -- demo content ------------------------------------------------------------------------


def tiny_png(rgba: tuple[int, int, int, int] = (46, 139, 87, 255)) -> bytes:
    """A valid 1x1 RGBA PNG, built in code."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    idat = zlib.compress(b"\x00" + bytes(rgba))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiny_pdf(text: str = "Hello from devrelay") -> bytes:
    """A valid one-page PDF with correct xref offsets, built in code."""
    stream = f"BT /F1 18 Tf 36 100 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144]"
        b" /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def sample_vault(handle: FolderHandle) -> dict[str, str]:
    """Fill a small demo vault: notes (one with unicode), a nested folder, a canvas,
    a PNG and a PDF.  Returns path -> doc id."""
    made: dict[str, str] = {}
    made["README.md"] = handle.put_markdown(
        "README.md", "# Demo vault\n\nMirrored into Git by relay-git-sync.\n"
    )
    made["notes/ideas.md"] = handle.put_markdown(
        "notes/ideas.md", "# Ideas\n\n- sync folders to git\n- see [[README]]\n"
    )
    made["notes/grüße 🌍.md"] = handle.put_markdown(
        "notes/grüße 🌍.md", "Grüße, 世界! 👋🏽 naïve café — עברית\n"
    )
    made["notes/archive/2024.md"] = handle.put_markdown("notes/archive/2024.md", "Old notes.\n")
    made["boards/plan.canvas"] = handle.put_canvas(
        "boards/plan.canvas",
        {
            "nodes": [
                {
                    "id": "n1",
                    "type": "text",
                    "text": "Plan",
                    "x": 0,
                    "y": 0,
                    "width": 250,
                    "height": 60,
                },
                {
                    "id": "n2",
                    "type": "file",
                    "file": "notes/ideas.md",
                    "x": 300,
                    "y": 0,
                    "width": 400,
                    "height": 300,
                    "color": "4",
                },
            ],
            "edges": [{"id": "e1", "fromNode": "n1", "toNode": "n2", "toEnd": "arrow"}],
        },
    )
    made["assets/pixel.png"] = handle.put_attachment("assets/pixel.png", tiny_png(), "image/png")
    made["assets/tiny.pdf"] = handle.put_attachment(
        "assets/tiny.pdf", tiny_pdf(), "application/pdf"
    )
    made["empty folder"] = handle.mkdir("empty folder")
    return made


def connectors_snippet(handle: FolderHandle, url: str = "./vault.git") -> str:
    """A ``git_connectors.toml`` table for ``handle``'s folder, ready to paste."""
    return (
        "[[git_connector]]\n"
        f'relay_id = "{handle.relay_id}"\n'
        f'shared_folder_id = "{handle.folder_id}"\n'
        f'url = "{url}"   # or git@host:me/vault.git\n'
        'branch = "main"\n'
        'transport = "websocket"\n'
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m gitsync.dev.relay``: run the stand-in on its own until Ctrl-C or SIGTERM.

    A development tool for trying relay-git-sync without a Relay Server; it is not one.
    Prints the base URL, the API key, one folder's relay and folder ids and a connectors
    table for it.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m gitsync.dev.relay",
        description="Relay Server stand-in for development (not a Relay Server): serves shared "
        "folders from memory over HTTP and the document websocket.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--api-key", help="bearer token to require (default: a random one)")
    parser.add_argument("--relay-id", help="relay UUID of the folder (default: random)")
    parser.add_argument("--folder-id", help="shared folder UUID (default: random)")
    parser.add_argument("--sample", action="store_true",
                        help="fill the folder with sample notes, a canvas, an image and a PDF")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    api_key = args.api_key or secrets.token_urlsafe(16)
    relay = DevRelay(api_key=api_key, host=args.host, port=args.port)
    try:
        handle = relay.add_folder(args.relay_id, args.folder_id)
        relay.start()
    except (InvalidId, OSError) as exc:
        parser.error(f"cannot start the stand-in: {exc}")
    try:
        made = sample_vault(handle) if args.sample else {}
        lines = [
            "Relay Server stand-in (development only, not a Relay Server)",
            f"url:       {relay.url}",
            f"api key:   {api_key}",
            f"relay id:  {handle.relay_id}",
            f"folder id: {handle.folder_id}  ({len(made)} entries)",
            "",
            "point relay-git-sync at it:",
            f"  export RELAY_SERVER_URL={relay.url}",
            f"  export RELAY_SERVER_API_KEY={api_key}",
            "",
            "git_connectors.toml (in the data directory):",
            *("  " + line for line in connectors_snippet(handle).splitlines()),
            "",
            "Ctrl-C or SIGTERM stops it; everything is kept in memory only.",
        ]
        print("\n".join(lines), flush=True)
        stop.wait()
    finally:
        relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
