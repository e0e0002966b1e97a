"""The Relay client's transport: HTTPS with the environment's CA bundle, HTTPS through a
proxy, and redirects that leave the Relay Server's origin.

A TLS front on 127.0.0.1 (certificate signed by a CA made for the test) forwards every GET
to the stand-in.  The client trusts that CA only when ``REQUESTS_CA_BUNDLE`` names it; a
CONNECT proxy carries the HTTPS connection when ``HTTPS_PROXY`` names it, with the proxy
credentials of its URL.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gitsync.dev.relay import DevRelay
from gitsync.relay import RelayClient, Unauthorized, Unavailable
from tests.fixtures_relay import TEST_API_KEY

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

UNRESOLVABLE = "relay.invalid"
PROXY_USER, PROXY_PASSWORD = "proxyuser", "proxy-secret-pw"


def _make_certificates(where: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for 127.0.0.1, localhost and relay.invalid.

    Returns (CA bundle, server certificate, server key) as PEM files.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay-git-sync test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName(UNRESOLVABLE),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = where / "ca.pem", where / "server.pem", where / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


class _TLSFront(ThreadingHTTPServer):
    """HTTPS on 127.0.0.1 that forwards each GET to the stand-in over plain HTTP."""

    daemon_threads = True

    def __init__(self, upstream: str, context: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlsplit(upstream)
        self.context = context
        self.seen: list[str] = []
        self.accepted = 0

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        self.accepted += 1
        # The handshake happens in the handler's thread, on its first read.
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), addr

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that refuses our certificate ends its handshake: expected here


class _Forward(BaseHTTPRequestHandler):
    server: _TLSFront
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        conn.request("GET", self.path, headers=headers)
        reply = conn.getresponse()
        body = reply.read()
        conn.close()
        self.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _ConnectProxy(ThreadingHTTPServer):
    """A CONNECT proxy that asks for credentials and tunnels to 127.0.0.1 whatever host is named."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.tunnels: list[str] = []
        self.refused = 0


class _Tunnel(BaseHTTPRequestHandler):
    server: _ConnectProxy

    def do_CONNECT(self) -> None:
        expected = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
        if self.headers.get("Proxy-Authorization") != f"Basic {expected}":
            self.server.refused += 1
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.tunnels.append(self.path)
        port = int(self.path.rsplit(":", 1)[1])
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        sockets = [self.connection, upstream]
        try:
            while True:
                ready, _, _ = select.select(sockets, [], [], 10)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    return _make_certificates(tmp_path)


@pytest.fixture
def tls_front(relay_server: DevRelay, certificates) -> Iterator[_TLSFront]:
    _, cert, key = certificates
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _TLSFront(relay_server.url or "", context)
    for _ in _serve(server):
        yield server


@pytest.fixture
def connect_proxy() -> Iterator[_ConnectProxy]:
    server = _ConnectProxy()
    for _ in _serve(server):
        yield server


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                 "all_proxy", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def _doc(relay_server: DevRelay) -> str:
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "over tls\n")
    return folder.doc_compound_id("a.md")


def test_https_with_the_ca_bundle_of_the_environment(relay_server, tls_front, certificates,
                                                     no_proxy_env, monkeypatch):
    cid = _doc(relay_server)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates[0]))
    port = tls_front.server_address[1]
    with RelayClient(f"https://127.0.0.1:{port}", TEST_API_KEY, retries=0) as client:
        assert client.get_update(cid) == relay_server.get_update(cid)
        assert client.get_update(cid) == relay_server.get_update(cid)
        assert client.ready()
    assert tls_front.seen == [f"/d/{cid}/as-update"] * 2 + ["/ready"]


def test_https_is_refused_without_the_ca(relay_server, tls_front, no_proxy_env):
    cid = _doc(relay_server)
    port = tls_front.server_address[1]
    with RelayClient(f"https://127.0.0.1:{port}", TEST_API_KEY, retries=3,
                     backoff=0.01) as client:
        with pytest.raises(Unavailable, match="TLS handshake or certificate error") as err:
            client.get_update(cid)
        assert not client.ready()
    assert TEST_API_KEY not in str(err.value)
    assert tls_front.seen == []  # nothing was sent
    assert tls_front.accepted == 2  # and a certificate error is not retried


def test_https_through_a_connect_proxy_with_credentials(relay_server, tls_front, certificates,
                                                        connect_proxy, no_proxy_env,
                                                        monkeypatch):
    cid = _doc(relay_server)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates[0]))
    proxy_port = connect_proxy.server_address[1]
    monkeypatch.setenv("HTTPS_PROXY",
                       f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy_port}")
    port = tls_front.server_address[1]
    # The name does not resolve here: only the proxy (which maps it to 127.0.0.1) reaches it.
    with RelayClient(f"https://{UNRESOLVABLE}:{port}", TEST_API_KEY, retries=0) as client:
        assert client.get_update(cid) == relay_server.get_update(cid)
        assert client.get_update(cid) == relay_server.get_update(cid)
    assert connect_proxy.tunnels == [f"{UNRESOLVABLE}:{port}"]  # one kept-alive tunnel
    assert connect_proxy.refused == 0
    assert tls_front.seen == [f"/d/{cid}/as-update"] * 2


def test_a_refusing_proxy_fails_without_showing_its_credentials(relay_server, tls_front,
                                                                certificates, connect_proxy,
                                                                no_proxy_env, monkeypatch):
    cid = _doc(relay_server)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates[0]))
    proxy_port = connect_proxy.server_address[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://{PROXY_USER}:wrong-pw@127.0.0.1:{proxy_port}")
    port = tls_front.server_address[1]
    with RelayClient(f"https://{UNRESOLVABLE}:{port}", TEST_API_KEY, retries=0) as client:
        with pytest.raises(Unavailable) as err:
            client.get_update(cid)
    message = str(err.value)
    assert "wrong-pw" not in message and PROXY_USER not in message
    assert TEST_API_KEY not in message
    assert connect_proxy.refused == 1 and tls_front.seen == []


class _Redirector(ThreadingHTTPServer):
    """Answers every GET with a 307 to the same path on another origin."""

    daemon_threads = True

    def __init__(self, target: str):
        super().__init__(("127.0.0.1", 0), _Redirect)
        self.target = target
        self.authorized: list[bool] = []


class _Redirect(BaseHTTPRequestHandler):
    server: _Redirector

    def do_GET(self) -> None:
        self.server.authorized.append(self.headers.get("Authorization") is not None)
        self.send_response(307)
        self.send_header("Location", self.server.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirect_to_another_origin_drops_the_api_key(relay_server, no_proxy_env):
    cid = _doc(relay_server)
    port = urlsplit(relay_server.url).port
    # Another port is another origin: the stand-in is reached without the key, and says 401.
    other = _Redirector(f"http://127.0.0.1:{port}")
    for _ in _serve(other):
        with RelayClient(f"http://127.0.0.1:{other.server_address[1]}", TEST_API_KEY,
                         retries=0) as client:
            with pytest.raises(Unauthorized):
                client.get_update(cid)
    assert other.authorized == [True]
