"""The Relay client honours the environment's proxy settings, resolved once per client.

A small forwarding HTTP proxy on 127.0.0.1 records the requests it carries; the client is
pointed at a host name that does not resolve, so a fetch only succeeds through the proxy.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from gitsync.dev.relay import DevRelay
from gitsync.relay import RelayClient, Unavailable
from tests.fixtures_relay import TEST_API_KEY

UNRESOLVABLE = "relay.invalid"


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlsplit(upstream)
        self.seen: list[str] = []
        self.hosts: list[str | None] = []


class _Forward(BaseHTTPRequestHandler):
    """Forward a GET in absolute form to the stand-in, whatever host it names."""

    server: _Proxy

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        self.server.hosts.append(self.headers.get("Host"))
        target = urlsplit(self.path)
        conn = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection")}
        conn.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
        reply = conn.getresponse()
        body = reply.read()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        conn.close()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(relay_server: DevRelay) -> Iterator[_Proxy]:
    server = _Proxy(relay_server.url or "")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_requests_go_through_the_configured_proxy(relay_server, proxy, monkeypatch):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "through the proxy\n")
    cid = folder.doc_compound_id("a.md")
    port = urlsplit(relay_server.url).port
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with RelayClient(f"http://{UNRESOLVABLE}:{port}", TEST_API_KEY, retries=0) as client:
        assert client.get_update(cid) == relay_server.get_update(cid)
        assert client.get_update(cid) == relay_server.get_update(cid)
    assert [urlsplit(p).hostname for p in proxy.seen] == [UNRESOLVABLE, UNRESOLVABLE]


def test_no_proxy_is_honoured(relay_server, proxy, monkeypatch):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "direct\n")
    port = urlsplit(relay_server.url).port
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", UNRESOLVABLE)
    with RelayClient(f"http://{UNRESOLVABLE}:{port}", TEST_API_KEY, retries=0) as client:
        with pytest.raises(Unavailable, match="could not be resolved"):
            client.get_update(folder.doc_compound_id("a.md"))
    assert proxy.seen == []


def test_user_info_of_the_relay_url_never_reaches_the_proxy(relay_server, proxy, monkeypatch):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "through the proxy\n")
    cid = folder.doc_compound_id("a.md")
    port = urlsplit(relay_server.url).port
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with RelayClient(f"http://someone:url-secret@{UNRESOLVABLE}:{port}", TEST_API_KEY,
                     retries=0) as client:
        assert client.get_update(cid) == relay_server.get_update(cid)
    assert proxy.seen == [f"http://{UNRESOLVABLE}:{port}/d/{cid}/as-update"]
    assert proxy.hosts == [f"{UNRESOLVABLE}:{port}"]
