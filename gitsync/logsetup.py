"""Process-wide logging: one line per event, secrets scrubbed as a last line of defence.

Modules only call ``logging.getLogger(__name__)``; the entry points (``cli.py``,
``gunicorn.conf.py``) call :func:`configure_logging` once, before the app exists.
What counts as a secret is ``Settings.secrets`` (plus the connectors' URL credentials);
how it is removed is :mod:`gitsync.redact`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from .redact import SecretFilter

__all__ = ["configure_logging"]


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
