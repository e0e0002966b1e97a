"""Paramiko SSH for Dulwich: the private key from text, strict host keys, kept connections.

Dulwich ships no Paramiko vendor, so this module is ours. One :class:`ParamikoVendor`
holds our key and the trusted host keys; Dulwich's ``SSHGitClient`` calls
:meth:`ParamikoVendor.run_command` for each git command. The vendor keeps one
authenticated connection per host, port and user and runs every command as a channel
on it, so a push after the first costs no TCP or SSH handshake.

Host keys are checked strictly: trusted keys are the configured OpenSSH ``known_hosts``
lines plus the keys github.com, gitlab.com and bitbucket.org publish. An unknown or
changed key refuses the connection with the offered key's fingerprint and the exact line
to add. Trust on first use only with an explicit opt-in.

No key material ever reaches a log line, an exception message or a repr; public keys
and fingerprints are not secret and are shown.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = [
    "BUILTIN_KNOWN_HOSTS",
    "IDLE_TIMEOUT",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "ParamikoVendor",
    "SSHAuthFailed",
    "SSHConnectFailed",
    "SSHError",
    "SSHKeyError",
    "fingerprint",
    "host_key_name",
    "key_type",
    "load_private_key",
    "parse_known_hosts",
    "public_key_line",
    "read_known_hosts_file",
]

log = logging.getLogger(__name__)

KEY_VARIABLE = "SSH_PRIVATE_KEY"
#: Seconds an unused SSH connection stays open before it is closed.
IDLE_TIMEOUT = 300.0

#: Host keys published by the services themselves. Each line was checked against the
#: SHA256 fingerprints on the service's own page (ssh-keygen -lf):
#: github.com  docs.github.com ".../githubs-ssh-key-fingerprints":
#:   ED25519 +DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU, ECDSA p2QAMXNIC1TJYWeIOttrVc98/R1BUFWu3/LiyKgUfQM,
#:   RSA uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s
#: gitlab.com  about.gitlab.com/gitlab-com/settings "SSH host keys fingerprints":
#:   ED25519 eUXGGm1YGsMAS7vkcx6JOJdOGHPem5gQp4taiCfCLB8, ECDSA HbW3g8zUjNSksFbqTiUWPWg2Bq1x8xdGUrliXFzSnUw,
#:   RSA ROQFvPThGrW4RuWLoL9tq9I9zJ42fK4XywyRtbOz/EQ
#: bitbucket.org  support.atlassian.com "Configure SSH and two-step verification":
#:   ED25519 ybgmFkzwOSotHTHLJgHO0QN8L0xErw6vd0VhFA9m3SM, ECDSA FC73VB6C4OQLSCrjEayhMp9UMxS97caD/Yyi2bhW/J0,
#:   RSA 46OSHA1Rmj8E8ERTC6xkNcmGOw9oFxYr0WF6zWW8l1E
BUILTIN_KNOWN_HOSTS: tuple[str, ...] = (
    "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    "github.com ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=",
    "github.com ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCj7ndNxQowgcQnjshcLrqPEiiphnt+VTTvDP6mHBL9j1aNUkY4Ue1gvwnGLVlOhGeYrnZaMgRK6+PKCUXaDbC7qtbW8gIkhL7aGCsOr/C56SJMy/BCZfxd1nWzAOxSDPgVsmerOBYfNqltV9/hWCqBywINIR+5dIg6JTJ72pcEpEjcYgXkE2YEFXV1JHnsKgbLWNlhScqb2UmyRkQyytRLtL+38TGxkxCflmO+5Z8CSSNY7GidjMIZ7Q4zMjA2n1nGrlTDkzwDCsw+wqFPGQA179cnfGWOWRVruj16z6XyvxvjJwbz0wQZ75XK5tKSb7FNyeIEs4TT4jk+S4dhPeAUC5y+bDYirYgM4GC7uEnztnZyaVWQ7B381AK4Qdrwt51ZqExKbQpTUNn+EjqoTwvqNj4kqx5QUCI0ThS/YkOxJCXmPUWZbhjpCg56i+2aB6CmK2JGhn57K5mj0MNdBXA4/WnwH6XoPWJzK5Nyu2zB3nAZp+S5hpQs+p1vN1/wsjk=",
    "gitlab.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAfuCHKVTjquxvt6CM6tdG4SLp1Btn/nOeHHE5UOzRdf",
    "gitlab.com ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFSMqzJeV9rUzU4kWitGjeR4PWSa29SPqJ1fVkhtj3Hw9xjLVXVYrU9QlYWrOLXBpQ6KWjbjTDTdDkoohFzgbEY=",
    "gitlab.com ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCsj2bNKTBSpIYDEGk9KxsGh3mySTRgMtXL583qmBpzeQ+jqCMRgBqB98u3z++J1sKlXHWfM9dyhSevkMwSbhoR8XIq/U0tCNyokEi/ueaBMCvbcTHhO7FcwzY92WK4Yt0aGROY5qX2UKSeOvuP4D6TPqKF1onrSzH9bx9XUf2lEdWT/ia1NEKjunUqu1xOB/StKDHMoX4/OKyIzuS0q/T1zOATthvasJFoPrAjkohTyaDUz2LN5JoH839hViyEG82yB+MjcFV5MU3N1l1QL3cVUCh93xSaua1N85qivl+siMkPGbO5xR/En4iEY6K2XPASUEMaieWVNTRCtJ4S8H+9",
    "bitbucket.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIazEu89wgQZ4bqs3d63QSMzYVa0MuJ2e2gKTKqu+UUO",
    "bitbucket.org ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPIQmuzMBuKdWeF4+a2sjSSpBK0iqitSQ+5BM9KhpexuGt20JpTVM7u5BDZngncgrqDMbWdxMWWOGtZ9UgbqgZE=",
    "bitbucket.org ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDQeJzhupRu0u0cdegZIa8e86EG2qOCsIsD1Xw0xSeiPDlCr7kq97NLmMbpKTX6Esc30NuoqEEHCuc7yWtwp8dI76EEEB1VqY9QJq6vk+aySyboD5QF61I/1WeTwu+deCbgKMGbUijeXhtfbxSxm6JwGrXrhBdofTsbKRUsrN1WoNgUa8uqN1Vx6WAJw1JHPhglEGGHea6QICwJOAr/6mrui/oB7pkaWKHj3z7d1IC4KWLtY47elvjbaTlkN04Kc/5LFEirorGYVbt15kAUlqGM65pk6ZBxtaO3+30LVlORZkxOh+LKL/BvbZ/iRNhItLqNyieoQj/uh/7Iv4uyH/cV/0b4WDSd3DptigWq84lJubb9t/DnZlrJazxyDCulTmKdOR7vs9gMTo+uoIrPSb8ScTtvw65+odKAlBj59dhnVp9zd7QUojOpXlL62Aw56U4oO+FALuevvMjiWeavKhJqlR7i5n9srYcrNV7ttmDw7kf/97P5zauIhxcjX+xHv4M=",
)


class SSHError(Exception):
    """Base of every SSH failure raised here; messages never hold key material."""


class SSHKeyError(SSHError):
    """The private key text cannot be used (malformed, encrypted, unsupported type)."""


class HostKeyUnknown(SSHError):
    """The server offered a host key we have no entry for; carries what to add."""

    def __init__(self, host: str, key: paramiko.PKey):
        self.host = host
        self.key_type = key.get_name()
        self.fingerprint = fingerprint(key)
        self.known_hosts_line = f"{host} {key.get_name()} {key.get_base64()}"
        super().__init__(
            f"host key of {host} is not trusted: the server offered {self.key_type} "
            f"{self.fingerprint}. If that fingerprint is right, add this line to the "
            f"known_hosts list in git_connectors.toml: {self.known_hosts_line}"
        )


class HostKeyMismatch(SSHError):
    """The server offered a different key than the trusted one (possible interception)."""

    def __init__(self, host: str, offered: paramiko.PKey, expected: paramiko.PKey | None,
                 *, learned_in: Path | None = None):
        self.host = host
        self.key_type = offered.get_name()
        self.fingerprint = fingerprint(offered)
        self.expected_fingerprint = fingerprint(expected) if expected is not None else None
        self.known_hosts_line = f"{host} {offered.get_name()} {offered.get_base64()}"
        exp = (
            f"{expected.get_name()} {self.expected_fingerprint}" if expected is not None else "another key type"
        )
        if learned_in is not None:
            super().__init__(
                f"host key of {host} changed: the server offered {self.key_type} {self.fingerprint} "
                f"but the key learned on first use (kept in {learned_in}) is {exp}. Refusing to "
                f"connect. If the server's key really changed, delete the {host} line from that "
                "file, or add the verified new key to known_hosts in git_connectors.toml"
            )
            return
        super().__init__(
            f"host key of {host} changed: the server offered {self.key_type} {self.fingerprint} "
            f"but known_hosts trusts {exp}. Refusing to connect. If the server's key really "
            f"changed, replace its known_hosts entry with: {self.known_hosts_line}"
        )


class SSHAuthFailed(SSHError):
    """The server refused our key."""


class SSHConnectFailed(SSHError):
    """The server could not be reached or the SSH session failed."""


# ---------------------------------------------------------------------------
# keys


def _normalize_key_text(text: str) -> bytes:
    text = text.strip()
    # a key pasted into a one-line environment value often arrives with literal "\n"
    if "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    text = text.replace("\r\n", "\n")
    return (text + "\n").encode("utf-8", "replace")


def load_private_key(text: str) -> paramiko.PKey:
    """Load an ed25519, ECDSA or RSA private key from its text, without touching disk.

    Accepts the OpenSSH format (``-----BEGIN OPENSSH PRIVATE KEY-----``) and PEM
    (PKCS#1 ``RSA``, SEC1 ``EC``, PKCS#8 ``PRIVATE KEY``).

    Raises:
        SSHKeyError: empty, malformed, passphrase-protected or unsupported key; the
            message names ``SSH_PRIVATE_KEY`` and never includes the key text.
    """
    if not text or not text.strip():
        raise SSHKeyError(f"{KEY_VARIABLE} is empty; set it to the text of an unencrypted private key")
    data = _normalize_key_text(text)
    is_openssh = b"-----BEGIN OPENSSH PRIVATE KEY-----" in data
    if b"-----BEGIN " not in data:
        raise SSHKeyError(
            f"{KEY_VARIABLE} does not look like a private key (no '-----BEGIN ... PRIVATE KEY-----' "
            "line); put the whole key file's text in it"
        )
    # Exceptions below are re-raised "from None": library messages are not needed and
    # the original exception could carry parts of the input.
    try:
        if is_openssh:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise _encrypted() from None
    except (ValueError, UnsupportedAlgorithm):
        raise SSHKeyError(
            f"{KEY_VARIABLE} could not be read as an ed25519, ECDSA or RSA private key "
            "(malformed or unsupported); generate one with: ssh-keygen -t ed25519 -N ''"
        ) from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        cls: type[paramiko.PKey] = paramiko.Ed25519Key
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        cls = paramiko.ECDSAKey
    elif isinstance(key, rsa.RSAPrivateKey):
        cls = paramiko.RSAKey
    else:
        raise SSHKeyError(
            f"{KEY_VARIABLE} holds an unsupported key type ({type(key).__name__}); "
            "use ed25519, ECDSA or RSA"
        )
    # paramiko reads every supported type from the OpenSSH format; convert in memory
    openssh = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    try:
        return cls(file_obj=io.StringIO(openssh))
    except (paramiko.SSHException, ValueError):
        raise SSHKeyError(f"{KEY_VARIABLE} could not be loaded by paramiko ({cls.__name__})") from None


def _encrypted() -> SSHKeyError:
    return SSHKeyError(
        f"{KEY_VARIABLE} is protected by a passphrase, which is not supported; remove it with "
        "'ssh-keygen -p -N \"\" -f KEYFILE' or create a dedicated deploy key without one"
    )


def key_type(pkey: paramiko.PKey) -> str:
    """The SSH key type name: ``ssh-ed25519``, ``ssh-rsa``, ``ecdsa-sha2-nistp256``..."""
    return pkey.get_name()


def public_key_line(pkey: paramiko.PKey, comment: str | None = "relay-git-sync") -> str:
    """The OpenSSH public key line (``type base64 [comment]``) for a deploy key."""
    line = f"{pkey.get_name()} {pkey.get_base64()}"
    return f"{line} {comment}" if comment else line


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a (public) key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


# ---------------------------------------------------------------------------
# known hosts


def host_key_name(host: str, port: int | None) -> str:
    """The known_hosts name paramiko looks up: ``host`` on port 22, else ``[host]:port``."""
    if port in (None, 22):
        return host
    return f"[{host}]:{port}"


def parse_known_hosts(lines: Iterable[str], *, include_builtin: bool = True) -> paramiko.HostKeys:
    """Parse OpenSSH known_hosts lines (plain, hashed ``|1|``, ``[host]:port``, lists).

    Comments, blank lines and marker lines (``@cert-authority``, ``@revoked``) are
    skipped; an unparsable line is skipped with a warning naming its position.
    """
    keys = paramiko.HostKeys()
    all_lines = list(lines)
    if include_builtin:
        all_lines = all_lines + list(BUILTIN_KNOWN_HOSTS)
    for number, raw in enumerate(all_lines, 1):
        for line in raw.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                log.warning("skipping known_hosts marker line line=%d", number)
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            except Exception:  # noqa: BLE001 - paramiko raises several types for bad lines
                entry = None
            if entry is None or entry.key is None:
                log.warning("skipping unreadable known_hosts line line=%d", number)
                continue
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def read_known_hosts_file(path: Path | None) -> list[str]:
    """The lines of a known_hosts file, or none when it does not exist or is unreadable."""
    if path is None:
        return []
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("cannot read known hosts file=%s error=%s", path, exc)
        return []


# ---------------------------------------------------------------------------
# vendor


class _Policy(paramiko.MissingHostKeyPolicy):
    """Reject unknown hosts with :class:`HostKeyUnknown`, or trust them when opted in."""

    def __init__(self, vendor: ParamikoVendor):
        self._vendor = vendor

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self._vendor.trust_on_first_use:
            raise HostKeyUnknown(hostname, key)
        self._vendor._learn(hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


class _Link:
    """One authenticated SSH connection; each git command is an exec channel on it."""

    def __init__(self, client: paramiko.SSHClient, transport: paramiko.Transport):
        self.client = client
        self.transport = transport
        self.channels = 0
        self.last_used = time.monotonic()

    def usable(self) -> bool:
        return self.transport.is_active() and self.transport.is_authenticated()

    def close(self) -> None:
        self.client.close()  # closes the transport and ends its thread


class _Connection:
    """What Dulwich reads from and writes to: one exec channel on a shared connection.

    ``close()`` closes the channel and hands the connection back to the vendor, which
    keeps it for the next command and closes it when idle (or at once when broken).
    """

    def __init__(self, vendor: ParamikoVendor, link: _Link, channel: paramiko.Channel):
        self._vendor = vendor
        self._link = link
        self._channel = channel
        self._closed = False
        self.stderr = channel.makefile_stderr("rb")

    def can_read(self) -> bool:
        return self._channel.recv_ready()

    def write(self, data: bytes) -> None:
        self._channel.sendall(data)

    def read(self, n: int | None = None) -> bytes:
        if n is None:
            chunks = []
            while True:
                chunk = self._channel.recv(65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        buf = bytearray()
        while len(buf) < n:
            chunk = self._channel.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._channel.close()
        finally:
            self._vendor._release(self._link)


class ParamikoVendor:
    """Dulwich SSH vendor holding one key, the trusted host keys and live connections.

    One authenticated connection per ``(host, port, user)`` is kept and reused for every
    git command (each an exec channel on it): a push costs one channel, not a TCP and
    SSH handshake. A connection found dead is replaced once, transparently; one unused
    for ``idle_timeout`` seconds is closed; :meth:`close` closes them all.

    Args:
        pkey: the client key (from :func:`load_private_key`).
        known_host_lines: OpenSSH known_hosts lines trusted in addition to the built-in keys.
        trust_on_first_use: accept an unknown host's key (logged with the line to add).
            Off by default.
        learned_hosts_file: where keys accepted on first use are kept (OpenSSH
            known_hosts format, mode 0600) and read back from, so a later connection,
            after a restart too, trusts only the key seen first.
        timeout: seconds for TCP connect, banner, authentication and opening a channel.
        io_timeout: seconds a read or write on the channel may block.
        keepalive: seconds between SSH keepalive messages on an open connection.
        idle_timeout: seconds an unused connection stays open.
        max_channels: concurrent git commands on one connection before another is opened
            (OpenSSH allows 10 sessions per connection by default).
    """

    def __init__(
        self,
        pkey: paramiko.PKey,
        known_host_lines: Iterable[str] = (),
        *,
        trust_on_first_use: bool = False,
        timeout: float = 15,
        io_timeout: float = 300,
        include_builtin: bool = True,
        keepalive: float = 30,
        idle_timeout: float = IDLE_TIMEOUT,
        max_channels: int = 8,
        learned_hosts_file: Path | None = None,
    ):
        self._pkey = pkey
        self._learned_file = learned_hosts_file
        self._learned: dict[str, paramiko.PKey] = {}
        kept = read_known_hosts_file(learned_hosts_file) if learned_hosts_file else []
        self._learned_names = set()
        for name, hkey in parse_known_hosts(kept, include_builtin=False).items():
            for found in hkey.values():
                self._learned[name] = found
                self._learned_names.add(name)
        # configured lines last: an entry there wins over a key learned for the same name
        self._lines = kept + list(known_host_lines)
        self._host_keys = parse_known_hosts(self._lines, include_builtin=include_builtin)
        self._lock = threading.Lock()
        self._links: dict[tuple[str, int, str], list[_Link]] = {}
        self._reaper: threading.Thread | None = None
        self._closing = threading.Event()
        self.trust_on_first_use = trust_on_first_use
        self.timeout = timeout
        self.io_timeout = io_timeout
        self.keepalive = keepalive
        self.idle_timeout = idle_timeout
        self.max_channels = max(1, max_channels)
        #: SSH connections opened (handshake and authentication) since creation.
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"ParamikoVendor(key={key_type(self._pkey)} {fingerprint(self._pkey)}, tofu={self.trust_on_first_use})"

    @property
    def learned_host_lines(self) -> list[str]:
        """known_hosts lines accepted by trust on first use (for the operator to persist)."""
        with self._lock:
            return [f"{h} {k.get_name()} {k.get_base64()}" for h, k in self._learned.items()]

    def _learn(self, host: str, key: paramiko.PKey) -> None:
        with self._lock:
            self._learned[host] = key
            self._learned_names.add(host)
            self._host_keys.add(host, key.get_name(), key)
            lines = [f"{h} {k.get_name()} {k.get_base64()}" for h, k in self._learned.items()]
            if self._learned_file is not None:
                from .durable import replace_private_file

                try:
                    replace_private_file(self._learned_file, ("\n".join(lines) + "\n").encode())
                except OSError as exc:
                    log.error("cannot keep a host key learned on first use file=%s error=%s",
                              self._learned_file, exc)
        log.warning(
            "trusting unknown host key on first use host=%s type=%s fingerprint=%s kept_in=%s",
            host, key.get_name(), fingerprint(key), self._learned_file or "memory only",
        )

    def is_trusted(self, host: str, port: int | None = None) -> bool:
        """Whether any host key is known for ``host`` (and port)."""
        with self._lock:
            return self._host_keys.lookup(host_key_name(host, port)) is not None

    @property
    def open_connections(self) -> int:
        """SSH connections currently kept open."""
        with self._lock:
            return sum(len(links) for links in self._links.values())

    def run_command(
        self,
        host: str,
        command: bytes | str,
        username: str | None = None,
        port: int | None = None,
        password: str | None = None,
        key_filename: str | None = None,
        ssh_command: str | None = None,
        protocol_version: int | None = None,
        **_ignored: Any,
    ) -> _Connection:
        """Exec ``command`` on a kept connection to the host (opened on first use).

        ``password``, ``key_filename`` and ``ssh_command`` are ignored: the key is ours.
        A kept connection that fails to open a channel is dropped and the command is
        tried once more on a new connection.

        Raises:
            HostKeyUnknown, HostKeyMismatch, SSHAuthFailed, SSHConnectFailed
        """
        port = port or 22
        user = username or "git"
        key = (host, port, user)
        while True:
            link, fresh = self._acquire(key)
            try:
                channel = link.transport.open_session(timeout=self.timeout)
                channel.settimeout(self.io_timeout)
                if protocol_version == 2:
                    channel.set_environment_variable("GIT_PROTOCOL", "version=2")
                channel.exec_command(command)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._release(link, broken=True)
                if fresh:
                    raise SSHConnectFailed(
                        f"SSH connection to {user}@{host}:{port} failed: {_describe(exc)}"
                    ) from exc
                log.info("kept SSH connection failed, reconnecting host=%s port=%d error=%s",
                         host, port, _describe(exc))
                continue
            return _Connection(self, link, channel)

    def _acquire(self, key: tuple[str, int, str]) -> tuple[_Link, bool]:
        """A connection with a free channel slot (counted as used), and whether it is new."""
        with self._lock:
            links = self._links.get(key, [])
            for link in [lk for lk in links if not lk.usable()]:
                links.remove(link)
                link.close()
            for link in links:
                if link.channels < self.max_channels:
                    link.channels += 1
                    return link, False
        link = self._connect(*key)  # slow: outside the lock
        with self._lock:
            link.channels = 1
            self._links.setdefault(key, []).append(link)
            self._start_reaper()
        return link, True

    def _release(self, link: _Link, *, broken: bool = False) -> None:
        with self._lock:
            link.channels = max(0, link.channels - 1)
            link.last_used = time.monotonic()
            if not broken:
                return
            for links in self._links.values():
                if link in links:
                    links.remove(link)
        link.close()

    def _connect(self, host: str, port: int, user: str) -> _Link:
        where = f"{user}@{host}:{port}"
        client = paramiko.SSHClient()
        with self._lock:
            known = client.get_host_keys()
            for name in self._host_keys.keys():
                for ktype, hkey in self._host_keys[name].items():
                    known.add(name, ktype, hkey)
        client.set_missing_host_key_policy(_Policy(self))
        try:
            client.connect(
                host,
                port=port,
                username=user,
                pkey=self._pkey,
                look_for_keys=False,
                allow_agent=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
            )
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(max(1, int(self.keepalive)))
        except HostKeyUnknown:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            name = host_key_name(host, port)  # paramiko names the bare host even on another port
            with self._lock:
                learned = name in self._learned_names
            raise HostKeyMismatch(name, exc.key, exc.expected_key,
                                  learned_in=self._learned_file if learned else None) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SSHAuthFailed(
                f"SSH authentication as {where} failed with our {key_type(self._pkey)} key "
                f"{fingerprint(self._pkey)}; is its public key added to the repository as a "
                "deploy key with write access?"
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise SSHConnectFailed(f"SSH connection to {where} failed: {_describe(exc)}") from exc
        except BaseException:
            client.close()
            raise
        with self._lock:
            self.connections_opened += 1
        log.debug("SSH connection opened host=%s port=%d user=%s", host, port, user)
        return _Link(client, transport)

    def _start_reaper(self) -> None:
        """Start the idle-close thread unless it runs (caller holds ``_lock``)."""
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._closing.clear()
        self._reaper = threading.Thread(target=self._reap, name="ssh-idle-close", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        """Close connections unused for ``idle_timeout``; end when none is left."""
        interval = max(0.05, min(self.idle_timeout / 2, 30.0))
        while not self._closing.wait(interval):
            now = time.monotonic()
            idle: list[_Link] = []
            with self._lock:
                for key, links in list(self._links.items()):
                    for link in list(links):
                        if link.channels == 0 and (now - link.last_used >= self.idle_timeout or not link.usable()):
                            links.remove(link)
                            idle.append(link)
                    if not links:
                        del self._links[key]
                left = bool(self._links)
                if not left:
                    self._reaper = None
            for link in idle:
                log.debug("closing idle SSH connection")
                link.close()
            if not left:
                return

    def close(self) -> None:
        """Close every kept connection (commands in flight fail) and stop the idle thread."""
        with self._lock:
            links = [link for group in self._links.values() for link in group]
            self._links.clear()
            reaper, self._reaper = self._reaper, None
            self._closing.set()
        for link in links:
            link.close()
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=5)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
