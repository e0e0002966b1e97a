"""Slow and silent clients under the real gunicorn server (the Relay Server never retries
a webhook, so a few idle sockets must not make the service miss one)."""

from __future__ import annotations

import json
import socket

import pytest
import requests

from gitsync.dev.relay import DevRelay

from .harness import SECRET, GunicornService, wait_for, write_connectors

pytestmark = pytest.mark.slow

SLOW_CLIENTS = 50
# What each slow client sends before it stalls: nothing, half a request line, half a
# header block, and a complete head whose announced body never fully arrives.
STALLS = [
    b"",
    b"GET /health HT",
    b"POST /webhooks HTTP/1.1\r\nHost: relay-git-sync\r\nContent-Le",
    b"POST /webhooks HTTP/1.1\r\nHost: relay-git-sync\r\nContent-Type: application/json\r\n"
    b"Content-Length: 400\r\n\r\n{\"eventType\": \"document.upd",
]


def _still_open(sock: socket.socket) -> bool:
    """True when the server has neither answered nor closed this connection."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data would be an early answer: also not "waiting"
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_fifty_slow_clients_do_not_starve_health_or_webhooks(relay_server: DevRelay, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder])
    svc = GunicornService(relay_server, data_dir)
    slow: list[socket.socket] = []
    try:
        svc.wait_healthy()
        wait_for(lambda: svc.status()["initial_sync"] == "done", "startup sync")
        for n in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
            slow.append(sock)
            if STALLS[n % len(STALLS)]:
                sock.sendall(STALLS[n % len(STALLS)])
        # Fresh connections, as the Relay Server and a health checker would open them.
        # The timeout only bounds a hung test: a starved server never answers at all.
        health = requests.get(f"{svc.url}/health", timeout=10)
        assert health.status_code == 200
        folder.edit_markdown("a.md", "two\n")
        reply = requests.post(
            f"{svc.url}/webhooks",
            json=relay_server.webhook_payload(folder.doc_compound_id("a.md")),
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=10,
        )
        assert reply.status_code == 202, reply.text
        # The answers came while every slow client was still connected and waiting.
        assert [n for n, sock in enumerate(slow) if not _still_open(sock)] == []
    finally:
        for sock in slow:
            sock.close()
        svc.close()


def _exchange(port: int, *pieces: bytes) -> bytes:
    """Send ``pieces`` one after another on one connection; return all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for piece in pieces:
            sock.sendall(piece)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_requests_of_every_shape_still_get_answers(relay_server: DevRelay, tmp_path):
    """Reading requests in the worker's loop must not change what well-formed (or
    oversized) requests get: keep-alive, pipelining, pieces, chunked and large bodies."""
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder])
    svc = GunicornService(relay_server, data_dir)
    try:
        svc.wait_healthy()
        body = json.dumps(relay_server.webhook_payload(folder.doc_compound_id("a.md"))).encode()
        head = (f"POST /webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\n"
                "Content-Type: application/json\r\n").encode()
        sized = head + b"Content-Length: %d\r\n\r\n" % len(body) + body

        # keep-alive: several requests on one connection
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {SECRET}"
            for _ in range(3):
                assert session.get(f"{svc.url}/health", timeout=10).status_code == 200
                assert session.post(f"{svc.url}/webhooks", data=body, timeout=10,
                                    headers={"Content-Type": "application/json"}).status_code == 202

        # a request in pieces (split inside the line, the headers and the body)
        answer = _exchange(svc.port, sized[:7], sized[7:60], sized[60:-5], sized[-5:])
        assert answer.startswith(b"HTTP/1.1 202"), answer[:200]

        # two pipelined requests in one send, the second closing the connection
        health = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = _exchange(svc.port, sized + health)
        assert answer.count(b"HTTP/1.1 ") == 2
        assert answer.startswith(b"HTTP/1.1 202") and b"HTTP/1.1 200" in answer

        # a chunked body (no Content-Length), read by the thread
        chunked = (head + b"Transfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        assert _exchange(svc.port, chunked).startswith(b"HTTP/1.1 202")

        # bodies over the limit: announced small enough to buffer, and too large to
        big = b"x" * (200 * 1024)
        for size in (len(big), 10 * 1024 * 1024):
            answer = _exchange(svc.port, head + b"Content-Length: %d\r\n\r\n" % size + big)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

        # forwarded headers from a client are not trusted: no proxy hops are configured
        spoofed = requests.get(f"{svc.url}/docs", allow_redirects=False, timeout=10, headers={
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "X-Forwarded-Prefix": "/x"})
        assert spoofed.status_code == 308
        assert spoofed.headers["Location"] in ("/docs/", f"{svc.url}/docs/"), spoofed.headers["Location"]

        # a head larger than any request we serve
        answer = _exchange(svc.port, b"GET /health HTTP/1.1\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    finally:
        svc.close()
