"""The configuration checks made before the service starts, without its heavy imports.

Why a module of its own: gunicorn's master runs them (``gunicorn.conf.py``) before it
forks the worker, so a bad setting is one clear line and an exit. Importing the service
(Dulwich, pycrdt, ``requests``) there would put most of the start time in front of the
first ``/health`` answer; these checks import Paramiko and the Git helpers only when the
configuration has something for them to check (an SSH key, a known_hosts line, a remote).
"""

from __future__ import annotations

import logging

from .config import ConfigError, ConnectorsConfig, Settings, load_connectors

__all__ = ["check_config", "connector_problems"]

log = logging.getLogger("gitsync.service")


def check_config(settings: Settings) -> ConnectorsConfig:
    """Validate what the service needs before any thread or process starts.

    Returns:
        The parsed git_connectors.toml.

    Raises:
        ConfigError: git_connectors.toml or SSH_PRIVATE_KEY is invalid.
    """
    config = load_connectors(settings.connectors_path)
    if settings.ssh_private_key:
        from .ssh import SSHKeyError, load_private_key

        try:
            load_private_key(settings.ssh_private_key)
        except SSHKeyError as exc:
            raise ConfigError(str(exc), key="SSH_PRIVATE_KEY") from None
    problems = connector_problems(settings, config)
    fatal = [p for p in problems if not p.startswith("no connectors file")]
    if fatal:
        raise ConfigError("; ".join(fatal))
    if problems or not config.connectors:
        log.warning("no connectors configured: nothing will be synced (add [[git_connector]] "
                    "tables to %s)", settings.connectors_path)
    return config


def connector_problems(settings: Settings, config: ConnectorsConfig) -> list[str]:
    """What would stop the connectors from working, checked without the network."""
    problems = []
    if config.path is None or not config.path.exists():
        problems.append(f"no connectors file at {settings.connectors_path}: "
                        "check --data-dir / RELAY_GIT_DATA_DIR")
    for n, line in enumerate(config.known_hosts, start=1):
        import paramiko  # only here: its import is a good part of the service's start time

        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
        except Exception:
            entry = None
        if entry is None:
            problems.append(f"known_hosts[{n}] is not an OpenSSH known_hosts line "
                            "(host keytype base64-key), e.g. from ssh-keyscan")
    for n, connector in enumerate(config.connectors, start=1):
        if not connector.url:
            continue
        from . import gitrepo  # Dulwich: only for a connector with a remote to parse

        try:
            spec = gitrepo.parse_remote_url(connector.url, env={}, base_dir=settings.data_dir)
        except gitrepo.GitError as exc:
            problems.append(f"git_connector[{n}].url: {exc}")
            continue
        if spec.kind == "ssh" and not settings.ssh_private_key:
            problems.append(f"git_connector[{n}].url uses SSH but SSH_PRIVATE_KEY is not set")
    return problems
