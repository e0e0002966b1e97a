"""Process-wide logging: one line per event, secrets scrubbed as a last line of defence.

Modules only call ``logging.getLogger(__name__)``; the entry points (``cli.py``,
``gunicorn.conf.py``) call :func:`configure_logging` once, before the app exists, and
``gunicorn.conf.py`` hands :func:`gunicorn_logconfig` to gunicorn so that its own lines
come out in the same format.

Two formats: ``text`` (``time level logger: message``) for people, ``json`` (one object
per line) for log shippers.  Log calls write their context as ``key=value`` in the
message; the JSON formatter lifts ``relay``, ``folder``, ``doc``, ``path`` and
``commit`` out of the (already scrubbed) message into fields of their own, so no log
call has to change.
What counts as a secret is ``Settings.secrets`` (plus the connectors' URL credentials);
how it is removed is :mod:`gitsync.redact`.
"""

from __future__ import annotations

import ast
import functools
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from .redact import SecretFilter, redact

__all__ = [
    "configure_logging",
    "gunicorn_logconfig",
    "context_fields",
    "LOG_FORMATS",
    "CONTEXT_FIELDS",
    "SecretFilter",
    "redact",
]

LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("relay", "folder", "doc", "path", "commit")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

__all__ = ["configure_logging"]


# A context key at the start or after a space; its value is a quoted repr ('a b.md')
# or runs to the next " key=" (paths may hold spaces) or the end of the line.
_CONTEXT = re.compile(
    r"(?:^|(?<=\s))(?P<key>" + "|".join(CONTEXT_FIELDS) + r")="
    r"(?P<value>'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|.*?(?=\s[A-Za-z_]\w*=|$))",
    re.M,
)


def context_fields(message: str) -> dict[str, str]:
    """``relay``/``folder``/``doc``/``path``/``commit`` written as ``key=value`` in a message.

    The first occurrence of each key wins; a quoted value (``path='a b.md'``) is
    unquoted.  Best effort: a value holding `` word=`` is cut there.
    """
    found: dict[str, str] = {}
    for match in _CONTEXT.finditer(message.split("\n", 1)[0]):
        key, value = match.group("key"), match.group("value")
        if key in found or not value:
            continue
        if value[:1] in ("'", '"') and len(value) > 1 and value[-1] == value[0]:
            try:
                value = str(ast.literal_eval(value))
            except (ValueError, SyntaxError):
                value = value[1:-1]
        found[key] = value
    return found


class _JsonLines(JsonFormatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, context."""

    def __init__(self) -> None:
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        for key, value in context_fields(str(log_data.get("message", ""))).items():
            log_data.setdefault(key, value)


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return _JsonLines()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)} (got {fmt!r})")


def _new_handler(fmt: str, secrets: tuple[str, ...], stream: TextIO | None) -> logging.Handler:
    """A stderr handler with our format and the secret filter (which runs first)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_formatter(fmt))
    handler.addFilter(SecretFilter(secrets))
    handler._gitsync = True  # type: ignore[attr-defined]
    return handler


_active: tuple[str, tuple[str, ...], TextIO | None] = ("text", (), None)


def configure_logging(level: str = "INFO", secrets: Iterable[str] = (), stream=None, *,
                      fmt: str = "text") -> None:
    """Send our logs to stderr, as text or JSON lines (``fmt``), with secrets removed.

    Raises:
        ValueError: ``fmt`` is not one of :data:`LOG_FORMATS`.
    """
    global _active
    _active = (fmt, tuple(s for s in secrets if s), stream)
    handler = _new_handler(*_active)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_gitsync", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("paramiko", "dulwich"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # urllib3 warns on every retry; our own messages report what finally failed.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def gunicorn_logconfig(level: str = "INFO") -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its loggers write through our handler and format.

    Call after :func:`configure_logging` (the format and secrets come from there).
    gunicorn's own handlers are dropped and its records go to the root logger, so
    its lines and ours share one format, and the secret filter sees all of them.
    """
    factory = functools.partial(_new_handler, *_active)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level.upper(), "handlers": ["gitsync"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            # One line per request at INFO and DEBUG; none at WARNING and above.
            "gunicorn.access": {"level": level.upper(), "handlers": [], "propagate": True},
        },
        "handlers": {"gitsync": {"()": factory}},
        "formatters": {},
    }
