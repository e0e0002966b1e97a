"""Settings from flags and environment, and the ``git_connectors.toml`` file.

Only this module, ``cli.py`` and ``wsgi.py`` read ``os.environ``; everything else is
handed a frozen :class:`Settings`.  Validation happens here, before any thread starts,
and every complaint names the setting (or file, connector and key) at fault.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .authors import DEFAULT_TEMPLATE, AuthorBook, InvalidIdentity, check_template, parse_identity
from .ids import InvalidId, parse_uuid
from .redact import REDACTED, redact_url, url_secrets

if sys.version_info >= (3, 11):  # noqa: UP036 (tomli keeps older Pythons working)
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "Connector",
    "ConnectorsConfig",
    "Settings",
    "CONNECTORS_FILE",
    "TRANSPORTS",
    "load_connectors",
    "resolve_transport",
    "remote_url_problem",
    "settings_from_env",
]

CONNECTORS_FILE = "git_connectors.toml"
SECRET_FIELDS = ("relay_server_api_key", "webhook_secret", "ssh_private_key", "https_username",
                 "https_password", "admin_token")

# Environment variable for each setting (the documented contract plus our own extras).
ENV_VARS: dict[str, str] = {
    "relay_server_url": "RELAY_SERVER_URL",
    "relay_server_api_key": "RELAY_SERVER_API_KEY",
    "webhook_secret": "WEBHOOK_SECRET",
    "ssh_private_key": "SSH_PRIVATE_KEY",
    "data_dir": "RELAY_GIT_DATA_DIR",
    "port": "PORT",
    "host": "RELAY_GIT_HOST",
    "commit_interval": "RELAY_GIT_COMMIT_INTERVAL",
    "debounce": "RELAY_GIT_DEBOUNCE",
    "workers": "RELAY_GIT_WORKERS",
    "fetch_concurrency": "RELAY_GIT_FETCH_CONCURRENCY",
    "reconcile_interval": "RELAY_GIT_RECONCILE_INTERVAL",
    "author_name": "RELAY_GIT_AUTHOR_NAME",
    "author_email": "RELAY_GIT_AUTHOR_EMAIL",
    "trust_on_first_use": "RELAY_GIT_SSH_TRUST_ON_FIRST_USE",
    "ssh_idle_timeout": "RELAY_GIT_SSH_IDLE_TIMEOUT",
    "max_file_bytes": "RELAY_GIT_MAX_FILE_BYTES",
    "log_level": "RELAY_GIT_LOG_LEVEL",
    "log_format": "RELAY_GIT_LOG_FORMAT",
    "max_update_bytes": "RELAY_GIT_MAX_UPDATE_BYTES",
    "max_attachment_bytes": "RELAY_GIT_MAX_ATTACHMENT_BYTES",
    "proxy_hops": "RELAY_GIT_PROXY_HOPS",
    "https_username": "GIT_HTTPS_USERNAME",
    "https_password": "GIT_HTTPS_PASSWORD",
    "allow_private_attachment_urls": "RELAY_GIT_ALLOW_PRIVATE_ATTACHMENT_URLS",
    "admin_token": "ADMIN_TOKEN",
    "metrics_public": "METRICS_PUBLIC",
    "health_grace": "RELAY_GIT_HEALTH_GRACE",
}


class ConfigError(Exception):
    """A setting or the connectors file is invalid; the message says which and why."""

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None):
        super().__init__(message)
        self.key = key
        self.line = line


@dataclass(frozen=True, slots=True)
class Connector:
    """One shared folder mirrored into one repository (and optionally pushed to a remote)."""

    relay_id: str
    folder_id: str
    url: str | None = None
    branch: str = "main"
    remote_name: str = "origin"
    prefix: str = ""
    # How changes are heard of: "webhook", "websocket" or "both"; None: the default
    # (see resolve_transport).
    transport: str | None = None
    # One commit per author of an interval (each with only the files that person
    # changed) instead of one commit crediting co-authors in trailers.
    commit_per_author: bool = False
    # Sync vault entries that would be repository configuration (CI workflows,
    # .gitattributes, ...: plan.repository_config); refused unless the operator opts in.
    allow_repository_config: bool = False

    def __repr__(self) -> str:
        return (f"Connector(relay_id={self.relay_id!r}, folder_id={self.folder_id!r}, "
                f"url={redact_url(self.url)!r}, branch={self.branch!r}, prefix={self.prefix!r})")

    @property
    def key(self) -> tuple[str, str]:
        return (self.relay_id, self.folder_id)

    @property
    def name(self) -> str:
        return f"{self.relay_id}/{self.folder_id}"


@dataclass(frozen=True, slots=True)
class ConnectorsConfig:
    connectors: tuple[Connector, ...] = ()
    known_hosts: tuple[str, ...] = ()
    path: Path | None = None
    # Relay user id -> commit identity ([authors] and author_template).
    authors: AuthorBook = field(default_factory=AuthorBook)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Credentials written into the connectors' remote URLs (see :func:`redact.url_secrets`)."""
        return tuple(dict.fromkeys(v for c in self.connectors for v in url_secrets(c.url)))

    def find(self, relay_id: str, folder_id: str) -> Connector | None:
        for connector in self.connectors:
            if connector.relay_id == relay_id and connector.folder_id == folder_id:
                return connector
        return None


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to know, validated once at start-up."""

    data_dir: Path = field(default_factory=Path.cwd)
    relay_server_url: str | None = None
    relay_server_api_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    ssh_private_key: str | None = field(default=None, repr=False)
    port: int = 8000
    # Address the HTTP server listens on (serve; GUNICORN_BIND overrides host and port).
    host: str = "0.0.0.0"
    commit_interval: float = 10.0
    # Least seconds between two fetches of one document: a typing user sends many
    # webhooks per second. The first is fetched at once; those within the interval
    # after it merge into one more fetch at its end.
    debounce: float = 1.0
    workers: int = 4
    fetch_concurrency: int = 8
    reconcile_interval: float = 600.0
    author_name: str = "Relay Git Sync"
    author_email: str = "relay-git-sync@localhost"
    trust_on_first_use: bool = False
    # Seconds an unused SSH connection to a remote host stays open for the next push.
    ssh_idle_timeout: float = 300.0
    # A file larger than this is left out of commits (hosts refuse big files, e.g.
    # GitHub at 100 MB): it stays uncommitted, with a reason, instead of blocking pushes.
    max_file_bytes: int = 100 * 1024 * 1024
    log_level: str = "INFO"
    # Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host/-Prefix
    # headers are trusted; 0 trusts none (a client could otherwise set them).
    proxy_hops: int = 0
    log_format: str = "text"  # or "json": one object per line, for log shippers
    max_body_bytes: int = 64 * 1024
    # A folder update deleting more than this share of files (and more than
    # mass_delete_min files) is held until confirmed (invariant 6 in docs/architecture.md).
    mass_delete_ratio: float = 0.10
    mass_delete_min: int = 25
    relay_timeout: float = 30.0
    relay_retries: int = 4
    # Largest document update and attachment read from the Relay Server (bytes after
    # any decompression); a bigger one is skipped with a reason, the rest syncs.
    max_update_bytes: int = 64 * 1024 * 1024
    max_attachment_bytes: int = 512 * 1024 * 1024
    # Download URLs may point at loopback, link-local and private addresses even when
    # the Relay Server is not on such an address (see netguard).
    allow_private_attachment_urls: bool = False
    connectors_file: Path | None = None
    # Credentials for https:// remotes (GIT_HTTPS_USERNAME / GIT_HTTPS_PASSWORD).
    https_username: str | None = field(default=None, repr=False)
    https_password: str | None = field(default=None, repr=False)
    # Bearer token for the operator endpoints (/api/status, POST /api/sync, /metrics);
    # without it /api/status and /api/sync are not served at all.
    admin_token: str | None = field(default=None, repr=False)
    # Serve /metrics without a token (for a scraper on a private network).
    metrics_public: bool = False
    # Seconds a folder may keep failing (relay unreachable, push failing) before
    # /health says degraded: a short outage heals by itself and is not worth an alert.
    health_grace: float = 180.0

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.log_safe().items())
        return f"Settings({shown})"

    def log_safe(self) -> dict[str, Any]:
        """The settings as a dict with every secret replaced by ``REDACTED``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                value = REDACTED if value else None
            elif f.name == "relay_server_url":
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        return out

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value these settings hold; nothing shown or logged may contain one.

        The one list of them: the Relay API key (and credentials in the Relay URL), the
        webhook secret, the SSH private key (also line by line), the https password, the admin token, and
        the https user name when no password goes with it (alone, it is the token).
        Remote URL credentials are :attr:`ConnectorsConfig.secrets`.
        """
        values = [self.relay_server_api_key, self.webhook_secret, self.ssh_private_key,
                  self.https_password, self.admin_token, *url_secrets(self.relay_server_url)]
        if not self.https_password:
            values.append(self.https_username)
        if self.ssh_private_key:
            values += [line.strip() for line in self.ssh_private_key.splitlines()
                       if len(line.strip()) >= 16 and not line.startswith("-----")]
        return tuple(dict.fromkeys(v for v in values if v))

    @property
    def remote_env(self) -> dict[str, str]:
        """The https credentials as ``gitrepo.parse_remote_url`` takes them."""
        values = {"GIT_HTTPS_USERNAME": self.https_username, "GIT_HTTPS_PASSWORD": self.https_password}
        return {k: v for k, v in values.items() if v}

    @property
    def author(self) -> str:
        return f"{self.author_name} <{self.author_email}>"

    @property
    def listen_address(self) -> str:
        """``host:port`` for the HTTP server, an IPv6 host in brackets."""
        host = self.host.strip("[]")
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def connectors_path(self) -> Path:
        return self.connectors_file or (self.data_dir / CONNECTORS_FILE)

    def repo_dir(self, connector: Connector) -> Path:
        return self.data_dir / "repos" / connector.relay_id / connector.folder_id

    def state_dir(self, relay_id: str) -> Path:
        return self.data_dir / "state" / relay_id

    @property
    def learned_hosts_path(self) -> Path:
        """Where SSH host keys accepted on first use are kept (OpenSSH known_hosts format)."""
        return self.data_dir / "ssh" / "known_hosts"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "state" / "queue"

    def require_relay(self) -> None:
        """Raises ConfigError when the Relay Server URL or API key is missing."""
        if not self.relay_server_url:
            raise ConfigError(
                "required setting: --relay-server-url or RELAY_SERVER_URL must be set",
                key="relay_server_url",
            )
        if not self.relay_server_api_key:
            raise ConfigError(
                "required setting: --relay-server-api-key or RELAY_SERVER_API_KEY must be set",
                key="relay_server_api_key",
            )


# Settings read from the environment only (no command-line flag).
ENV_ONLY = {"fetch_concurrency", "author_name", "author_email", "trust_on_first_use", "ssh_idle_timeout",
            "max_file_bytes", "https_username", "https_password", "health_grace"}

MIN_SIZE_CAP = 4096  # bytes: the smallest size cap accepted

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(name: str, raw: Any, kind: type, origin: str) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        if kind is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw).expanduser()
    except ValueError:
        what = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "a value")
        raise ConfigError(f"invalid setting: {origin} must be {what} (got {raw!r})", key=name) from None
    return raw


_KINDS = {
    "data_dir": Path,
    "port": int,
    "commit_interval": float,
    "debounce": float,
    "workers": int,
    "fetch_concurrency": int,
    "reconcile_interval": float,
    "trust_on_first_use": bool,
    "ssh_idle_timeout": float,
    "max_file_bytes": int,
    "proxy_hops": int,
    "connectors_file": Path,
    "max_update_bytes": int,
    "max_attachment_bytes": int,
    "allow_private_attachment_urls": bool,
    "metrics_public": bool,
    "health_grace": float,
}


def settings_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings: explicit overrides (flags) beat environment beat defaults.

    Raises:
        ConfigError: a value does not parse or is out of range.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, var in ENV_VARS.items():
        if var in env and env[var] != "":
            values[name] = _convert(name, env[var], _KINDS.get(name, str), var)
    for name, value in overrides.items():
        if value is not None:
            flag = "--" + name.replace("_", "-")
            values[name] = _convert(name, value, _KINDS.get(name, str), flag)
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"]).expanduser().absolute()
    return validate(Settings(**values))


def validate(settings: Settings) -> Settings:
    """Check ranges; raise ConfigError on the first bad value."""

    def bad(flag: str, constraint: str, got: Any) -> ConfigError:
        name = flag.lstrip("-").replace("-", "_")
        var = ENV_VARS.get(name)
        # Settings without a flag of their own are named by their variable alone.
        shown = var if name in ENV_ONLY else f"{flag} ({var})" if var else flag
        return ConfigError(f"invalid setting: {shown} {constraint} (got {got!r})", key=flag)

    if settings.log_format not in ("text", "json"):
        raise bad("--log-format", "must be text or json", settings.log_format)
    if not 0 < settings.port < 65536:
        raise bad("--port", "must be between 1 and 65535", settings.port)
    if not re.fullmatch(r"[A-Za-z0-9.:_%\[\]-]+", settings.host or ""):
        raise bad("--host", "must be an IP address or host name, e.g. 127.0.0.1 or ::", settings.host)
    if settings.commit_interval < 0.05:
        raise bad("--commit-interval", "must be at least 0.05 seconds", settings.commit_interval)
    if not 0 <= settings.debounce <= 60:
        raise bad("--debounce", "must be between 0 and 60 seconds", settings.debounce)
    if settings.workers < 1:
        raise bad("--workers", "must be at least 1", settings.workers)
    if settings.fetch_concurrency < 1:
        raise bad("--fetch-concurrency", "must be at least 1", settings.fetch_concurrency)
    if settings.max_file_bytes < 1:
        raise bad("--max-file-bytes", "must be at least 1 byte", settings.max_file_bytes)
    if settings.ssh_idle_timeout <= 0:
        raise bad("--ssh-idle-timeout", "must be more than 0 seconds", settings.ssh_idle_timeout)
    if not 0 <= settings.proxy_hops <= 10:
        raise bad("--proxy-hops", "must be between 0 (no proxy) and 10", settings.proxy_hops)
    if settings.health_grace < 0:
        raise bad("--health-grace", "must be 0 or more seconds", settings.health_grace)
    if settings.admin_token is not None and settings.admin_token != "" and len(settings.admin_token) < 16:
        raise bad("--admin-token", "must be at least 16 characters (e.g. openssl rand -hex 32)",
                  "REDACTED")
    if settings.reconcile_interval < 0:
        raise bad("--reconcile-interval", "must be 0 (off) or more seconds", settings.reconcile_interval)
    # Below a few KiB even an empty folder's index would be refused.
    if settings.max_update_bytes < MIN_SIZE_CAP:
        raise bad("--max-update-bytes", f"must be at least {MIN_SIZE_CAP} bytes", settings.max_update_bytes)
    if settings.max_attachment_bytes < MIN_SIZE_CAP:
        raise bad("--max-attachment-bytes", f"must be at least {MIN_SIZE_CAP} bytes",
                  settings.max_attachment_bytes)
    if settings.relay_server_url:
        if not re.match(r"^https?://[^/\s]+", settings.relay_server_url):
            raise bad(
                "--relay-server-url",
                "must be an http:// or https:// URL",
                settings.relay_server_url,
            )
        object.__setattr__(settings, "relay_server_url", settings.relay_server_url.rstrip("/"))
    if not settings.data_dir.is_absolute():
        object.__setattr__(settings, "data_dir", settings.data_dir.absolute())
    return settings


# --- git_connectors.toml -------------------------------------------------------------

_CONNECTOR_KEYS = {"shared_folder_id", "relay_id", "url", "branch", "remote_name", "prefix",
                   "transport", "allow_repository_config", "commit_per_author"}
TRANSPORTS = ("webhook", "websocket", "both")
_TOP_KEYS = {"git_connector", "known_hosts", "authors", "author_template"}
MAX_USER_ID_CHARS = 256
_BRANCH_RE = re.compile(r"^(?!/)(?!.*//)(?!.*\.\.)(?!.*\.lock$)[^\x00-\x20~^:?*\[\\]+(?<!/)$")


def _header_lines(text: str) -> list[int]:
    """1-based line numbers of each ``[[git_connector]]`` header, in order."""
    return [
        n
        for n, line in enumerate(text.splitlines(), start=1)
        if re.match(r"^\s*\[\[\s*git_connector\s*\]\]", line)
    ]


def _key_line(text: str, start: int | None, key: str) -> int | None:
    """Line of ``key = ...`` in the table starting at line ``start`` (best effort)."""
    lines = text.splitlines()
    begin = (start or 1) - 1
    for n in range(begin, len(lines)):
        line = lines[n]
        if n > begin and re.match(r"^\s*\[", line):
            break
        if re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return n + 1
    return start


def _table_line(text: str, table: str) -> int | None:
    """Line of ``[table]`` (or of an inline ``table = {...}``), best effort."""
    for n, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"^\s*\[\s*{re.escape(table)}\s*\]", line) or re.match(rf"^\s*{re.escape(table)}\s*=", line):
            return n
    return None


def _entry_line(text: str, start: int | None, key: str) -> int | None:
    """Line of ``key = ...`` (bare or quoted key) in the table starting at line ``start``."""
    if start is None:
        return None
    lines = text.splitlines()
    spellings = (re.escape(key), re.escape(f'"{key}"'), re.escape(f"'{key}'"))
    pattern = re.compile(rf"^\s*(?:{'|'.join(spellings)})\s*=")
    for n in range(start - 1, len(lines)):
        if n > start - 1 and re.match(r"^\s*\[", lines[n]):
            break
        if pattern.match(lines[n]):
            return n + 1
    return start


def _load_authors(text: str, data: dict[str, Any], fail: Any) -> AuthorBook:
    """``[authors]`` (relay user id -> ``Name <email>``) and ``author_template``.

    Raises:
        ConfigError: via ``fail(message, line, key)``; the message names the key.
    """
    template = data.get("author_template", DEFAULT_TEMPLATE)
    try:
        check_template(template)
    except InvalidIdentity as exc:
        raise fail(f"author_template {exc}", _entry_line(text, 1, "author_template"), "author_template") from None
    raw = data.get("authors", {})
    start = _table_line(text, "authors")
    if not isinstance(raw, dict):
        raise fail('authors must be a table: write [authors] then lines like "<relay user id>" = "Name <email>"',
                   start, "authors")
    names: dict[str, str] = {}
    for user, value in raw.items():
        line = _entry_line(text, start, user)
        if not user.strip() or len(user) > MAX_USER_ID_CHARS or re.search(r"[\x00-\x1f\x7f]", user):
            raise fail(f"authors: {user!r} is not a relay user id (non-empty, at most "
                       f"{MAX_USER_ID_CHARS} characters, no control characters)", line, "authors")
        if isinstance(value, str) and "{user}" in value:
            raise fail(f"authors.{user} holds a template: author_template must come before the first "
                       "[table] of the file, or it is read as a user id", line, f"authors.{user}")
        try:
            names[user] = parse_identity(value)
        except InvalidIdentity as exc:
            raise fail(f"authors.{user} {exc}", line, f"authors.{user}") from None
    return AuthorBook(names=names, template=template)


def normalize_prefix(prefix: str) -> str:
    """'' or a clean relative directory path without leading/trailing slashes.

    Raises:
        ValueError: the prefix escapes the repository or names ``.git``.
    """
    cleaned = prefix.replace("\\", "/").strip().strip("/")
    if not cleaned:
        return ""
    parts = [p for p in cleaned.split("/") if p not in ("", ".")]
    for part in parts:
        if part == ".." or part.lower() == ".git" or "\x00" in part:
            raise ValueError(f"must be a relative directory inside the repository (got {prefix!r})")
    return "/".join(parts)


_REMOTE_SCHEMES = ("ssh", "git+ssh", "ssh+git", "https", "http", "file")
# scp-like [user@]host:path: no "/" before the ":" (that would be a local path).
_SCP_LIKE = re.compile(r"^(?:[^@/:\s]+@)?[^@/:\s]+:\S")


def remote_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a connector's remote, or None when its form is one we use.

    Accepted forms: an absolute path (or ``~/...``), a ``./`` or ``../`` relative
    path, ``file://``, ``ssh://`` (``git+ssh://``), ``https://``/``http://`` and
    scp-like ``[user@]host:path``.  Anything else, e.g. ``github.com/me/vault``, would
    silently become a local directory, so it is refused.  Hosts and paths inside a
    URL are checked when it is parsed (``gitrepo.parse_remote_url``).
    """
    text = url.strip()
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in _REMOTE_SCHEMES:
            return None
        shown = scheme if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,20}", scheme) else "?"
        return (f"uses an unsupported scheme {shown + '://'!r}: write ssh://, https://, "
                "http://, file://, user@host:path or a local path")
    if text.startswith(("/", "./", "../", "~/")) or text in (".", ".."):
        return None
    if _SCP_LIKE.match(text):
        return None
    shown = text if "@" not in text else "...@" + text.rsplit("@", 1)[1]
    return (f"must be an absolute path, a ./-relative path, a file://, ssh://, https:// or "
            f"http:// URL, or user@host:path (got {shown!r}; e.g. git@github.com:me/vault.git, "
            "https://github.com/me/vault.git or ./vault.git)")


