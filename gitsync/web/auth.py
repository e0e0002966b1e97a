"""Webhook authentication: a shared bearer secret or Standard Webhooks / Svix signatures.

The Relay Server sends ``Authorization: Bearer <auth_token>``; a delivery service such as
Svix signs each delivery instead (``webhook-id``, ``webhook-timestamp``,
``webhook-signature`` headers, or the same with ``svix-``). A secret starting with
``whsec_`` selects signature checking, anything else the bearer check. Without a secret
every request is refused: the endpoint never runs open.

Standard library only (``hmac``, ``hashlib``, ``base64``): the ``standardwebhooks``
package raises stray exception types on hostile input and ignores ``svix-*`` headers, so
it is used only by the tests, as the reference signer.

No message raised here contains the secret, the presented token or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping

__all__ = [
    "AuthError",
    "SIGNATURE_PREFIX",
    "TOLERANCE_SECONDS",
    "WebhookAuth",
    "decode_signing_secret",
    "sign",
    "verify_bearer",
    "verify_signature",
]

SIGNATURE_PREFIX = "whsec_"
TOLERANCE_SECONDS = 300
NO_SECRET_MESSAGE = "webhook secret not configured; set WEBHOOK_SECRET"

_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
# Standard Webhooks names first; Svix sends the same values under svix-*.
_HEADER_SETS = (
    ("webhook-id", "webhook-timestamp", "webhook-signature"),
    ("svix-id", "svix-timestamp", "svix-signature"),
)


class AuthError(Exception):
    """A webhook failed authentication; the message is safe to return and to log."""


def _header_bytes(value: str) -> bytes:
    """The raw bytes of a header value (WSGI decodes header bytes as latin-1)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def verify_bearer(authorization: str | None, secret: str) -> None:
    """Check an ``Authorization: Bearer <token>`` header against ``secret``.

    The scheme is matched case-insensitively; the token in constant time.

    Raises:
        AuthError: the header is missing, uses another scheme, or the token differs.
    """
    if not authorization:
        raise AuthError("missing Authorization header (expected 'Bearer <secret>')")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("Authorization header must use the Bearer scheme")
    if not hmac.compare_digest(_header_bytes(token.strip()), secret.encode("utf-8")):
        raise AuthError("invalid bearer token")


def decode_signing_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; unpadded base64 is accepted.

    Raises:
        ValueError: the part after ``whsec_`` is empty or not base64 (the message does
            not repeat the secret).
    """
    body = secret[len(SIGNATURE_PREFIX) :] if secret.startswith(SIGNATURE_PREFIX) else secret
    body = body.strip()
    body += "=" * (-len(body) % 4)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret starting with whsec_ must be base64 after the prefix") from None
    if not key:
        raise ValueError("webhook secret starting with whsec_ must not be empty after the prefix")
    return key


def sign(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """One ``v1,<base64>`` Standard Webhooks signature (for tests, the demo and tools)."""
    content = _header_bytes(f"{msg_id}.{timestamp}.") + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _signature_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    lower = {k.lower(): v for k, v in headers.items()}
    for names in _HEADER_SETS:
        if names[2] in lower:
            values = tuple(lower.get(name, "") for name in names)
            missing = [name for name, value in zip(names, values, strict=True) if not value]
            if missing:
                raise AuthError("missing webhook signature header(s): " + ", ".join(missing))
            return values  # type: ignore[return-value]
    raise AuthError(
        "missing webhook signature headers (webhook-id, webhook-timestamp, webhook-signature)"
    )


def verify_signature(
    key: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Check a Standard Webhooks / Svix signed delivery.

    Reads ``webhook-*`` headers, or ``svix-*`` when no ``webhook-signature`` is present.
    Accepts the delivery if any ``v1`` entry of the space-separated signature list
    matches; malformed entries (no comma, bad base64) are skipped, never raised.

    Args:
        key: the HMAC key from :func:`decode_signing_secret`.
        headers: request headers (any case).
        body: the raw request body, exactly as received.
        now: current unix time (injectable for tests).
        tolerance: allowed distance in seconds between ``now`` and the timestamp.

    Raises:
        AuthError: headers missing or malformed, timestamp out of tolerance, or no
            matching signature.
    """
    msg_id, timestamp, signatures = _signature_headers(headers)
    if not _TIMESTAMP_RE.match(timestamp):
        raise AuthError("webhook timestamp must be unix seconds")
    age = now - int(timestamp)
    if age > tolerance:
        raise AuthError(f"webhook timestamp too old (more than {tolerance} s)")
    if age < -tolerance:
        raise AuthError(f"webhook timestamp too new (more than {tolerance} s ahead)")
    expected = hmac.new(key, _header_bytes(f"{msg_id}.{timestamp}.") + body, hashlib.sha256).digest()
    matched = False
    for entry in signatures.split():
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Keep comparing after a match so the time taken does not depend on its position.
        matched |= hmac.compare_digest(candidate, expected)
    if not matched:
        raise AuthError("no matching webhook signature")


class WebhookAuth:
    """The configured webhook check: ``none`` (refuse all), ``bearer`` or ``signature``.

    Raises (constructor):
        ValueError: a ``whsec_`` secret is not valid base64.
    """

    __slots__ = ("_secret", "_key", "mode", "tolerance")

    def __init__(self, secret: str | None, *, tolerance: int = TOLERANCE_SECONDS):
        self._secret = secret or None
        self._key: bytes | None = None
        self.tolerance = tolerance
        if not self._secret:
            self.mode = "none"
        elif self._secret.startswith(SIGNATURE_PREFIX):
            self.mode = "signature"
            self._key = decode_signing_secret(self._secret)
        else:
            self.mode = "bearer"

    def __repr__(self) -> str:
        return f"WebhookAuth(mode={self.mode!r})"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Raise AuthError unless the request is authentic under the configured mode."""
        if self.mode == "none":
            raise AuthError(NO_SECRET_MESSAGE)
        if self.mode == "signature":
            assert self._key is not None
            verify_signature(self._key, headers, body, now=now, tolerance=self.tolerance)
            return
        assert self._secret is not None
        lower = {k.lower(): v for k, v in headers.items()}
        verify_bearer(lower.get("authorization"), self._secret)
