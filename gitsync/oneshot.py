"""What the command line does without the service: one sync, checks of the connectors.

Every function here returns data (dataclasses, lists of problems); ``cli.py`` turns it
into lines for the operator. The long-running service uses :func:`open_engine` and
:func:`check_config` too, so the engine and the configuration are opened and checked
the same way by both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from .config import Connector, ConnectorsConfig, Settings, load_connectors
from .engine import Engine, SyncAborted, SyncReport
from .preflight import check_config, connector_problems
from .publish import Publisher, PushOutcome, remote_spec
from .redact import redact, redact_url
from .relay import RelayClient, Unauthorized
from .service_errors import CredentialsError, DataDirInUse, ServiceError
from .state import DataDirBusy

__all__ = [
    "ConnectorInfo",
    "FolderSync",
    "PushResult",
    "RemoteCheck",
    "SyncOutcome",
    "check_config",
    "check_remotes",
    "connector_problems",
    "describe_connectors",
    "open_engine",
    "push_connector",
    "sync_once",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    """One push of a connector's branch, for the operator.

    Attributes:
        where: the remote, without credentials.
        branch: the branch pushed.
        outcome: how the push ended.
    """

    where: str
    branch: str
    outcome: PushOutcome

    @property
    def ok(self) -> bool:
        return self.outcome.ok


@dataclass(frozen=True)
class FolderSync:
    """One folder of a one-shot sync.

    Attributes:
        connector: the folder synced.
        report: what the sync did, or None when it could not run.
        error: why it could not run (secrets removed), when ``report`` is None.
        push: the push after the commit, when the connector has a remote and pushing
            was asked for.
    """

    connector: Connector
    report: SyncReport | None = None
    error: str | None = None
    push: PushResult | None = None

    @property
    def ok(self) -> bool:
        """The folder synced completely and its push (if any) went through."""
        if self.report is None or self.report.failed:
            return False
        return self.push is None or self.push.ok


@dataclass
class SyncOutcome:
    """Every folder of a one-shot sync, in the order synced."""

    folders: list[FolderSync] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(folder.ok for folder in self.folders)

    @property
    def reports(self) -> list[SyncReport]:
        return [folder.report for folder in self.folders if folder.report is not None]


@dataclass(frozen=True)
class ConnectorInfo:
    """A connector as ``connectors list`` shows it (read without the network).

    Attributes:
        connector: the connector.
        remote: the remote without credentials, None for a local-only connector.
        invalid: why the remote URL cannot be used, if so.
        host_key_trusted: for an SSH remote, whether its host key is known; else None.
    """

    connector: Connector
    remote: str | None = None
    invalid: str | None = None
    host_key_trusted: bool | None = None


@dataclass(frozen=True)
class RemoteCheck:
    """One remote contacted by ``connectors validate --check-remote``.

    Attributes:
        connector: whose remote it is.
        where: the remote, without credentials.
        ok: the remote answered.
        head: the branch head there (hex), None when the branch does not exist yet.
        error: why it could not be reached (secrets removed) when not ok.
    """

    connector: Connector
    where: str
    ok: bool
    head: str | None = None
    error: str | None = None


def open_engine(settings: Settings, connectors: ConnectorsConfig | None = None, *,
                lock_timeout: float = 0.0, wrap_relay: Callable[[RelayClient], object] | None = None) -> Engine:
    """An engine with its Relay client, for the settings given.

    Args:
        wrap_relay: wraps the client the engine reads with (the service counts reads).

    Raises:
        ConfigError: the Relay URL/key are missing or git_connectors.toml is invalid.
        DataDirInUse: another process uses the data directory.
    """
    settings.require_relay()
    if connectors is None:
        connectors = load_connectors(settings.connectors_path)
    relay = RelayClient(
        settings.relay_server_url or "",
        settings.relay_server_api_key or "",
        timeout=settings.relay_timeout,
        retries=settings.relay_retries,
        pool_size=max(8, settings.fetch_concurrency * 2),
        max_update_bytes=settings.max_update_bytes,
        max_attachment_bytes=settings.max_attachment_bytes,
        allow_private_attachment_urls=settings.allow_private_attachment_urls,
    )
    try:
        return Engine(settings, wrap_relay(relay) if wrap_relay else relay, connectors,  # type: ignore[arg-type]
                      lock_timeout=lock_timeout)
    except DataDirBusy as exc:
        relay.close()
        raise DataDirInUse(str(exc)) from None


def sync_once(
    settings: Settings,
    *,
    selection: tuple[str, str] | None = None,
    confirm_deletions: bool = False,
    push: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SyncOutcome:
    """Sync the selected folder (or every connector), commit once per folder, push.

    A ``selection`` not in git_connectors.toml is synced as a local-only connector.
    A folder that cannot be synced is reported in the outcome; the others still run.

    Raises:
        CredentialsError: the Relay Server refused the API key.
        ServiceError: nothing is configured to sync.
        ConfigError: settings or git_connectors.toml are invalid.
    """
    settings.require_relay()
    config = check_config(settings)  # connectors file and SSH key, before any work
    if selection is not None:
        connector = config.find(*selection) or Connector(relay_id=selection[0], folder_id=selection[1])
        targets = [connector]
        config = replace(
            config, connectors=tuple(config.connectors) + (() if config.find(*selection) else (connector,)))
    else:
        targets = list(config.connectors)
        if not targets:
            raise ServiceError(
                f"no connectors configured: add [[git_connector]] tables to {settings.connectors_path} "
                "or pass --relay-id and --folder-id"
            )
    engine = open_engine(settings, config)
    publisher = Publisher(settings, config)
    outcome = SyncOutcome()
    try:
        for connector in targets:
            try:
                report = engine.sync_folder(connector, full=True, confirm_deletions=confirm_deletions,
                                            progress=progress)
            except Unauthorized as exc:
                raise CredentialsError(str(exc)) from None
            except SyncAborted as exc:
                outcome.folders.append(FolderSync(connector, error=str(exc)))
                continue
            except Exception as exc:  # a bug: say so for this folder, carry on with the others
                log.exception("sync failed relay=%s folder=%s", connector.relay_id, connector.folder_id)
                outcome.folders.append(FolderSync(connector, error=f"internal error: {exc}"))
                continue
            report.commit = engine.commit(connector, report=report)
            pushed = push_connector(engine, connector, publisher) if push and connector.url else None
            outcome.folders.append(FolderSync(connector, report=report, push=pushed))
    finally:
        publisher.close()
        engine.close()
    return outcome


def push_connector(engine: Engine, connector: Connector, publisher: Publisher) -> PushResult:
    """Push the connector's branch to its remote."""
    outcome = publisher.push(engine, connector)
    return PushResult(redact_url(connector.url), connector.branch, outcome)


