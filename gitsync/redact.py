"""One home for redaction: URLs without credentials, secrets out of text, the log filters.

Which values are secret is decided once, in :mod:`gitsync.config`
(``Settings.secrets`` and ``ConnectorsConfig.secrets``); this module only removes them.
Messages are redacted where they are made (status, errors, CLI lines); the log filters
are the last line of defence for what slipped through.

URL rule: an ``http(s)://`` (or any other non-SSH) URL is shown without its user info
at all, since the user name is often the token (``https://TOKEN@host/...``). An SSH
URL keeps its login name (``git@host:path``: an account, never a credential, since SSH
authenticates with the key) and loses any password. A password may contain ``@``,
``?`` or ``#`` unescaped: the host starts after the last ``@`` before the path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = [
    "REDACTED",
    "QueryFilter",
    "SecretFilter",
    "redact",
    "redact_url",
    "url_secrets",
]

REDACTED = "REDACTED"

_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
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
# User info of a URL inside free text: scheme://, then anything up to the last "@"
# before the path or the end of the word.
_TEXT_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/'\"<>]*)@")
_MIN_SECRET = 4  # shorter values would blank ordinary words


def _split_userinfo(url: str) -> tuple[str, str | None, str] | None:
    """``(scheme:// or '', userinfo or None, rest)`` of a URL or scp-like address."""
    match = _SCHEME.match(url)
    head = match.group(0) if match else ""
    body = url[len(head):]
    authority = body.split("/", 1)[0]
    if "@" not in authority:
        return None
    userinfo, _, _ = authority.rpartition("@")
    return head, userinfo, body[len(userinfo) + 1:]


def _is_ssh(url: str) -> bool:
    match = _SCHEME.match(url)
    return match is None or match.group(1).lower() in _SSH_SCHEMES  # no scheme: scp-like or a path


def redact_url(url: str | None) -> str | None:
    """``url`` as it may be shown: no password anywhere, no user name outside SSH.

    ``https://user:p@ss@host/x.git`` -> ``https://host/x.git``;
    ``https://TOKEN@host/x.git`` -> ``https://host/x.git``;
    ``ssh://git:pw@host/x.git`` -> ``ssh://git@host/x.git``; ``git@host:x.git`` unchanged.
    """
    if url is None:
        return None
    parts = _split_userinfo(url)
    if parts is None:
        return url
    head, userinfo, rest = parts
    login = userinfo.split(":", 1)[0] if _is_ssh(url) else ""
    return f"{head}{login}@{rest}" if login else f"{head}{rest}"


def url_secrets(url: str | None) -> list[str]:
    """Credentials embedded in ``url``, raw and percent-decoded, to redact from any text.

    The password always; the user name too when it stands alone outside SSH (then it is
    the token). An SSH login name is not a secret.
    """
    parts = _split_userinfo(url or "")
    if parts is None:
        return []
    userinfo = parts[1]
    user, colon, password = userinfo.partition(":")
    found = [password] if colon else ([] if _is_ssh(url or "") else [user])
    found += [unquote(value) for value in found]
    return [value for value in dict.fromkeys(found) if value]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secret values, URL user info, bearer tokens, private keys and signed queries.

    Args:
        text: any message about to be shown or logged.
        secrets: values to replace by ``REDACTED`` wherever they occur (shorter than four
            characters are ignored: they would blank ordinary words).
    """
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _PEM.sub(REDACTED, text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    text = _TEXT_USERINFO.sub(_strip_text_userinfo, text)
    return _SIGNED_QUERY.sub(r"\1?" + REDACTED, text)


def _strip_text_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    if scheme[:-3].lower() in _SSH_SCHEMES:
        login = userinfo.split(":", 1)[0]
        return f"{scheme}{login}@" if login else scheme
    return scheme


class SecretFilter(logging.Filter):
    """Rewrites every record's message (and traceback) with :func:`redact`."""

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


class QueryFilter(logging.Filter):
    """Strip query strings (they may be presigned URLs) from a library's log arguments.

    For urllib3's debug lines, whose arguments hold the request path.
    """

    _QUERY = re.compile(r"\?[^\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                self._QUERY.sub("?<redacted>", a) if isinstance(a, str) else a for a in record.args
            )
        return True
