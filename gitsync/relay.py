"""HTTP client for the Relay Server: document updates, attachments, readiness.

One :class:`RelayClient` is shared by every worker thread.  Requests to the Relay
Server itself (document updates, download URLs, readiness) go through one urllib3
connection pool kept for its origin and sized for the engine's fetch concurrency:
a document fetch runs many thousand times in a full sync, and ``requests`` costs
more CPU per request than the rest of the fetch.  Attachment downloads, redirects
to another origin and SOCKS proxies use ``requests`` sessions.  Transient failures
(connection errors, timeouts, HTTP 5xx and 429) are retried with exponential backoff
and jitter; anything else becomes one of a few typed errors the engine acts on.  No
API key, presigned URL or query string reaches an exception message, a log line or
a repr.

Every body is streamed and counted here, never read whole by the HTTP library: a document
update and an attachment each have a size cap, a declared ``Content-Length`` over the
cap is refused before a byte is read, and reading stops one byte past it.  We ask for
``identity`` encoding; a server that compresses anyway is decoded with a bounded
inflater (gzip or deflate, never more output than the cap), so a small compressed
answer cannot become a huge one.  Redirects are followed by hand for the same reason
(``requests`` would read a redirect's body whole).  Attachments stream into a
temporary file while hashed, so memory does not grow with their size.

Download URLs come from the Relay Server's answers and are not trusted: they are
fetched without the API key, only over http(s), and only from addresses that
:mod:`gitsync.netguard` allows (no loopback, link-local or private target unless the
Relay Server itself is on one, or the operator allows them).  A downloaded file whose
hash differs is refused without saying what its hash was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import (
    DEFAULT_CA_BUNDLE_PATH,
    get_auth_from_url,
    prepend_scheme_if_needed,
    select_proxy,
)

from .ids import parse_compound_id, parse_uuid
from .netguard import AddressPolicy, AddressRefused, guarded_adapter
from .redact import QueryFilter, redact, redact_url
from .relay_errors import BadResponse, NotFound, RelayError, TooLarge, Unauthorized, Unavailable

__all__ = [
    "RelayError",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "BadResponse",
    "TooLarge",
    "RelayClient",
    "DEFAULT_MAX_UPDATE_BYTES",
    "DEFAULT_MAX_ATTACHMENT_BYTES",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
_MAX_BACKOFF = 30.0
_CHUNK = 256 * 1024
_SNIPPET = 120
DEFAULT_MAX_UPDATE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_ATTACHMENT_BYTES = 512 * 1024 * 1024
_MAX_JSON_BYTES = 64 * 1024  # a download-url answer is a few hundred bytes
_ERROR_PREFIX = 4096  # what is read of an error page (the message shows the start)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_BLOB_LABEL = "<presigned attachment URL>"
# Media types that mean "an error page", never Yjs update bytes.
_TEXTUAL = re.compile(
    r"^(text/.*|application/(json|problem\+json|xml|xhtml\+xml|.*\+json|.*\+xml))$"
)
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")
_filter_lock = threading.Lock()
_filter_installed = False


class _Bearer(requests.auth.AuthBase):
    """Bearer auth as an auth object, so it is dropped when a redirect leaves the origin."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "_Bearer(REDACTED)"


class _NoAuth(requests.auth.AuthBase):
    """Explicitly no auth: keeps requests from adding ``~/.netrc`` credentials."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.pop("Authorization", None)
        return r


def _install_log_filter() -> None:
    global _filter_installed
    with _filter_lock:
        if not _filter_installed:
            for name in _URLLIB3_LOGGERS:
                logging.getLogger(name).addFilter(QueryFilter())
            _filter_installed = True


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps (cause, context, args, urllib3 ``reason``)."""
    found: list[BaseException] = []
    stack: list[object] = [exc]
    while stack:
        cur = stack.pop()
        if not isinstance(cur, BaseException) or any(cur is f for f in found):
            continue
        found.append(cur)
        stack.extend([cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args])
    return found


