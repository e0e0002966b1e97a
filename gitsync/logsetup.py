"""Process-wide logging: one line per event, secrets scrubbed as a last line of defence.

Modules only call ``logging.getLogger(__name__)``; the entry points (``cli.py``,
``gunicorn.conf.py``) call :func:`configure_logging` once, before the app exists.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

__all__ = ["configure_logging", "SecretFilter", "redact"]

REDACTED = "REDACTED"
# Presigned URLs carry their credential in the query string; keep scheme/host/path only.
# Only queries with signature-like parameters: /info/refs?service=... stays readable.
_SIGNED_QUERY = re.compile(
    r"(https?://[^\s?#'\"]+)\?(?=[^\s'\"]*(?:sig|signature|token|credential|key|expires|X-Amz|X-Goog))"
    r"[^\s'\"]*",
    re.I,
)
# A bearer credential as it appears in a header; "the Bearer scheme" in prose stays.
_BEARER = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?bearer\s+)[^\s'\",]+")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secret values, bearer tokens, private keys and signed URL queries."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _PEM.sub(REDACTED, text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    return _SIGNED_QUERY.sub(r"\1?" + REDACTED, text)


class SecretFilter(logging.Filter):
    """Rewrites every record's message with :func:`redact`."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        clean = redact(message, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now so it can be scrubbed too.
            formatter = logging.Formatter()
            clean += "\n" + redact(formatter.formatException(record.exc_info), self.secrets)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = clean, None
        return True


def configure_logging(level: str = "INFO", secrets: Iterable[str] = (), stream=None) -> None:
    """Send our logs to stderr as ``time level logger: message`` with secrets removed."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gitsync", False):
            root.removeHandler(old)
    handler._gitsync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("paramiko", "dulwich"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # urllib3 warns on every retry; our own messages report what finally failed.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
