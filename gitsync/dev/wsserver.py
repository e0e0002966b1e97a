"""Server side of RFC 6455 websockets for the Relay stand-in (development and tests only).

:mod:`gitsync.dev.relay` serves HTTP with the standard library; its document websocket
(``/d/{id}/ws/{id}``) is upgraded inside the same request handler, on the same port,
so a stand-in base URL means the same as a real Relay Server's. This module holds the
small part of RFC 6455 a server needs for that: the handshake answer, reading masked
client frames (fragments, ping, close) and writing unmasked ones. It is not a general
websocket server and nothing in the product uses it.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
from typing import BinaryIO

__all__ = ["WsConnection", "WsClosed", "accept_key", "OP_BINARY", "OP_TEXT"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 1024 * 1024


class WsClosed(Exception):
    """The peer closed the connection, or broke the protocol so we closed it."""


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1(client_key.strip().encode() + _GUID).digest()  # noqa: S324 (RFC 6455)
    return base64.b64encode(digest).decode()


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


class WsConnection:
    """One upgraded connection: read whole messages, write frames from any thread.

    Args:
        sock: the connected socket (written directly, never through a buffer).
        rfile: a buffered reader over ``sock`` that may already hold client bytes.
    """

    def __init__(self, sock: socket.socket, rfile: BinaryIO):
        self.sock = sock
        self.rfile = rfile
        self._send_lock = threading.Lock()
        self.closed = False

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise WsClosed("connection ended")
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b0, b1 = self._read_exact(2)
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        if b0 & 0x70:
            self.close(1002, "reserved bits set")
            raise WsClosed("reserved bits set")
        if not b1 & 0x80:
            self.close(1002, "client frames must be masked")
            raise WsClosed("unmasked client frame")
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", self._read_exact(8))
        if length > MAX_MESSAGE:
            self.close(1009, "message too big")
            raise WsClosed("message too big")
        mask = self._read_exact(4)
        return fin, opcode, _unmask(self._read_exact(length), mask)

    def receive(self) -> tuple[int, bytes]:
        """The next data message as ``(opcode, payload)``; answers pings on the way.

        Raises:
            WsClosed: the peer closed (a close frame is answered) or the socket ended.
        """
        parts: list[bytes] = []
        opcode = None
        while True:
            fin, op, payload = self._read_frame()
            if op == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1000
                self.close(code if code in (1000, 1001) else 1000)
                raise WsClosed(f"peer closed with code {code}")
            if op in (OP_TEXT, OP_BINARY):
                if opcode is not None:
                    self.close(1002, "new message inside a fragmented one")
                    raise WsClosed("interleaved message")
                opcode = op
            elif op != OP_CONT or opcode is None:
                self.close(1002, "unexpected opcode")
                raise WsClosed(f"unexpected opcode {op}")
            parts.append(payload)
            if sum(len(p) for p in parts) > MAX_MESSAGE:
                self.close(1009, "message too big")
                raise WsClosed("message too big")
            if fin:
                return opcode, b"".join(parts)

    def send(self, opcode: int, payload: bytes = b"") -> None:
        """Write one unmasked frame (thread-safe).

        Raises:
            WsClosed: the connection is closed or the write failed.
        """
        length = len(payload)
        if length < 126:
            header = struct.pack(">BB", 0x80 | opcode, length)
        elif length < 1 << 16:
            header = struct.pack(">BBH", 0x80 | opcode, 126, length)
        else:
            header = struct.pack(">BBQ", 0x80 | opcode, 127, length)
        with self._send_lock:
            if self.closed and opcode != OP_CLOSE:
                raise WsClosed("connection closed")
            try:
                self.sock.sendall(header + payload)
            except OSError as exc:
                self.closed = True
                raise WsClosed(f"send failed: {exc}") from None

    def send_binary(self, payload: bytes) -> None:
        self.send(OP_BINARY, payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame once (errors ignored); the reader then sees the end."""
        if self.closed:
            return
        try:
            self.send(OP_CLOSE, struct.pack(">H", code) + reason.encode()[:120])
        except WsClosed:
            pass
        self.closed = True

    def abort(self) -> None:
        """Cut the TCP connection with no close frame (a network failure)."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