def _describe_exception(exc: BaseException, timeout: float) -> str:
    """A short cause for a requests or urllib3 exception, never containing the URL."""
    if isinstance(exc, requests.exceptions.ConnectTimeout) or (
        isinstance(exc, urllib3.exceptions.ConnectTimeoutError)
        and not isinstance(exc, urllib3.exceptions.NewConnectionError)
    ):
        return "connect timed out"
    if isinstance(exc, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)):
        return f"no response within {timeout:g}s"
    if isinstance(exc, (requests.exceptions.SSLError, urllib3.exceptions.SSLError)):
        return "TLS handshake or certificate error"
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if "NameResolution" in type(cause).__name__ or type(cause).__name__ == "gaierror":
            return "host name could not be resolved"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection broken while reading the body"
    if isinstance(exc, (requests.exceptions.ConnectionError, urllib3.exceptions.NewConnectionError,
                        urllib3.exceptions.ProtocolError, urllib3.exceptions.ProxyError)):
        return "connection failed"
    return f"request failed ({type(exc).__name__})"


class _Retry(Exception):
    """Internal: one attempt failed in a way worth retrying.

    ``final`` is raised when every retry failed: :class:`Unavailable` when the server
    could not be reached, :class:`BadResponse` when it answered but the body broke
    off (a problem of that one document, not of the whole server).
    """

    def __init__(self, reason: str, status: int | None = None,
                 final: type[RelayError] = Unavailable):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.final = final


