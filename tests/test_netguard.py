"""Attachment download URLs: refused targets are refused before any packet leaves.

Every test here records the addresses sockets try to connect to (a ``sys`` audit
hook) and blocks any that is not on 127.0.0.0/8 or ::1, so even a regression never
sends traffic off this machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from gitsync.config import settings_from_env
from gitsync.dev.relay import tiny_png
from gitsync.netguard import AddressPolicy, AddressRefused, address_class, guarded_adapter
from gitsync.relay import BadResponse, RelayClient, Unavailable
from tests.fixtures_relay import TEST_API_KEY
from tests.relay_faults import FaultyRelay

FAST = {"backoff": 0.001, "timeout": 5, "retries": 1}
PUBLIC_RELAY = "https://93.184.215.14"  # only classified, never connected to


class OffMachine(PermissionError):
    """Raised by the audit hook instead of connecting outside the loopback range.

    An ``OSError``, so the code under test closes its socket as after any failed
    connect (and reports a connection failure).
    """


_audit_lock = threading.Lock()
_audit_log: list[str] | None = None
_audit_installed = False


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _audit(event: str, args: tuple) -> None:
    if event != "socket.connect" or _audit_log is None:
        return
    address = args[1]
    if not isinstance(address, tuple):
        return  # a Unix socket
    host = str(address[0])
    _audit_log.append(host)
    if not _loopback(host):
        raise OffMachine(f"test tried to connect to {host}")


@contextlib.contextmanager
def connects() -> Iterator[list[str]]:
    """Collect the hosts every ``socket.connect`` targets; block non-loopback ones."""
    global _audit_log, _audit_installed
    with _audit_lock:
        if not _audit_installed:
            sys.addaudithook(_audit)
            _audit_installed = True
        _audit_log = seen = []
    try:
        yield seen
    finally:
        _audit_log = None


def attachment(relay: FaultyRelay) -> tuple[object, str, str]:
    folder = relay.add_folder()
    doc_id = folder.put_attachment("img/pixel.png", tiny_png(), "image/png")
    return folder, doc_id, folder.entries()["/img/pixel.png"]["hash"]


# -- through RelayClient and the stand-in --------------------------------------------------


@pytest.mark.parametrize("relay_host", ["localhost", "127.0.0.1"])
def test_a_loopback_relay_may_serve_loopback_downloads(relay_server: FaultyRelay, relay_host):
    """The stand-in's download URLs name 127.0.0.1 whatever name the relay is given."""
    folder, doc_id, digest = attachment(relay_server)
    base = relay_server.url.replace("127.0.0.1", relay_host)
    with RelayClient(base, TEST_API_KEY, **FAST) as client, connects() as seen:
        assert client.download_attachment(folder.relay_id, doc_id, digest) == tiny_png()
    assert relay_server.blob_fetch_count(digest) == 1
    assert seen and all(_loopback(h) for h in seen)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local"),
        ("http://10.0.0.1/blob", "private"),
        ("http://192.168.1.1:8080/blob", "private"),
        ("http://[::ffff:10.0.0.1]/blob", "private"),
        ("http://[::ffff:169.254.169.254]/blob", "link-local"),
        ("http://[fe80::1]/blob", "link-local"),
        ("http://[fd00::1]/blob", "private"),
        ("http://224.0.0.1/blob", "multicast"),
        ("http://0.0.0.0:{port}/blob/{digest}", "unspecified"),  # would reach this host
        ("http://[::]:{port}/blob/{digest}", "unspecified"),
    ],
)
def test_download_urls_to_other_address_classes_are_refused_before_connecting(
    relay_server: FaultyRelay, url: str, kind: str
):
    folder, doc_id, digest = attachment(relay_server)
    port = relay_server.url.rsplit(":", 1)[1]
    relay_server.set_download_url(digest, url.format(port=port, digest=digest))
    with RelayClient(relay_server.url, TEST_API_KEY, **FAST) as client, connects() as seen:
        with pytest.raises(BadResponse) as info:
            client.download_attachment(folder.relay_id, doc_id, digest)
    message = str(info.value)
    assert f"attachment {folder.relay_id}-{doc_id}: download URL refused" in message
    assert f"{kind} address" in message
    assert "--allow-private-attachment-urls" in message
    assert "RELAY_GIT_ALLOW_PRIVATE_ATTACHMENT_URLS" in message
    # Only the Relay Server was contacted (for the download URL), never the target.
    assert seen and all(_loopback(h) for h in seen)
    assert relay_server.blob_fetch_count(digest) == 0


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://h/1"])
def test_download_urls_that_are_not_http_are_refused(relay_server: FaultyRelay, url: str):
    folder, doc_id, digest = attachment(relay_server)
    relay_server.set_download_url(digest, url)
    with RelayClient(relay_server.url, TEST_API_KEY, **FAST) as client, connects() as seen:
        with pytest.raises(BadResponse, match="not http"):
            client.download_attachment(folder.relay_id, doc_id, digest)
    assert all(_loopback(h) for h in seen)


