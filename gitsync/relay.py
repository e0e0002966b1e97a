"""HTTP client for the Relay Server: document updates, attachments, readiness.

One :class:`RelayClient` is shared by every worker thread: it holds a single
``requests.Session`` whose connection pool is sized for the engine's fetch
concurrency.  Transient failures (connection errors, timeouts, HTTP 5xx and 429) are
retried with exponential backoff and jitter; anything else becomes one of a few typed
errors the engine acts on.  No API key, presigned URL or query string reaches an
exception message, a log line or a repr.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import threading
from collections.abc import Callable
from typing import NoReturn, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from .ids import parse_compound_id, parse_uuid
from .redact import QueryFilter, redact, redact_url

__all__ = [
    "RelayError",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "BadResponse",
    "RelayClient",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
_MAX_BACKOFF = 30.0
_CHUNK = 256 * 1024
_SNIPPET = 120
# Media types that mean "an error page", never Yjs update bytes.
_TEXTUAL = re.compile(
    r"^(text/.*|application/(json|problem\+json|xml|xhtml\+xml|.*\+json|.*\+xml))$"
)
_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")
_filter_lock = threading.Lock()
_filter_installed = False


class RelayError(Exception):
    """Base of every Relay Server failure; ``path`` and ``status`` say where and what.

    ``path`` is the request path on the Relay Server (e.g. ``/d/<id>/as-update``), or
    ``"<presigned attachment URL>"`` for a blob download; ``status`` is the last HTTP
    status seen, or None when no response arrived.
    """

    def __init__(self, message: str, *, path: str | None = None, status: int | None = None):
        super().__init__(message)
        self.path = path
        self.status = status


class NotFound(RelayError):
    """HTTP 404: the document (or attachment) does not exist on the server."""


class Unauthorized(RelayError):
    """HTTP 401/403 from the Relay Server: the API key is missing, wrong or read-only."""


class Unavailable(RelayError):
    """The server could not be reached or kept failing after every retry."""


class BadResponse(RelayError):
    """The server answered, but not with what was asked for (wrong type, bad hash, bad JSON)."""


class _Bearer(requests.auth.AuthBase):
    """Bearer auth as an auth object, so requests strips it on cross-host redirects."""

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
    """A short cause for a requests exception, never containing the URL."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no response within {timeout:g}s"
    if isinstance(exc, requests.exceptions.SSLError):
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
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed"
    return f"request failed ({type(exc).__name__})"