def load_connectors(path: Path) -> ConnectorsConfig:
    """Read and validate ``git_connectors.toml``. A missing file means no connectors.

    Raises:
        ConfigError: the file is not valid TOML or a connector is invalid; the message
            names the file, line, connector index and key.
    """
    if not path.exists():
        return ConnectorsConfig(path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    headers = _header_lines(text)

    def fail(msg: str, *, index: int | None = None, key: str | None = None) -> ConfigError:
        start = headers[index] if index is not None and index < len(headers) else None
        line = _key_line(text, start, key) if key and start else start
        where = f"{path.name} line {line}" if line else path.name
        return ConfigError(f"{where}: {msg}", key=key, line=line)

    for key in data:
        if key not in _TOP_KEYS:
            raise fail(f"unknown top-level key {key!r} (expected git_connector, known_hosts, authors "
                       "or author_template)")

    def fail_at(msg: str, line: int | None, key: str) -> ConfigError:
        where = f"{path.name} line {line}" if line else path.name
        return ConfigError(f"{where}: {msg}", key=key, line=line)

    book = _load_authors(text, data, fail_at)
    raw_hosts = data.get("known_hosts", [])
    if not isinstance(raw_hosts, list) or not all(isinstance(h, str) for h in raw_hosts):
        raise fail("known_hosts must be a list of OpenSSH known_hosts lines (strings)")
    raw = data.get("git_connector", [])
    if not isinstance(raw, list):
        raise fail("git_connector must be an array of tables: write [[git_connector]]")

    connectors: list[Connector] = []
    seen: dict[tuple[str, str], int] = {}
    for index, table in enumerate(raw):
        label = f"git_connector[{index + 1}]"
        if not isinstance(table, dict):
            raise fail(f"{label} must be a table", index=index)
        for key in table:
            if key not in _CONNECTOR_KEYS:
                allowed = ", ".join(sorted(_CONNECTOR_KEYS))
                raise fail(f"{label}: unknown key {key!r} (allowed: {allowed})", index=index, key=key)
        for key in ("shared_folder_id", "relay_id"):
            if key not in table:
                raise fail(f"{label}.{key} is required", index=index)
            try:
                parse_uuid(table[key], what=f"{label}.{key}")
            except InvalidId as exc:
                raise fail(str(exc), index=index, key=key) from None
        for key in ("url", "branch", "remote_name", "prefix", "transport"):
            if key in table and not isinstance(table[key], str):
                raise fail(f"{label}.{key} must be a string", index=index, key=key)
        allow_config = table.get("allow_repository_config", False)
        if not isinstance(allow_config, bool):
            raise fail(f"{label}.allow_repository_config must be true or false (got {allow_config!r})",
                       index=index, key="allow_repository_config")
        branch = table.get("branch", "main")
        if not branch or not _BRANCH_RE.match(branch):
            raise fail(f"{label}.branch must be a valid branch name (got {branch!r})", index=index, key="branch")
        remote_name = table.get("remote_name", "origin")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", remote_name):
            raise fail(
                f"{label}.remote_name must be a simple name like 'origin' (got {remote_name!r})",
                index=index,
                key="remote_name",
            )
        try:
            prefix = normalize_prefix(table.get("prefix", ""))
        except ValueError as exc:
            raise fail(f"{label}.prefix {exc}", index=index, key="prefix") from None
        transport = table.get("transport")
        if transport is not None and transport not in TRANSPORTS:
            raise fail(f"{label}.transport must be one of {', '.join(TRANSPORTS)} (got {transport!r})",
                       index=index, key="transport")
        per_author = table.get("commit_per_author", False)
        if not isinstance(per_author, bool):
            raise fail(f"{label}.commit_per_author must be true or false (got {per_author!r})",
                       index=index, key="commit_per_author")
        url = table.get("url") or None
        if url is not None:
            problem = remote_url_problem(url)
            if problem:
                raise fail(f"{label}.url {problem}", index=index, key="url")
        connector = Connector(
            relay_id=table["relay_id"].lower(),
            folder_id=table["shared_folder_id"].lower(),
            url=url,
            branch=branch,
            remote_name=remote_name,
            prefix=prefix,
            transport=transport,
            allow_repository_config=allow_config,
            commit_per_author=per_author,
        )
        if connector.key in seen:
            raise fail(
                f"{label}: duplicate shared_folder_id {connector.folder_id} for relay "
                f"{connector.relay_id} (already in git_connector[{seen[connector.key] + 1}])",
                index=index,
                key="shared_folder_id",
            )
        seen[connector.key] = index
        connectors.append(connector)
    return ConnectorsConfig(tuple(connectors), tuple(h for h in raw_hosts if h.strip()), path, book)


def resolve_transport(connector: Connector, settings: Settings) -> str:
    """The connector's transport: its ``transport`` key, else ``websocket`` when no webhook
    secret is set (no webhook can be accepted then) and ``webhook`` when one is."""
    if connector.transport:
        return connector.transport
    return "webhook" if settings.webhook_secret else "websocket"
