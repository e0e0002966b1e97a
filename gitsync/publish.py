"""Per-connector publishing: commit pending paths, push, back off, remember the outcome.

``gitrepo.push_fast_forward`` does one careful push; this module decides when to push
(a folder backing off after a failure waits), how long to wait after a failure (the
shared :mod:`gitsync.backoff`; a permanent rejection waits the longest), and keeps the
last :class:`PushOutcome` of every connector for ``/api/status``. Unpushed commits
simply stay on the local branch: the next push sends all of them, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import gitrepo
from .backoff import MAX_DELAY, Backoff
from .config import Connector, ConnectorsConfig, Settings
from .redact import redact, redact_url

__all__ = ["Published", "Publisher", "PushOutcome", "remote_spec"]

log = logging.getLogger(__name__)


def remote_spec(settings: Settings, connector: Connector,
                env: Mapping[str, str] | None = None) -> gitrepo.RemoteSpec:
    """The connector's parsed remote; a relative local path is relative to the data directory.

    Raises:
        gitrepo.GitError: the URL cannot be used (unsupported scheme, malformed).
    """
    return gitrepo.parse_remote_url(connector.url or "", env=env or {}, base_dir=settings.data_dir)


@dataclass(frozen=True)
class PushOutcome:
    """How one push attempt ended.

    Attributes:
        ok: the remote has our branch (pushed, created or already up to date).
        at: when the attempt started (seconds since the epoch).
        status: ``"pushed"``, ``"created"`` or ``"up-to-date"`` when ok.
        remote_head: the remote branch head afterwards (hex) when ok.
        pushed: commits newly on the remote.
        rebuilt: our commits rebuilt on a remote that had moved.
        error: what went wrong (secrets removed) when not ok.
        failures: consecutive failed attempts, this one included.
        retry_in: seconds until the next attempt when not ok.
        permanent: the remote refused the update itself (a hook, a size limit): retrying
            soon will not help, so the next attempt waits the longest backoff.
    """

    ok: bool
    at: float
    status: str | None = None
    remote_head: str | None = None
    pushed: int = 0
    rebuilt: int = 0
    error: str | None = None
    failures: int = 0
    retry_in: float | None = None
    permanent: bool = False

    def as_status(self) -> dict[str, Any]:
        """The ``push`` object of ``/api/status`` for this outcome."""
        if self.ok:
            return {"ok": True, "at": self.at, "status": self.status,
                    "remote_head": self.remote_head, "pushed": self.pushed}
        return {"ok": False, "at": self.at, "error": self.error, "failures": self.failures,
                "retry_in": self.retry_in, "permanent": self.permanent}


@dataclass(frozen=True)
class Published:
    """What :meth:`Publisher.publish` did: the commit it made and the push, if any."""

    commit: str | None = None
    push: PushOutcome | None = None


class Publisher:
    """The SSH identity, push backoff and last push outcome of every connector with a ``url``."""

    def __init__(self, settings: Settings, config: ConnectorsConfig, *,
                 env: Mapping[str, str] | None = None):
        self.settings = settings
        self.config = config
        self._env = dict(env) if env is not None else settings.remote_env
        self._backoff = Backoff(cap=MAX_DELAY)
        self._next_try: dict[tuple[str, str], float] = {}
        self._last: dict[tuple[str, str], PushOutcome] = {}
        self._lock = threading.Lock()
        self._vendor = None
        self._pkey = None
        self.secrets = [s for s in (*settings.secrets, *config.secrets,
                                    self._env.get(gitrepo.HTTPS_PASSWORD_ENV)) if s]
        if settings.ssh_private_key:
            from .ssh import load_private_key

            # Raises SSHKeyError naming SSH_PRIVATE_KEY: a bad key is a startup error.
            self._pkey = load_private_key(settings.ssh_private_key)

    # --- identity ---------------------------------------------------------------------

    def public_key(self) -> tuple[str, str] | None:
        """``(public key line, key type)`` of our SSH key, or None without one."""
        if self._pkey is None:
            return None
        from .ssh import key_type, public_key_line

        kind = key_type(self._pkey)
        return public_key_line(self._pkey), "ecdsa" if kind.startswith("ecdsa") else kind

    def vendor(self):
        """The Paramiko vendor holding our key, the trusted host keys and the kept connections.

        One per publisher, made on first use: every fetch and push of every connector
        to the same host, port and user shares one SSH connection.

        Raises:
            gitrepo.GitError: no SSH key is configured.
        """
        from .ssh import ParamikoVendor

        if self._pkey is None:
            raise gitrepo.GitError(
                "no SSH key configured for an ssh:// remote: set SSH_PRIVATE_KEY to the private key "
                "text and add its public key (cli.py ssh show-pubkey) as a deploy key with write access"
            )
        with self._lock:
            if self._vendor is None:
                self._vendor = ParamikoVendor(
                    self._pkey,
                    list(self.config.known_hosts),
                    trust_on_first_use=self.settings.trust_on_first_use,
                    idle_timeout=self.settings.ssh_idle_timeout,
                    learned_hosts_file=self.settings.learned_hosts_path,
                )
            return self._vendor

    def spec(self, connector: Connector) -> gitrepo.RemoteSpec:
        """The connector's remote, with https credentials from the environment."""
        return remote_spec(self.settings, connector, self._env)

    def remote_head(self, connector: Connector) -> str | None:
        """Read the connector's remote branch head over the network (for ``connectors validate``).

        Raises:
            gitrepo.GitError: the URL is unusable or the remote cannot be read.
        """
        spec = self.spec(connector)
        vendor = self.vendor() if spec.kind == "ssh" else None
        return gitrepo.remote_head(spec, branch=connector.branch, vendor=vendor)

    def close(self) -> None:
        """Close the kept SSH connections (a later push opens new ones)."""
        with self._lock:
            vendor, self._vendor = self._vendor, None
        if vendor is not None:
            vendor.close()

    # --- bookkeeping ------------------------------------------------------------------

    def due(self, connector: Connector, *, force: bool = False) -> bool:
        """True when a push may be tried now (not backing off after a failure)."""
        with self._lock:
            return force or time.monotonic() >= self._next_try.get(connector.key, 0.0)

    def status(self, connector: Connector) -> PushOutcome | None:
        """The last push outcome of the connector, or None before the first push."""
        with self._lock:
            return self._last.get(connector.key)

    def _record(self, connector: Connector, outcome: PushOutcome, next_try: float) -> PushOutcome:
        with self._lock:
            self._last[connector.key] = outcome
            self._next_try[connector.key] = next_try
        return outcome

    # --- publishing -------------------------------------------------------------------

    def _sweep(self, engine, connector: Connector) -> gitrepo.LockSweep:
        """Remove lock files in the repository that are old enough to be stale."""
        with engine.repo_lock(connector):
            return gitrepo.clear_stale_locks(engine.settings.repo_dir(connector))

    def publish(self, engine, connector: Connector, *, force_push: bool = False,
                final: bool = False, on_push: Callable[[], None] | None = None,
                on_commit: Callable[[], None] | None = None) -> Published:
        """Commit the folder's pending paths, then push when there is something to send.

        A push is skipped while the connector backs off after a failure (unless
        ``final``: the last push before stopping) and when no local commit is missing
        on the remote (unless ``force_push``: the startup push that also learns where the
        remote is). Locks as in :meth:`push`. The index entries of the committed paths
        are written after the push (rewriting a large folder's index would delay it).

        Args:
            on_push: called after the commit, when a push is about to start (the
                caller's status shows it).
            on_commit: called with the folder lock held, right before the commit (the
                commit schedule counts its interval from there).
        """
        try:
            with engine.lock(connector):
                if on_commit is not None:
                    on_commit()
                try:
                    sha = engine.commit(connector, defer_index=True)
                except gitrepo.RepositoryLocked:
                    if not self._sweep(engine, connector).removed:  # a recent lock: someone's git
                        raise
                    sha = engine.commit(connector, defer_index=True)
            if not connector.url or not (force_push or self.due(connector, force=final)):
                return Published(sha)
            if not force_push and not self.has_unpushed(engine, connector):
                return Published(sha)  # nothing to send: no network round trip
            if on_push is not None:
                on_push()
            return Published(sha, self.push(engine, connector, commit_first=False))
        finally:
            self._refresh_index(engine, connector)

    def _refresh_index(self, engine, connector: Connector) -> None:
        try:
            engine.refresh_index(connector)
        except Exception as exc:  # a convenience for people using git: the commit stands
            log.warning("index not refreshed relay=%s folder=%s error=%s", connector.relay_id,
                        connector.folder_id, redact(str(exc), self.secrets))

    def has_unpushed(self, engine, connector: Connector) -> bool:
        """True when the branch has commits the remote has not acknowledged (no network)."""
        if not connector.url:
            return False
        with engine.repo_lock(connector):
            return gitrepo.has_unpushed(engine.repo(connector), branch=connector.branch,
                                        remote_name=connector.remote_name)

    def push(self, engine, connector: Connector, *, commit_first: bool = True) -> PushOutcome:
        """Commit pending paths (unless ``commit_first`` is off), then push. Never raises.

        :meth:`publish` has just committed and passes ``commit_first=False``: an edit
        written during that commit waits for the folder's next interval, so a folder
        never gets two commits in one interval. The index entries of the committed paths
        are written after the push.

        The usual push holds only the repository lock: it reads commits and writes a
        tracking ref, never the working tree, and every other user of the repository
        (committing) takes that lock too, so the folder's documents keep syncing during
        the network round trip. Only when the remote moved does it take the folder lock,
        commit what was written meanwhile and, in that one hold, fetch, rebuild (which
        rewrites the working tree) and push: nothing uncommitted may be in the tree
        then. Lock order is folder, then repository; the repository lock is never held
        while waiting for the folder lock.
        """
        when = time.time()
        key = connector.key
        try:
            spec = self.spec(connector)
            vendor = self.vendor() if spec.kind == "ssh" else None
            if commit_first:
                with engine.lock(connector):
                    engine.commit(connector, defer_index=True)
            options = dict(branch=connector.branch, remote_name=connector.remote_name, vendor=vendor)
            with engine.repo_lock(connector):
                try:
                    result = gitrepo.push_without_fetch(engine.repo(connector), spec, **options)
                except gitrepo.RemoteMoved as moved:
                    log.info("remote moved, fetching and rebuilding relay=%s folder=%s remote=%s head=%s",
                             connector.relay_id, connector.folder_id, spec.display,
                             (moved.remote_head or "none")[:12])
                    result = None
            if result is None:
                with engine.lock(connector):
                    engine.commit(connector)
                    with engine.repo_lock(connector):
                        result = gitrepo.push_fast_forward(engine.repo(connector), spec, fetch_first=True,
                                                           **options)
        except Exception as exc:  # every failure is retried later; commits stay local
            if isinstance(exc, gitrepo.RepositoryLocked):
                self._sweep(engine, connector)
            permanent = bool(getattr(exc, "permanent", False))
            delay = self._backoff.failure(key)
            if permanent:
                delay = self._backoff.cap
            message = redact(str(exc), self.secrets)
            outcome = PushOutcome(ok=False, at=when, error=message, failures=self._backoff.failures(key),
                                  retry_in=round(delay, 1), permanent=permanent)
            log.warning("push failed, commits kept locally relay=%s folder=%s remote=%s fails=%d "
                        "retry_in=%.0fs permanent=%s error=%s",
                        connector.relay_id, connector.folder_id, redact_url(connector.url),
                        outcome.failures, delay, permanent, message)
            return self._record(connector, outcome, time.monotonic() + delay)
        finally:
            self._refresh_index(engine, connector)
        self._backoff.reset(key)
        outcome = PushOutcome(ok=True, at=when, status=result.status, remote_head=result.remote_head,
                              pushed=result.pushed_commits, rebuilt=result.rebuilt)
        if result.status != "up-to-date":
            log.info("push done relay=%s folder=%s remote=%s status=%s commits=%d rebuilt=%d",
                     connector.relay_id, connector.folder_id, redact_url(connector.url),
                     result.status, result.pushed_commits, result.rebuilt)
        return self._record(connector, outcome, 0.0)