def _size(n: int) -> str:
    """``67108864`` -> ``64 MiB``; sizes that are not whole KiB/MiB in bytes."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n:,} bytes"


class _Reply:
    """A response with its body unread: status, headers and the urllib3 stream.

    The same shape whether urllib3 answered directly or through ``requests``, so one
    bounded reader serves both.  Close it (or use ``with``): a fully read body has
    already given its connection back to the pool; an unread one closes it.
    """

    __slots__ = ("status_code", "headers", "url", "raw")

    def __init__(self, status_code: int, headers: object, url: str,
                 raw: urllib3.BaseHTTPResponse):
        self.status_code = status_code
        self.headers = headers  # case-insensitive mapping (urllib3 or requests)
        self.url = url
        self.raw = raw

    def close(self) -> None:
        self.raw.close()
        self.raw.release_conn()

    def __enter__(self) -> _Reply:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _content_length(resp: _Reply) -> int | None:
    raw = resp.headers.get("Content-Length", "").strip()
    return int(raw) if raw.isdigit() else None


class _Inflater:
    """Decode a gzip or deflate body in pieces of at most ``_CHUNK`` bytes.

    ``feed`` never produces more than ``room + 1`` bytes for one input, however well
    it compresses, so the caller can stop one byte past its cap with bounded memory.
    gzip may hold several members one after another (RFC 1952); deflate is the zlib
    format, or raw deflate as some servers send it.

    Raises (from ``feed``/``finish``): zlib.error on bytes that are not the format.
    """

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._gzip = encoding != "deflate"
        self._d: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._head = b""  # deflate: bytes held until the zlib header can be recognised

    def _start(self, data: bytes) -> zlib._Decompress:  # type: ignore[name-defined]
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> Iterator[bytes]:
        if not self._gzip and self._d is None and len(self._head) + len(data) < 2:
            self._head += data
            return
        data, self._head = self._head + data, b""
        produced = 0
        while produced <= room:
            if self._d is None or (self._d.eof and data):
                if self._d is not None and not self._gzip:
                    raise zlib.error("data after the end of the deflate stream")
                self._d = self._start(data)  # the first (or the next gzip) member
            if self._d.eof:
                return
            out = self._d.decompress(data, min(_CHUNK, room + 1 - produced))
            data = self._d.unconsumed_tail or self._d.unused_data
            if out:
                produced += len(out)
                yield out
            elif not data:
                return  # all input taken and no output waiting behind the last limit

    def finish(self) -> None:
        """Raises zlib.error when the body ended inside a compressed stream."""
        if self._head or self._d is None or not self._d.eof:
            raise zlib.error("the compressed body ends early")


def _read_body(
    resp: _Reply,
    sink: Callable[[bytes], object],
    *,
    limit: int,
    refuse: Callable[[str, int | None], Exception],
    label: str,
    timeout: float,
) -> int:
    """Pass the decoded body of ``resp`` to ``sink`` in pieces; returns its size.

    Never reads more than ``limit + 1`` bytes off the wire or hands on more than
    ``limit`` decoded bytes: ``refuse(detail, declared_size)`` makes the error raised
    instead (before reading when ``Content-Length`` already says too much).

    Raises:
        _Retry: the connection broke or timed out mid-body (final: BadResponse).
        BadResponse: an unsupported or corrupt content encoding.
        OSError: from ``sink`` (e.g. a full disk), unchanged.
    """
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    inflater: _Inflater | None = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encoding)
    elif encoding not in ("", "identity"):
        raise BadResponse(
            f"GET {label} answered with content encoding {encoding[:40]!r}, which is not"
            " supported (identity was asked for)",
            path=label,
            status=resp.status_code,
        )
    declared = _content_length(resp)
    if declared is not None and declared > limit:
        raise refuse(f"declares {declared:,} bytes", declared)
    wire = out = 0
    pieces = resp.raw.stream(_CHUNK, decode_content=False)
    while True:
        try:
            raw = next(pieces, None)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            got = f" after {wire:,} of {declared:,} bytes" if declared is not None else ""
            if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
                raise _Retry(f"no data within {timeout:g}s while reading the body{got}",
                             resp.status_code, final=BadResponse) from None
            raise _Retry(f"connection broken while reading the body{got}", resp.status_code,
                         final=BadResponse) from None
        if raw is None:
            break
        wire += len(raw)
        if wire > limit:
            raise refuse(f"is more than {limit:,} bytes", None)
        if inflater is None:
            out += len(raw)
            sink(raw)
            continue
        try:
            for piece in inflater.feed(raw, limit - out):
                out += len(piece)
                if out > limit:
                    raise refuse(f"inflates ({encoding}) to more than {limit:,} bytes", None)
                sink(piece)
        except zlib.error:
            raise BadResponse(f"GET {label} answered a body that is not valid {encoding}",
                              path=label, status=resp.status_code) from None
    if inflater is not None:
        try:
            inflater.finish()
        except zlib.error as exc:
            raise BadResponse(f"GET {label} answered a body that is not valid {encoding}: {exc}",
                              path=label, status=resp.status_code) from None
    return out


class _Enough(Exception):
    """Internal: a prefix of the body was all that was wanted."""


def _read_prefix(resp: _Reply, n: int = _ERROR_PREFIX) -> bytes:
    """Up to ``n`` decoded bytes of the body (best effort, for error messages)."""
    buf = bytearray()
    try:
        _read_body(resp, buf.extend, limit=n, refuse=lambda *_: _Enough(), label="", timeout=0)
    except (_Enough, _Retry, RelayError):
        pass
    return bytes(buf[:n])


class RelayClient:
    """Read documents and attachments from a Relay Server.

    Thread-safe: share one instance between worker threads (the pool holds
    ``pool_size`` connections per host; size it to at least the number of threads).

    Args:
        base_url: e.g. ``https://relay.example.com`` (a trailing slash is ignored).
        api_key: the server token, sent as ``Authorization: Bearer <key>``.
        timeout: seconds to wait for a connection and, separately, for each read.
        retries: extra attempts after the first for transient failures.
        backoff: first retry delay in seconds; doubles each retry (capped at 30 s),
            with jitter between 50% and 150%.
        pool_size: connections kept per host.
        stop_event: when set, retry waits end at once and the call raises
            :class:`Unavailable` (used for a prompt shutdown).
        max_update_bytes: largest document update accepted (decoded bytes).
        max_attachment_bytes: largest attachment accepted (decoded bytes).
        allow_private_attachment_urls: let download URLs reach any address, including
            loopback, link-local and private ones (by default only public addresses
            and those of the Relay Server's own class).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30,
        retries: int = 4,
        backoff: float = 0.5,
        pool_size: int = 16,
        stop_event: threading.Event | None = None,
        max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES,
        max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES,
        allow_private_attachment_urls: bool = False,
    ):
        if not api_key:
            raise ValueError("api_key must be a non-empty string (RELAY_SERVER_API_KEY)")
        if retries < 0 or backoff < 0 or timeout <= 0 or pool_size < 1:
            raise ValueError("retries and backoff must be >= 0, timeout > 0, pool_size >= 1")
        if max_update_bytes < 1 or max_attachment_bytes < 1:
            raise ValueError("max_update_bytes and max_attachment_bytes must be >= 1")
        self.max_update_bytes = int(max_update_bytes)
        self.max_attachment_bytes = int(max_attachment_bytes)
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._auth = _Bearer(api_key)
        self._api_key = api_key
        self._stop = stop_event or threading.Event()
        self._random = random.Random()
        _install_log_filter()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = "relay-git-sync"
        # Sizes are counted on what we keep: no compression, so no surprise inflation.
        self._session.headers["Accept-Encoding"] = "identity"
        # The proxy and CA bundle settings of the environment (HTTPS_PROXY, NO_PROXY,
        # REQUESTS_CA_BUNDLE...) for the Relay Server, resolved once: requests would scan
        # the whole environment again on every request, about a quarter of the CPU time
        # of a fetch (bench/README.md). A redirect to another origin resolves its own.
        resolved = self._session.merge_environment_settings(self.base_url + "/", {}, None, None, None)
        self._session.trust_env = False
        self._session.proxies = resolved["proxies"]
        self._session.verify = resolved["verify"]
        self._origin = _origin(self.base_url)
        self._timeouts = urllib3.Timeout(connect=min(self.timeout, 10.0), read=self.timeout)
        self._headers = {
            "User-Agent": "relay-git-sync",
            "Accept-Encoding": "identity",
            "Accept": "*/*",
            "Authorization": f"Bearer {api_key}",
        }
        self._manager, self._pool, self._absolute_form = _direct_pool(
            self.base_url, resolved["proxies"], resolved["verify"], pool_size
        )
        # "scheme://host:port/" as written in base_url: a URL starting with it is on
        # the Relay Server's origin without parsing it (the common case, by far).
        parts = urlsplit(self.base_url)
        self._origin_prefix = f"{parts.scheme}://{parts.netloc}/"
        self._bare_origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        # Download URLs go through their own session, whose connections check the
        # address they connect to (the Relay Server's own requests need no such check).
        self._addresses = AddressPolicy(
            self.base_url,
            allow_all=allow_private_attachment_urls,
            setting="--allow-private-attachment-urls or RELAY_GIT_ALLOW_PRIVATE_ATTACHMENT_URLS",
        )
        self._blob_session = requests.Session()
        guarded = guarded_adapter(self._addresses, pool_size=pool_size)
        self._blob_session.mount("http://", guarded)
        self._blob_session.mount("https://", guarded)
        self._blob_session.headers.update(self._session.headers)

    def __repr__(self) -> str:
        return f"RelayClient(base_url={redact_url(self.base_url)!r}, api_key=REDACTED)"

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the client must not be used afterwards."""
        if self._manager is not None:
            self._manager.clear()
        self._session.close()
        self._blob_session.close()

    # -- public API -------------------------------------------------------------------

    def get_update(self, compound_id: str) -> bytes:
        """Fetch a whole document as a Yjs v1 update (``GET /d/{id}/as-update``).

        Args:
            compound_id: ``<relay>-<doc>`` (or the 3-UUID form).

        Returns:
            The update bytes, undecoded (``b"\\x00\\x00"`` for a never-written document).

        Raises:
            ids.InvalidId: ``compound_id`` is not a compound id.
            NotFound: the server has no such document.
            Unauthorized: the API key was refused.
            Unavailable: no usable answer after every retry.
            BadResponse: the body is not update bytes (e.g. a JSON or HTML error page),
                or it broke off on every attempt.
            TooLarge: the update is bigger than ``max_update_bytes``.
        """
        cid = str(parse_compound_id(compound_id))
        path = f"/d/{quote(cid, safe='-')}/as-update"
        limit = self.max_update_bytes

        def refuse(detail: str, size: int | None) -> TooLarge:
            return TooLarge(
                f"GET {path}: document {detail}, over the {_size(limit)} cap on document"
                " updates (--max-update-bytes, RELAY_GIT_MAX_UPDATE_BYTES)",
                path=path, status=200, size=size, limit=limit,
            )

        def attempt() -> bytes:
            with self._get(path, what="document") as resp:
                ctype = _media_type(resp)
                if _TEXTUAL.match(ctype):
                    raise BadResponse(
                        f"GET {path} returned {ctype} instead of Yjs update bytes"
                        f" (body starts {self._snippet(_read_prefix(resp))!r})",
                        path=path,
                        status=resp.status_code,
                    )
                chunks: list[bytes] = []
                _read_body(resp, chunks.append, limit=limit, refuse=refuse, label=path,
                           timeout=self.timeout)
            return b"".join(chunks)

        return self._with_retries(path, attempt)

    def download_attachment(
        self, relay_id: str, doc_id: str, sha256_hex: str, *, folder_id: str | None = None
    ) -> bytes:
        """Download an attachment into memory (see :meth:`download_attachment_to`).

        Holds the whole attachment (up to ``max_attachment_bytes``): for small files
        and tools; the engine streams to disk instead.

        Returns:
            The attachment's bytes, whose sha256 equals ``sha256_hex``.
        """
        url, relay, doc, digest = self._attachment_url(relay_id, doc_id, sha256_hex, folder_id)

        def attempt() -> bytes:
            chunks: list[bytes] = []
            self._fetch_blob(url, relay, doc, digest, chunks.append)
            return b"".join(chunks)

        return self._with_retries(_BLOB_LABEL, attempt)

    def download_attachment_to(
        self,
        relay_id: str,
        doc_id: str,
        sha256_hex: str,
        directory: str | os.PathLike[str],
        *,
        folder_id: str | None = None,
        prefix: str = ".gitsync-tmp-",
        suffix: str = ".tmp",
    ) -> tuple[Path, str, int]:
        """Download an attachment by content hash into a new file in ``directory``.

        Asks ``/f/<relay>-<doc>/download-url?hash=...``; on 400/404 and when
        ``folder_id`` is given, asks ``/f/<relay>-<folder>-<doc>/download-url`` instead.
        The presigned URL is then fetched without the API key.  The body streams into
        ``<prefix>XXXX<suffix>`` (mode 0600, not fsync'd) while it is hashed, so memory
        stays small whatever the size.  Pick ``directory`` on the filesystem of the
        final place, so the caller can move the file there with an atomic rename.  On
        any error the file is removed; on success the caller owns it.

        Returns:
            ``(path of the file, its sha256 hex, its size)``; the sha256 equals
            ``sha256_hex`` (checked before returning).

        Raises:
            ids.InvalidId: a bad relay, doc or folder UUID.
            NotFound: no download URL for this file/hash, or the blob is missing.
            Unauthorized: the API key was refused.
            Unavailable: no usable answer after every retry.
            BadResponse: not a sha256 hash, a malformed download-url answer, a
                download URL that is not http(s) or points at a refused address
                (see :mod:`gitsync.netguard`), a refused presigned URL, a body that
                broke off on every attempt, or downloaded bytes with another hash.
            TooLarge: the attachment is bigger than ``max_attachment_bytes``.
            OSError: the file could not be created or written.
        """
        url, relay, doc, digest = self._attachment_url(relay_id, doc_id, sha256_hex, folder_id)
        where = os.fspath(directory)

        def attempt() -> tuple[Path, str, int]:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=where)
            try:
                with open(fd, "wb", closefd=True) as handle:
                    size = self._fetch_blob(url, relay, doc, digest, handle.write)
            except BaseException:
                try:
                    os.unlink(name)
                except FileNotFoundError:
                    pass
                raise
            return Path(name), digest, size

        return self._with_retries(_BLOB_LABEL, attempt)

    def ready(self) -> bool:
        """True when ``GET /ready`` answers 200 (one attempt, no retries, never raises)."""
        try:
            # The status is all we want: the body is never read.
            with self._open(self.base_url + "/ready", auth=self._auth, label="/ready") as resp:
                return resp.status_code == 200
        except (_Retry, RelayError) as exc:
            log.debug("relay not ready error=%r", exc.args[0] if exc.args else exc)
            return False

    # -- internals --------------------------------------------------------------------

    def _attachment_url(
        self, relay_id: str, doc_id: str, sha256_hex: str, folder_id: str | None
    ) -> tuple[str, str, str, str]:
        """The presigned URL of an attachment, and the checked relay, doc and digest."""
        relay = parse_uuid(relay_id, what="relay_id")
        doc = parse_uuid(doc_id, what="doc_id")
        folder = parse_uuid(folder_id, what="folder_id") if folder_id else None
        if not isinstance(sha256_hex, str) or not _SHA256_RE.match(sha256_hex):
            raise BadResponse(
                f"attachment {relay}-{doc} has no valid sha256 hash in the folder metadata"
            )
        digest = sha256_hex.lower()
        first = f"/f/{relay}-{doc}/download-url"
        try:
            url = self._download_url(first, digest)
        except (NotFound, BadResponse) as exc:
            if folder is None or exc.status not in (400, 404):
                raise
            second = f"/f/{relay}-{folder}-{doc}/download-url"
            log.debug("download url not found, trying folder form relay=%s doc=%s", relay, doc)
            try:
                url = self._download_url(second, digest)
            except NotFound as exc2:
                raise NotFound(
                    f"no download URL for attachment {relay}-{doc} hash={digest}:"
                    f" GET {first} answered HTTP {exc.status}, GET {second} HTTP {exc2.status}",
                    path=second,
                    status=exc2.status,
                ) from None
        return url, relay, doc, digest

    def _download_url(self, path: str, digest: str) -> str:
        def refuse(detail: str, size: int | None) -> BadResponse:
            return BadResponse(f"GET {path}: the download-url answer {detail}, more than"
                               f" {_size(_MAX_JSON_BYTES)}", path=path, status=200)

        def attempt() -> str:
            with self._get(path, what="attachment", params={"hash": digest}) as resp:
                chunks: list[bytes] = []
                _read_body(resp, chunks.append, limit=_MAX_JSON_BYTES, refuse=refuse,
                           label=path, timeout=self.timeout)
            try:
                body = json.loads(b"".join(chunks))
            except (ValueError, RecursionError):
                body = None
            url = body.get("downloadUrl") if isinstance(body, dict) else None
            if not isinstance(url, str) or not url:
                raise BadResponse(
                    f"GET {path} answered without a downloadUrl"
                    f" ({_media_type(resp) or 'no content type'})",
                    path=path,
                    status=resp.status_code,
                )
            absolute = urljoin(self.base_url + "/", url)
            if urlsplit(absolute).scheme not in ("http", "https"):
                raise BadResponse(
                    f"GET {path} answered a downloadUrl that is not http(s)",
                    path=path,
                    status=resp.status_code,
                )
            return absolute

        return self._with_retries(path, attempt)

    def _open(
        self,
        url: str,
        *,
        auth: requests.auth.AuthBase,
        label: str,
        params: dict[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> _Reply:
        """GET ``url`` with its body unread, following redirects without reading theirs.

        The caller reads (bounded) and closes the response.  ``auth`` is dropped when a
        redirect leaves the origin, by the same rule ``requests`` applies.  ``label``
        names the request in errors (a path; never a presigned URL).  ``session``
        defaults to the Relay Server's; downloads pass the address-checking one.
        Requests to the Relay Server's origin with its own session go straight to
        its urllib3 pool.

        Raises:
            _Retry: no response (connection refused, reset, timed out).
            Unavailable: a TLS error (not retried: certificates do not heal in seconds).
            BadResponse: more than five redirects, or one to a non-http(s) URL.
            netguard.AddressRefused: (``session`` checking addresses) a refused
                target, before anything was sent to it.
        """
        if params:
            url = f"{url}?{urlencode(params)}"
        direct = session is None and self._pool is not None
        session = session or self._session
        for _ in range(_MAX_REDIRECTS + 1):
            if direct and (url.startswith(self._origin_prefix) or _origin(url) == self._origin):
                resp = self._send_direct(url, label, authorized=not isinstance(auth, _NoAuth))
            else:
                resp = self._send(session, url, auth, label)
            location = resp.headers.get("Location")
            if resp.status_code not in _REDIRECTS or not location:
                return resp
            resp.close()
            target = urljoin(resp.url, location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise BadResponse(f"GET {label} redirected to a URL that is not http(s)",
                                  path=label, status=resp.status_code)
            if self._session.should_strip_auth(resp.url, target):
                auth = _NoAuth()
            url = target
        raise BadResponse(f"GET {label} redirected more than {_MAX_REDIRECTS} times",
                          path=label, status=resp.status_code)

    def _send_direct(self, url: str, label: str, *, authorized: bool) -> _Reply:
        """One GET on the Relay Server's urllib3 pool (no retries, no redirects)."""
        assert self._pool is not None
        if url.startswith(self._origin_prefix):
            target = url[len(self._origin_prefix) - 1:]
        else:
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if self._absolute_form:
            # A plain HTTP proxy takes the whole URL, never with the URL's user info.
            target = self._bare_origin + target
        headers = self._headers
        if not authorized:
            headers = {k: v for k, v in headers.items() if k != "Authorization"}
        try:
            raw = self._pool.urlopen(
                "GET", target, headers=headers, retries=False, redirect=False,
                timeout=self._timeouts, preload_content=False, decode_content=False,
                assert_same_host=False,
            )
        except urllib3.exceptions.SSLError as exc:
            raise Unavailable(
                f"GET {label} failed: {_describe_exception(exc, self.timeout)}", path=label
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Retry(_describe_exception(exc, self.timeout)) from None
        return _Reply(raw.status, raw.headers, url, raw)

    def _send(
        self, session: requests.Session, url: str, auth: requests.auth.AuthBase, label: str
    ) -> _Reply:
        """One GET through a ``requests`` session (no retries, no redirects)."""
        proxies = None
        if not session.trust_env and _origin(url) != self._origin:
            proxies = requests.utils.get_environ_proxies(url)  # not resolved for this origin
        try:
            resp = session.get(
                url,
                auth=auth,
                stream=True,
                allow_redirects=False,
                timeout=(min(self.timeout, 10.0), self.timeout),
                proxies=proxies,
            )
        except requests.exceptions.SSLError as exc:
            raise Unavailable(
                f"GET {label} failed: {_describe_exception(exc, self.timeout)}", path=label
            ) from None
        except requests.RequestException as exc:
            raise _Retry(_describe_exception(exc, self.timeout)) from None
        return _Reply(resp.status_code, resp.headers, resp.url, resp.raw)

    def _get(
        self, path: str, *, what: str, params: dict[str, str] | None = None
    ) -> _Reply:
        """One authenticated GET; maps statuses to errors or :class:`_Retry`.

        Returns the 200 response with its body unread: the caller reads and closes it.
        """
        resp = self._open(self.base_url + path, auth=self._auth, label=path, params=params)
        status = resp.status_code
        if status == 200:
            return resp
        with resp:
            # Read a little (an error page is short): the connection can then be reused.
            start = _read_prefix(resp)
        if status in _RETRY_STATUSES:
            raise _Retry(f"HTTP {status}", status)
        if status == 404:
            raise NotFound(f"GET {path}: {what} not found (HTTP 404)", path=path, status=status)
        if status in (401, 403):
            raise Unauthorized(
                f"GET {path} refused with HTTP {status}: check RELAY_SERVER_API_KEY",
                path=path,
                status=status,
            )
        raise BadResponse(
            f"GET {path} answered HTTP {status} (body starts {self._snippet(start)!r})",
            path=path,
            status=status,
        )

    def _fetch_blob(
        self, url: str, relay: str, doc: str, digest: str, sink: Callable[[bytes], object]
    ) -> int:
        """Stream one presigned download into ``sink``, checking size and sha256.

        Returns the number of bytes passed to ``sink``.
        """
        limit = self.max_attachment_bytes

        def refuse(detail: str, size: int | None) -> TooLarge:
            return TooLarge(
                f"attachment {relay}-{doc} {detail}, over the {_size(limit)} cap on"
                " attachments (--max-attachment-bytes, RELAY_GIT_MAX_ATTACHMENT_BYTES)",
                path=_BLOB_LABEL, status=200, size=size, limit=limit,
            )

        try:
            self._addresses.check_url(url)
            resp = self._open(url, auth=_NoAuth(), label=_BLOB_LABEL, session=self._blob_session)
        except AddressRefused as exc:
            raise BadResponse(
                f"attachment {relay}-{doc}: download URL refused: {exc}",
                path=_BLOB_LABEL,
            ) from None
        with resp:
            status = resp.status_code
            if status in _RETRY_STATUSES:
                raise _Retry(f"HTTP {status}", status)
            if status == 404:
                raise NotFound(
                    f"attachment {relay}-{doc} hash={digest} is missing from storage (HTTP 404)",
                    path=_BLOB_LABEL,
                    status=status,
                )
            if status != 200:
                raise BadResponse(
                    f"download of attachment {relay}-{doc} refused with HTTP {status}"
                    " (presigned URL rejected or expired)",
                    path=_BLOB_LABEL,
                    status=status,
                )
            hasher = hashlib.sha256()

            def take(chunk: bytes) -> None:
                hasher.update(chunk)
                sink(chunk)

            size = _read_body(resp, take, limit=limit, refuse=refuse, label=_BLOB_LABEL,
                              timeout=self.timeout)
        # The computed hash is never shown: with it, a status page would tell anyone
        # the hash of whatever a download URL reached.
        if hasher.hexdigest() != digest:
            raise BadResponse(
                f"attachment {relay}-{doc}: content does not match the hash in the folder index",
                path=_BLOB_LABEL,
                status=200,
            )
        return size

    def _with_retries(self, path: str, attempt: Callable[[], T]) -> T:
        tries = self.retries + 1
        for n in range(tries):
            try:
                return attempt()
            except _Retry as exc:
                if n + 1 >= tries:
                    self._give_up(path, tries, exc)
                delay = min(_MAX_BACKOFF, self.backoff * (2**n)) * self._random.uniform(0.5, 1.5)
                log.warning(
                    "relay request failed, will retry path=%s attempt=%d error=%r backoff=%.2fs",
                    path,
                    n + 1,
                    exc.reason,
                    delay,
                )
                if self._stop.wait(delay):
                    raise Unavailable(
                        f"GET {path} abandoned: shutting down (last: {exc.reason})",
                        path=path,
                        status=exc.status,
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _give_up(self, path: str, tries: int, exc: _Retry) -> NoReturn:
        noun = "attempt" if tries == 1 else "attempts"
        if exc.final is not Unavailable:
            raise exc.final(
                f"GET {path}: {exc.reason} ({tries} {noun})", path=path, status=exc.status
            ) from None
        raise Unavailable(
            f"relay server unavailable: GET {path} failed {tries} {noun} (last: {exc.reason})",
            path=path,
            status=exc.status,
        ) from None

    def _snippet(self, body: bytes) -> str:
        text = body[:_SNIPPET].decode("utf-8", "replace")
        text = "".join(c if c.isprintable() else " " for c in text)
        return redact(text, [self._api_key])


def _direct_pool(
    base_url: str, proxies: dict[str, str], verify: bool | str, pool_size: int
) -> tuple[urllib3.PoolManager | None, urllib3.HTTPConnectionPool | None, bool]:
    """The urllib3 pool for the Relay Server's origin, from settings resolved once.

    ``proxies`` and ``verify`` are what ``requests`` resolved from the environment
    (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE...), applied the way its adapter does:
    the CA bundle (or directory) given, else certifi's; a proxy's user and password
    as ``Proxy-Authorization``.

    Returns:
        ``(manager, pool, absolute_form)``: ``absolute_form`` when requests must name
        the whole URL (plain HTTP through a proxy).  ``(None, None, False)`` for a
        SOCKS proxy, which stays with ``requests``.
    """
    tls: dict[str, object] = {"cert_reqs": "CERT_NONE"}
    if verify:
        where = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
        key = "ca_cert_dir" if os.path.isdir(where) else "ca_certs"
        tls = {"cert_reqs": "CERT_REQUIRED", key: where}
    proxy = select_proxy(base_url + "/", proxies)
    manager: urllib3.PoolManager
    if not proxy:
        manager = urllib3.PoolManager(num_pools=4, maxsize=pool_size, **tls)  # type: ignore[arg-type]
        return manager, manager.connection_from_url(base_url), False
    proxy = prepend_scheme_if_needed(proxy, "http")
    if urlsplit(proxy).scheme.lower() not in ("http", "https"):
        return None, None, False
    user, password = get_auth_from_url(proxy)
    headers = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
    manager = urllib3.ProxyManager(
        proxy, proxy_headers=headers, num_pools=4, maxsize=pool_size, **tls  # type: ignore[arg-type]
    )
    absolute = urlsplit(base_url).scheme.lower() == "http"
    return manager, manager.connection_from_url(base_url), absolute


def _origin(url: str) -> tuple[str, str | None, int | None]:
    """Scheme, host and port of ``url`` (the port as given, or None)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme.lower(), parts.hostname, port


def _media_type(resp: _Reply) -> str:
    return resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