class _Retry(Exception):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


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
    ):
        if not api_key:
            raise ValueError("api_key must be a non-empty string (RELAY_SERVER_API_KEY)")
        if retries < 0 or backoff < 0 or timeout <= 0 or pool_size < 1:
            raise ValueError("retries and backoff must be >= 0, timeout > 0, pool_size >= 1")
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

    def __repr__(self) -> str:
        return f"RelayClient(base_url={redact_url(self.base_url)!r}, api_key=REDACTED)"

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the client must not be used afterwards."""
        self._session.close()

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
            BadResponse: the body is not update bytes (e.g. a JSON or HTML error page).
        """
        cid = str(parse_compound_id(compound_id))
        path = f"/d/{quote(cid, safe='-')}/as-update"

        def attempt() -> bytes:
            resp = self._get(path, what="document")
            ctype = _media_type(resp)
            if _TEXTUAL.match(ctype):
                raise BadResponse(
                    f"GET {path} returned {ctype} instead of Yjs update bytes"
                    f" (body starts {self._snippet(resp.content)!r})",
                    path=path,
                    status=resp.status_code,
                )
            return resp.content

        return self._with_retries(path, attempt)

    def download_attachment(
        self, relay_id: str, doc_id: str, sha256_hex: str, *, folder_id: str | None = None
    ) -> bytes:
        """Download an attachment by content hash and verify it.

        Asks ``/f/<relay>-<doc>/download-url?hash=...``; on 400/404 and when
        ``folder_id`` is given, asks ``/f/<relay>-<folder>-<doc>/download-url`` instead.
        The presigned URL is then fetched without the API key.

        Returns:
            The attachment's bytes, whose sha256 equals ``sha256_hex``.

        Raises:
            ids.InvalidId: a bad relay, doc or folder UUID.
            NotFound: no download URL for this file/hash, or the blob is missing.
            Unauthorized: the API key was refused.
            Unavailable: no usable answer after every retry.
            BadResponse: not a sha256 hash, a malformed download-url answer, a
                refused presigned URL, or downloaded bytes with another hash.
        """
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
        return self._with_retries(
            "<presigned attachment URL>", lambda: self._fetch_blob(url, relay, doc, digest)
        )

    def ready(self) -> bool:
        """True when ``GET /ready`` answers 200 (one attempt, no retries, never raises)."""
        try:
            resp = self._session.get(
                self.base_url + "/ready",
                auth=self._auth,
                timeout=(min(self.timeout, 10.0), self.timeout),
            )
            resp.close()
        except requests.RequestException as exc:
            log.debug("relay not ready error=%r", _describe_exception(exc, self.timeout))
            return False
        return resp.status_code == 200

    # -- internals --------------------------------------------------------------------

    def _download_url(self, path: str, digest: str) -> str:
        def attempt() -> str:
            resp = self._get(path, what="attachment", params={"hash": digest})
            try:
                body = resp.json()
            except ValueError:
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

    def _get(
        self, path: str, *, what: str, params: dict[str, str] | None = None
    ) -> requests.Response:
        """One authenticated GET; maps statuses to errors or :class:`_Retry`."""
        try:
            resp = self._session.get(
                self.base_url + path,
                params=params,
                auth=self._auth,
                timeout=(min(self.timeout, 10.0), self.timeout),
            )
        except requests.exceptions.SSLError as exc:
            raise Unavailable(
                f"GET {path} failed: {_describe_exception(exc, self.timeout)}", path=path
            ) from None
        except requests.RequestException as exc:
            raise _Retry(_describe_exception(exc, self.timeout)) from None
        status = resp.status_code
        if status == 200:
            return resp
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
            f"GET {path} answered HTTP {status} (body starts {self._snippet(resp.content)!r})",
            path=path,
            status=status,
        )

    def _fetch_blob(self, url: str, relay: str, doc: str, digest: str) -> bytes:
        label = "<presigned attachment URL>"
        try:
            resp = self._session.get(
                url, auth=_NoAuth(), stream=True, timeout=(min(self.timeout, 10.0), self.timeout)
            )
        except requests.RequestException as exc:
            raise _Retry(_describe_exception(exc, self.timeout)) from None
        with resp:
            status = resp.status_code
            if status in _RETRY_STATUSES:
                raise _Retry(f"HTTP {status}", status)
            if status == 404:
                raise NotFound(
                    f"attachment {relay}-{doc} hash={digest} is missing from storage (HTTP 404)",
                    path=label,
                    status=status,
                )
            if status != 200:
                raise BadResponse(
                    f"download of attachment {relay}-{doc} refused with HTTP {status}"
                    " (presigned URL rejected or expired)",
                    path=label,
                    status=status,
                )
            hasher = hashlib.sha256()
            chunks: list[bytes] = []
            try:
                for chunk in resp.iter_content(_CHUNK):
                    hasher.update(chunk)
                    chunks.append(chunk)
            except requests.RequestException as exc:
                raise _Retry(_describe_exception(exc, self.timeout)) from None
        got = hasher.hexdigest()
        if got != digest:
            raise BadResponse(
                f"attachment {relay}-{doc}: downloaded bytes have sha256 {got},"
                f" folder metadata says {digest}",
                path=label,
                status=200,
            )
        return b"".join(chunks)

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
        raise Unavailable(
            f"relay server unavailable: GET {path} failed {tries} {noun} (last: {exc.reason})",
            path=path,
            status=exc.status,
        ) from None

    def _snippet(self, body: bytes) -> str:
        text = body[:_SNIPPET].decode("utf-8", "replace")
        text = "".join(c if c.isprintable() else " " for c in text)
        return redact(text, [self._api_key])


def _media_type(resp: requests.Response) -> str:
    return resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
