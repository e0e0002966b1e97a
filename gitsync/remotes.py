"""Per-connector publishing: the SSH vendor from settings, push with backoff, push status.

``gitrepo.push_fast_forward`` does one careful push; this module decides when to try
again after a failure (exponential backoff, capped) and remembers how the last push went
for ``/api/status``.  Unpushed commits simply stay on the local branch: the next push
sends all of them, in order.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import gitrepo
from .config import Connector, ConnectorsConfig, Settings
from .redact import redact, redact_url

__all__ = ["Remotes", "remote_spec"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0


def remote_spec(settings: Settings, connector: Connector,
                env: Mapping[str, str] | None = None) -> gitrepo.RemoteSpec:
    """The connector's parsed remote; a relative local path is relative to the data directory.

    Raises:
        gitrepo.GitError: the URL cannot be used (unsupported scheme, malformed).
    """
    return gitrepo.parse_remote_url(connector.url or "", env=env or {}, base_dir=settings.data_dir)


@dataclass
class _PushState:
    failures: int = 0
    next_try: float = 0.0
    last: dict[str, Any] | None = None


class Remotes:
    """The SSH identity and push bookkeeping of every connector with a ``url``."""

    def __init__(self, settings: Settings, config: ConnectorsConfig, *, env: Mapping[str, str] | None = None):
        self.settings = settings
        self.config = config
        self._env = dict(env) if env is not None else settings.remote_env
        self._states: dict[tuple[str, str], _PushState] = {}
        self._lock = threading.Lock()
        self._pkey = None
        self._secrets = [*settings.secrets, *config.secrets, self._env.get("GIT_HTTPS_PASSWORD", "")]
        if settings.ssh_private_key:
            from .ssh import load_private_key

            # Raises SSHKeyError naming SSH_PRIVATE_KEY: a bad key is a startup error.
            self._pkey = load_private_key(settings.ssh_private_key)

    def public_key(self) -> tuple[str, str] | None:
        if self._pkey is None:
            return None
        from .ssh import key_type, public_key_line

        kind = key_type(self._pkey)
        return public_key_line(self._pkey), "ecdsa" if kind.startswith("ecdsa") else kind

    def vendor(self):
        """A Paramiko vendor holding our key and the trusted host keys (None without a key)."""
        from .ssh import ParamikoVendor

        if self._pkey is None:
            raise gitrepo.GitError(
                "no SSH key configured for an ssh:// remote: set SSH_PRIVATE_KEY to the private key "
                "text and add its public key (cli.py ssh show-pubkey) as a deploy key with write access"
            )
        return ParamikoVendor(
            self._pkey,
            list(self.config.known_hosts),
            trust_on_first_use=self.settings.trust_on_first_use,
        )

    def _state(self, connector: Connector) -> _PushState:
        with self._lock:
            return self._states.setdefault(connector.key, _PushState())

    def due(self, connector: Connector, *, force: bool = False) -> bool:
        """True when a push may be tried now (not backing off after a failure)."""
        return force or time.monotonic() >= self._state(connector).next_try

    def status(self, connector: Connector) -> dict[str, Any] | None:
        return self._state(connector).last

    def push(self, engine, connector: Connector) -> dict[str, Any]:
        """Commit pending paths, then push the connector's branch. Never raises.

        The caller holds the folder lock for the whole call: a push that rebuilds on a
        moved remote rewrites the working tree, so nothing uncommitted may be in it.
        """
        state = self._state(connector)
        when = time.time()
        try:
            engine.commit(connector)
            spec = remote_spec(self.settings, connector, self._env)
            result = gitrepo.push_fast_forward(
                engine.repo(connector),
                spec,
                branch=connector.branch,
                remote_name=connector.remote_name,
                vendor=self.vendor() if spec.kind == "ssh" else None,
            )
        except Exception as exc:  # every failure is retried later; commits stay local
            state.failures += 1
            delay = min(MAX_BACKOFF, 2.0 ** min(state.failures, 9)) * (0.5 + random.random() / 2)
            state.next_try = time.monotonic() + delay
            message = redact(str(exc), self._secrets)
            state.last = {"ok": False, "at": when, "error": message, "failures": state.failures,
                          "retry_in": round(delay, 1)}
            log.warning("push failed, commits kept locally relay=%s folder=%s remote=%s fails=%d "
                        "retry_in=%.0fs error=%s",
                        connector.relay_id, connector.folder_id, redact_url(connector.url),
                        state.failures, delay, message)
            return state.last
        state.failures = 0
        state.next_try = 0.0
        state.last = {"ok": True, "at": when, "status": result.status,
                      "remote_head": result.remote_head, "pushed": result.pushed_commits}
        if result.status != "up-to-date":
            log.info("push done relay=%s folder=%s remote=%s status=%s commits=%d",
                     connector.relay_id, connector.folder_id, redact_url(connector.url),
                     result.status, result.pushed_commits)
        return state.last