def test_hash_mismatch_names_no_computed_hash(relay_server: FaultyRelay, tmp_path):
    folder, doc_id, digest = attachment(relay_server)
    relay_server.set_blob_bytes(digest, b"whatever an internal URL answered")
    with RelayClient(relay_server.url, TEST_API_KEY, **FAST) as client:
        with pytest.raises(BadResponse) as info:
            client.download_attachment_to(folder.relay_id, doc_id, digest, tmp_path)
    message = str(info.value)
    assert "content does not match the hash in the folder index" in message
    assert not re.search(r"[0-9a-fA-F]{16}", message.replace(folder.relay_id, "")
                         .replace(doc_id, ""))
    assert list(tmp_path.iterdir()) == []


# -- the policy and the guarded adapter ----------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),
        ("fc00::1", "private"),
        ("::ffff:192.168.0.1", "private"),
        ("2002:0a00:0001::1", "private"),  # 6to4 around 10.0.0.1
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_address_classes(address: str, kind: str | None):
    assert address_class(ipaddress.ip_address(address)) == kind


def test_a_name_is_judged_by_what_it_resolves_to():
    """``localhost`` is refused for a public Relay Server, without connecting."""
    policy = AddressPolicy(PUBLIC_RELAY)
    with connects() as seen, pytest.raises(AddressRefused, match="loopback address"):
        policy.resolve("localhost", 80)
    assert seen == []
    allowed = AddressPolicy(PUBLIC_RELAY, allow_all=True).resolve("localhost", 80)
    assert allowed and all(_loopback(ip) for _, ip in allowed)
    # A Relay Server reached by a loopback name allows loopback targets.
    assert AddressPolicy("http://localhost:9").relay_classes() == {"loopback"}


def test_guarded_adapter_checks_where_it_connects(relay_server: FaultyRelay):
    """The address check lives in the connection, so it also covers redirects."""
    folder, doc_id, digest = attachment(relay_server)
    blob = relay_server._signed_blob_url(digest)
    for allow_all, fetched in ((False, 0), (True, 1)):
        with requests.Session() as session, connects() as seen:
            session.mount("http://", guarded_adapter(AddressPolicy(PUBLIC_RELAY,
                                                                   allow_all=allow_all)))
            if allow_all:
                assert session.get(blob, timeout=5).content == tiny_png()
            else:
                with pytest.raises(AddressRefused):
                    session.get(blob, timeout=5)
                assert seen == []
        assert relay_server.blob_fetch_count(digest) == fetched


def test_the_setting_reaches_the_client(relay_server: FaultyRelay):
    on = settings_from_env({"RELAY_GIT_ALLOW_PRIVATE_ATTACHMENT_URLS": "true"})
    assert on.allow_private_attachment_urls is True
    assert settings_from_env({}).allow_private_attachment_urls is False
    folder, doc_id, digest = attachment(relay_server)
    relay_server.set_download_url(digest, "http://10.0.0.1/blob")
    with RelayClient(relay_server.url, TEST_API_KEY, allow_private_attachment_urls=True,
                     **FAST) as client, connects() as seen:
        # Allowed now, so the client tries 10.0.0.1: the test's audit hook stops it.
        with pytest.raises(Unavailable, match="connection failed"):
            client.download_attachment(folder.relay_id, doc_id, digest)
    assert seen[-1] == "10.0.0.1"