def describe_connectors(settings: Settings, config: ConnectorsConfig) -> list[ConnectorInfo]:
    """Each connector with its remote and, for SSH, whether the host key is trusted."""
    from . import gitrepo
    from .ssh import host_key_name, parse_known_hosts, read_known_hosts_file

    known = parse_known_hosts(read_known_hosts_file(settings.learned_hosts_path) + list(config.known_hosts))
    infos = []
    for connector in config.connectors:
        if not connector.url:
            infos.append(ConnectorInfo(connector))
            continue
        try:
            spec = remote_spec(settings, connector)
        except gitrepo.GitError as exc:
            infos.append(ConnectorInfo(connector, invalid=str(exc)))
            continue
        trusted = None
        if spec.kind == "ssh":
            trusted = known.lookup(host_key_name(spec.host or "", spec.port)) is not None
        infos.append(ConnectorInfo(connector, remote=spec.display, host_key_trusted=trusted))
    return infos


def check_remotes(settings: Settings, config: ConnectorsConfig) -> Iterator[RemoteCheck]:
    """Connect to each connector's remote and read its branch, one at a time."""
    publisher = Publisher(settings, config)
    try:
        for connector in config.connectors:
            if not connector.url:
                continue
            try:
                spec = publisher.spec(connector)
                head = publisher.remote_head(connector)
            except Exception as exc:
                yield RemoteCheck(connector, redact_url(connector.url), False,
                                  error=redact(str(exc), publisher.secrets))
                continue
            yield RemoteCheck(connector, spec.display, True, head=head)
    finally:
        publisher.close()


