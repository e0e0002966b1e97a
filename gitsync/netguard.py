"""Which addresses an attachment download may connect to, checked where it connects.

The Relay Server answers each attachment request with a download URL, and the service
fetches whatever URL it is given.  Without a check, a hostile or confused answer could
point at the cloud metadata service (169.254.169.254), at an admin port on the
loopback interface or at a machine of the internal network, and make the service
request it.  This module refuses such targets: an address that is loopback,
link-local, private, multicast, unspecified or reserved (IPv4, IPv6, and IPv4 written
inside IPv6) is refused unless the Relay Server's own address is of the same class
(a Relay Server on 127.0.0.1 serves its files from 127.0.0.1 too) or the operator
allowed every address.

The check happens on the address that is connected to, not on a separate DNS answer:
the connection class resolves the host once, checks every address of the answer, and
then connects to those checked addresses themselves.  A name that resolves to a public
address for the check and to an internal one a moment later (DNS rebinding) therefore
cannot slip through, and a refused address never sees a packet.

Through an HTTP(S) proxy (``HTTPS_PROXY``) the proxy makes the connection: only an
address written literally in the URL is checked then.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

__all__ = ["AddressPolicy", "AddressRefused", "address_class", "guarded_adapter"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network"


class AddressRefused(Exception):
    """A URL or the address its host resolves to is not one the policy allows.

    Not an ``OSError`` on purpose: urllib3 and requests let it through unchanged and
    never retry it.  ``kind`` is the refused class (e.g. ``"link-local"``) or
    ``"scheme"``.
    """

    def __init__(self, message: str, *, kind: str):
        super().__init__(message)
        self.kind = kind


def address_class(ip: IPAddress) -> str | None:
    """The class of an address that is not on the public internet, else None.

    One of ``unspecified``, ``loopback``, ``link-local``, ``multicast``, ``reserved``
    or ``private`` (private ranges and every other non-global range, e.g. the
    100.64/10 shared space).  IPv4 written inside IPv6 (``::ffff:10.0.0.1``, 6to4)
    is judged by its IPv4 address.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_class(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            inner = address_class(ip.sixtofour)
            if inner is not None:
                return inner
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NETWORK):
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class AddressPolicy:
    """Decides which addresses attachment downloads may connect to.

    Args:
        relay_url: the Relay Server's base URL; the classes of the addresses its host
            resolves to are allowed too (resolved on first need, then kept).
        allow_all: allow every address (``--allow-private-attachment-urls``).
        setting: how the operator allows every address, named in refusals.
    """

    def __init__(self, relay_url: str, *, allow_all: bool = False,
                 setting: str = "--allow-private-attachment-urls"):
        self.relay_host = urlsplit(relay_url).hostname or ""
        self.allow_all = allow_all
        self.setting = setting
        self._relay_classes: frozenset[str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AddressPolicy(relay_host={self.relay_host!r}, allow_all={self.allow_all})"

    def relay_classes(self) -> frozenset[str]:
        """Classes of the Relay Server's addresses (empty when public or unresolvable)."""
        with self._lock:
            if self._relay_classes is not None:
                return self._relay_classes
        literal = _literal(self.relay_host)
        if literal is not None:
            ips = [literal]
        else:
            try:
                ips = [ipaddress.ip_address(info[4][0].split("%", 1)[0])
                       for info in socket.getaddrinfo(self.relay_host, None,
                                                      type=socket.SOCK_STREAM)]
            except (OSError, UnicodeError, ValueError):
                return frozenset()  # not kept: a later call may resolve it
        found = frozenset(c for c in map(address_class, ips) if c is not None)
        with self._lock:
            self._relay_classes = found
        return found

    def check(self, ip: IPAddress) -> None:
        """Raises AddressRefused when ``ip`` may not be connected to."""
        if self.allow_all:
            return
        kind = address_class(ip)
        if kind is None or kind in self.relay_classes():
            return
        raise AddressRefused(
            f"its host resolves to a {kind} address, and the Relay Server is not on one"
            f" (allow with {self.setting})",
            kind=kind,
        )

    def check_url(self, url: str) -> None:
        """Refuse a URL that is not http(s), or whose host is a refused IP literal.

        Names are checked when connecting (:meth:`resolve`); this early check also
        covers connections that a proxy makes for us.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AddressRefused("it is not an http(s) URL with a host", kind="scheme")
        literal = _literal(parts.hostname)
        if literal is not None:
            self.check(literal)

    def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """Resolve ``host`` once and check every address; returns ``(family, ip)`` pairs.

        Raises:
            AddressRefused: any address of the answer is refused (one bad address in
                an answer is reason enough to distrust the name).
            socket.gaierror: the name does not resolve.
        """
        literal = _literal(host)
        if literal is not None:
            self.check(literal)
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [(family, str(literal))]
        found: list[tuple[int, str]] = []
        for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            self.check(ip)
            if (family, str(sockaddr[0])) not in found:
                found.append((family, str(sockaddr[0])))
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        return found


class _GuardedConnection(HTTPConnection):
    """An HTTP connection that connects only to addresses its policy allows."""

    def __init__(self, *args: Any, address_policy: AddressPolicy, **kwargs: Any):
        self._address_policy = address_policy
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self._address_policy.resolve(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error: OSError | None = None
        for _family, ip in addresses:  # the checked addresses themselves, in DNS order
            try:
                return create_connection((ip, self.port), self.timeout,
                                         source_address=self.source_address,
                                         socket_options=self.socket_options)
            except OSError as exc:  # refused, unreachable or timed out: try the next
                error = exc
        if isinstance(error, TimeoutError):
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from error
        raise NewConnectionError(self, f"failed to establish a new connection: {error}")


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    """The HTTPS form: TLS still verifies the certificate against the host name."""


class _GuardedPool(HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy, **kwargs: Any):
        self._address_policy = policy
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        # The pool manager builds pools by calling these; the policy reaches each
        # connection through the pool's connection keywords.
        self.poolmanager.pool_classes_by_scheme = {
            "http": functools.partial(_GuardedPool, address_policy=self._address_policy),
            "https": functools.partial(_GuardedHTTPSPool, address_policy=self._address_policy),
        }


def guarded_adapter(policy: AddressPolicy, *, pool_size: int = 10) -> HTTPAdapter:
    """A requests adapter (mount it for http:// and https://) that obeys ``policy``."""
    return _GuardedAdapter(policy, pool_connections=4, pool_maxsize=pool_size, max_retries=0)
