"""Command line of relay-git-sync: run the service, sync by hand, inspect keys and connectors.

Installed as the ``relay-git-sync`` command; ``python -m gitsync`` and the top-level
``cli.py`` of a checkout run the same group.  Every option has an environment variable
(shown in ``--help``); secrets are best passed through the environment rather than
flags, which other users can see in ``ps``.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import click

from gitsync import __version__
from gitsync.config import ConfigError, Settings, load_connectors, settings_from_env
from gitsync.logsetup import LOG_FORMATS, configure_logging

__all__ = ["cli", "main", "COMPLETE_VAR", "ConfigurationError"]

ENV = os.environ
# Shell completion: eval "$(_RELAY_GIT_SYNC_COMPLETE=bash_source relay-git-sync)".
COMPLETE_VAR = "_RELAY_GIT_SYNC_COMPLETE"
SERVER_FILES = ("gunicorn.conf.py", "wsgi.py")


class ConfigurationError(click.ClickException):
    """A setting, the connectors file or a credential is wrong: exit code 2.

    Every configuration error of every command exits 2 (as click's usage errors do);
    1 means the configuration was fine but the work failed.
    """

    exit_code = 2


def _settings(**overrides) -> Settings:
    ctx = click.get_current_context(silent=True)
    if ctx is not None and overrides.get("log_format") is None:
        overrides["log_format"] = ctx.meta.get("gitsync.log_format")
    try:
        settings = settings_from_env(ENV, **overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(
        settings.log_level,
        secrets=[*settings.secrets, *_url_secrets(settings)],
        fmt=settings.log_format,
    )
    return settings


def _remember_log_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta["gitsync.log_format"] = value


def _url_secrets(settings: Settings) -> tuple[str, ...]:
    """Credentials in the connectors' remote URLs, for the log filter.

    A connectors file that does not load is reported by the command that needs it.
    """
    try:
        return load_connectors(settings.connectors_path).secrets
    except ConfigError:
        return ()


def _connectors(settings: Settings):
    """The validated connectors file; exits 2 naming file, line and key of a problem."""
    try:
        return load_connectors(settings.connectors_path)
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None


def _echo_per_connector(settings: Settings, render) -> None:
    """Print what ``render(settings, config)`` says, or that there are no connectors."""
    config = _connectors(settings)
    if not config.connectors:
        click.echo(f"no connectors in {settings.connectors_path}")
        return
    for line in render(settings, config):
        click.echo(line)


def _common(func):
    """Options every command takes: where data lives and how loud to be."""
    func = click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="RELAY_GIT_DATA_DIR",
        show_envvar=True, help="Directory holding repos/, state/ and git_connectors.toml "
        "[default: current directory]",
    )(func)
    func = click.option(
        "--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
        envvar="RELAY_GIT_LOG_LEVEL", show_envvar=True, default="INFO", show_default=True,
        help="Logging verbosity (logs go to stderr).",
    )(func)
    func = click.option(
        "--log-format", type=click.Choice(LOG_FORMATS), envvar="RELAY_GIT_LOG_FORMAT",
        show_envvar=True, default="text", show_default=True, expose_value=False,
        callback=_remember_log_format,
        help="Log lines as text, or as JSON objects (one per line) for log shippers.",
    )(func)
    return func


def _relay_options(func):
    func = click.option(
        "--relay-server-url", envvar="RELAY_SERVER_URL", show_envvar=True,
        help="Base URL of the Relay Server, e.g. https://relay.example.com",
    )(func)
    func = click.option(
        "--relay-server-api-key", envvar="RELAY_SERVER_API_KEY", show_envvar=True,
        help="Relay Server API key (prefer the environment variable: flags show up in ps).",
    )(func)
    return func


def _admin_options(func):
    """Where the running service listens and its admin token (status, sync)."""
    func = click.option(
        "--admin-token", envvar="ADMIN_TOKEN", show_envvar=True,
        help="The service's admin token (prefer the environment variable: flags show up in ps).",
    )(func)
    return func


def _size_options(func):
    """Size caps on what is read from the Relay Server (serve and sync)."""
    func = click.option(
        "--max-attachment-bytes", type=int, envvar="RELAY_GIT_MAX_ATTACHMENT_BYTES",
        show_envvar=True, default=Settings.max_attachment_bytes, show_default=True,
        help="Largest attachment downloaded, in bytes; a larger one is skipped with a reason.",
    )(func)
    func = click.option(
        "--max-update-bytes", type=int, envvar="RELAY_GIT_MAX_UPDATE_BYTES", show_envvar=True,
        default=Settings.max_update_bytes, show_default=True,
        help="Largest document update read from the Relay Server, in bytes (after any "
        "decompression); a larger document is skipped with a reason.",
    )(func)
    func = click.option(
        "--allow-private-attachment-urls", is_flag=True,
        envvar="RELAY_GIT_ALLOW_PRIVATE_ATTACHMENT_URLS", show_envvar=True,
        help="Let attachment download URLs reach loopback, link-local and private addresses "
        "(by default only public ones, and those of the Relay Server's own kind).",
    )(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="""\b
Settings read from the environment only:
  SSH_PRIVATE_KEY                    private key text for SSH remotes (never a path)
  RELAY_GIT_FETCH_CONCURRENCY        parallel document fetches per folder (default 8)
  RELAY_GIT_AUTHOR_NAME / _EMAIL     commit author (default Relay Git Sync <relay-git-sync@localhost>)
  RELAY_GIT_SSH_TRUST_ON_FIRST_USE   accept unknown SSH host keys (default false)
  RELAY_GIT_HEALTH_GRACE             seconds a folder may fail before /health says degraded (default 180)
  GIT_HTTPS_USERNAME / _PASSWORD     credentials for https:// remotes
  GUNICORN_THREADS, GUNICORN_GRACEFUL_TIMEOUT   serve: request threads, drain time (60 s)

\b
Exit codes: 0 done, 1 the work failed, 2 a usage or configuration error.""")
@click.version_option(__version__, prog_name="relay-git-sync")
def cli() -> None:
    """Keep Git repositories in step with Relay Server shared folders."""



@cli.command()
@_common
@_relay_options
@click.option("--host", envvar="RELAY_GIT_HOST", show_envvar=True, default="0.0.0.0",
              show_default=True, help="Address to listen on (127.0.0.1: this machine only; :: "
              "for IPv6). Put a reverse proxy in front.")
@click.option("--port", type=int, envvar="PORT", show_envvar=True, default=8000, show_default=True,
              help="HTTP port to listen on.")
@click.option("--bind", envvar="GUNICORN_BIND", show_envvar=True,
              help="gunicorn listen address, replacing --host and --port: HOST:PORT, "
              "[IPv6]:PORT or unix:PATH.")
@click.option("--commit-interval", type=float, envvar="RELAY_GIT_COMMIT_INTERVAL", show_envvar=True,
              default=10.0, show_default=True, help="Seconds between commits of a changed folder.")
@click.option("--webhook-secret", envvar="WEBHOOK_SECRET", show_envvar=True,
              help="Shared secret (Bearer token) or whsec_ signing secret for POST /webhooks "
              "(prefer the environment variable).")
@click.option("--debounce", type=float, envvar="RELAY_GIT_DEBOUNCE", show_envvar=True, default=1.0,
              show_default=True, help="Least seconds between two fetches of one document (the first "
              "webhook is fetched at once; later ones in the interval make one more fetch).")
@click.option("--workers", type=int, envvar="RELAY_GIT_WORKERS", show_envvar=True, default=4,
              show_default=True, help="Background sync threads.")
@click.option("--reconcile-interval", type=float, envvar="RELAY_GIT_RECONCILE_INTERVAL",
              show_envvar=True, default=600.0, show_default=True,
              help="Seconds between full re-syncs that heal lost webhooks (0 = only at startup).")
@click.option("--proxy-hops", type=int, envvar="RELAY_GIT_PROXY_HOPS", show_envvar=True, default=0,
              show_default=True, help="Reverse proxies in front whose X-Forwarded-* headers are "
              "trusted (0: none, the headers are ignored).")
@_size_options
@_admin_options
@click.option("--metrics-public", is_flag=True, default=None, envvar="METRICS_PUBLIC", show_envvar=True,
              help="Serve /metrics without the admin token.")
def serve(data_dir, log_level, relay_server_url, relay_server_api_key, host, port, bind,
          commit_interval, webhook_secret, debounce, workers, reconcile_interval, proxy_hops,
          max_update_bytes, max_attachment_bytes, allow_private_attachment_urls, admin_token,
          metrics_public) -> None:
    """Run the webhook service under gunicorn (the same app as gunicorn -c gunicorn.conf.py wsgi:app)."""
    from gitsync.oneshot import check_config

    settings = _settings(data_dir=data_dir, log_level=log_level, relay_server_url=relay_server_url,
                         relay_server_api_key=relay_server_api_key, host=host, port=port,
                         commit_interval=commit_interval, webhook_secret=webhook_secret,
                         workers=workers, reconcile_interval=reconcile_interval, debounce=debounce,
                         max_update_bytes=max_update_bytes, max_attachment_bytes=max_attachment_bytes,
                         allow_private_attachment_urls=allow_private_attachment_urls,
                         proxy_hops=proxy_hops, admin_token=admin_token, metrics_public=metrics_public)
    try:
        settings.require_relay()
        check_config(settings)
    except ConfigError as exc:
        raise ConfigurationError(str(exc)) from None
    if bind is not None and not bind.strip():
        raise click.BadParameter("must be HOST:PORT, [IPv6]:PORT or unix:PATH", param_hint="--bind")
    env = dict(ENV)
    values = {
        "RELAY_GIT_DATA_DIR": str(settings.data_dir), "RELAY_GIT_LOG_LEVEL": settings.log_level,
        "RELAY_GIT_LOG_FORMAT": settings.log_format,
        "RELAY_SERVER_URL": settings.relay_server_url, "RELAY_SERVER_API_KEY": settings.relay_server_api_key,
        "RELAY_GIT_HOST": settings.host, "PORT": str(settings.port),
        "GUNICORN_BIND": bind or "", "RELAY_GIT_COMMIT_INTERVAL": str(settings.commit_interval),
        "WEBHOOK_SECRET": settings.webhook_secret, "RELAY_GIT_WORKERS": str(settings.workers),
        "RELAY_GIT_RECONCILE_INTERVAL": str(settings.reconcile_interval),
        "RELAY_GIT_DEBOUNCE": str(settings.debounce),
        "RELAY_GIT_MAX_UPDATE_BYTES": str(settings.max_update_bytes),
        "RELAY_GIT_MAX_ATTACHMENT_BYTES": str(settings.max_attachment_bytes),
        "RELAY_GIT_ALLOW_PRIVATE_ATTACHMENT_URLS": "1" if settings.allow_private_attachment_urls else "",
        "RELAY_GIT_PROXY_HOPS": str(settings.proxy_hops),
        "ADMIN_TOKEN": settings.admin_token,
        "METRICS_PUBLIC": "1" if settings.metrics_public else None,
    }
    env.update({k: v for k, v in values.items() if v})
    root = _server_dir()
    argv = [sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn.conf.py"),
            "--chdir", str(root), "wsgi:app"]
    os.execve(sys.executable, argv, env)  # this process becomes gunicorn: nothing is spawned


def _server_dir() -> Path:
    """Where ``gunicorn.conf.py`` and ``wsgi.py`` are: the checkout this package sits in,
    or the copy installed with the package (``<prefix>/share/relay-git-sync``)."""
    places = [Path(__file__).resolve().parent.parent]
    for scheme in (None, f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")
        except KeyError:
            continue
        places.append(Path(data) / "share" / "relay-git-sync")
    for place in places:
        if all((place / name).is_file() for name in SERVER_FILES):
            return place
    raise ConfigurationError(
        "cannot find gunicorn.conf.py and wsgi.py (looked in "
        + ", ".join(str(p) for p in places) + "): reinstall relay-git-sync"
    )


@cli.command()
@_common
@_relay_options
@click.option("--relay-id", help="Relay UUID of the folder to sync (with --folder-id).")
@click.option("--folder-id", help="Shared folder UUID to sync (with --relay-id).")
@click.option("--all", "sync_all", is_flag=True, help="Sync every connector in git_connectors.toml.")
@click.option("--confirm-deletions", is_flag=True,
              help="Apply a mass deletion that would otherwise be held for confirmation.")
@click.option("--no-push", is_flag=True, help="Commit locally but do not push to remotes.")
@_size_options
@_admin_options
@click.option("--url", envvar="RELAY_GIT_SERVICE_URL", show_envvar=True,
              help="Ask the running service at this URL to sync (POST /api/sync with ADMIN_TOKEN). "
              "Without it, a service holding the data directory is asked at http://127.0.0.1:$PORT.")
def sync(data_dir, log_level, relay_server_url, relay_server_api_key, relay_id, folder_id,
         sync_all, confirm_deletions, no_push, max_update_bytes, max_attachment_bytes,
         allow_private_attachment_urls, admin_token, url) -> None:
    """One-time sync of a shared folder (or all connectors) into its repository.

    Fetches the folder and its documents, writes the changes, makes one commit and
    pushes it when the connector has a url. Prints one summary line per folder. While
    the service runs on the data directory, the sync is queued on it instead (needs
    ADMIN_TOKEN); the service commits and pushes on its own schedule.
    """
    from gitsync import oneshot
    from gitsync.ids import InvalidId, parse_uuid
    from gitsync.service_errors import CredentialsError, DataDirInUse, ServiceError

    if url:  # nothing local is needed: the service does the work
        settings = None
    else:
        settings = _settings(data_dir=data_dir, log_level=log_level, relay_server_url=relay_server_url,
                             relay_server_api_key=relay_server_api_key, max_update_bytes=max_update_bytes,
                             max_attachment_bytes=max_attachment_bytes,
                             allow_private_attachment_urls=allow_private_attachment_urls)
    if sync_all == bool(relay_id or folder_id):
        raise click.UsageError("give either --relay-id and --folder-id, or --all")
    selection = None
    if not sync_all:
        if not (relay_id and folder_id):
            raise click.UsageError("--relay-id and --folder-id go together")
        try:
            selection = (parse_uuid(relay_id, what="--relay-id"), parse_uuid(folder_id, what="--folder-id"))
        except InvalidId as exc:
            raise click.BadParameter(str(exc)) from None
    if settings is None:
        _sync_remotely(url, admin_token, selection, confirm_deletions, no_push)
        return
    progress = _progress_printer() if sys.stderr.isatty() else None
    try:
        outcome = oneshot.sync_once(settings, selection=selection, confirm_deletions=confirm_deletions,
                                    push=not no_push, progress=progress)
    except DataDirInUse as exc:
        if not admin_token:
            raise click.ClickException(
                f"{exc}; to sync through the running service, set ADMIN_TOKEN to its admin token "
                "(and --url if it does not listen on http://127.0.0.1:$PORT)") from None
        _sync_remotely(f"http://127.0.0.1:{settings.port}", admin_token, selection, confirm_deletions, no_push)
        return
    except (CredentialsError, ConfigError) as exc:
        raise ConfigurationError(str(exc)) from None
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    for folder in outcome.folders:
        for line in _folder_sync_lines(folder):
            click.echo(line)
    if not outcome.ok:
        raise click.exceptions.Exit(1)


def _folder_sync_lines(folder) -> list[str]:
    """The summary of one folder of ``sync``: counts, what was skipped or failed, the push."""
    connector, report = folder.connector, folder.report
    if report is None:
        return [f"{connector.name}: failed: {folder.error}"]
    lines = [report.summary()]
    lines += [f"  skipped {path}: {reason}" for path, reason in report.skipped]
    lines += [f"  failed {path}: {reason} (run sync again to retry)" for path, reason in report.failed]
    if report.held:
        lines.append(f"  held: {report.held}; to apply it: cli.py sync --relay-id {connector.relay_id} "
                     f"--folder-id {connector.folder_id} --confirm-deletions")
    if folder.push is not None:
        push = folder.push
        if push.ok:
            lines.append(f"  push to {push.where} ({push.branch}): {push.outcome.status}")
        else:
            lines.append(f"  push to {push.where} ({push.branch}) failed: {push.outcome.error}")
    return lines


def _sync_remotely(url, admin_token, selection, confirm_deletions, no_push) -> None:
    """Queue the sync on the running service and say where to follow it."""
    from gitsync.adminclient import AdminError, normalize_url, request_sync

    if no_push:
        raise click.UsageError("--no-push cannot be used with a running service: it pushes on its own schedule")
    try:
        answer = request_sync(url, admin_token, selection, confirm_deletions=confirm_deletions)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None
    base = normalize_url(url)
    for folder in answer.get("folders", []):
        click.echo(f"{folder['relay_id']}/{folder['folder_id']}: full sync queued on the service at {base}")
    click.echo(f"follow it with: cli.py status --url {base}")


def _progress_printer():
    def update(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        click.echo(f"\r  fetching [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", nl=False,
                   err=True)
        if done >= total:
            click.echo("", err=True)

    return update


@cli.command()
@_common
@_admin_options
@click.option("--url", help="Ask a running service instead, e.g. http://127.0.0.1:8000 (GET /api/status, "
              "with ADMIN_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw data as JSON instead of the summary.")
def status(data_dir, log_level, admin_token, url, as_json) -> None:
    """Show each connector's sync state: files, failures and last error, held deletions, pushes.

    Reads the data directory (safe while the service runs), or a running service's
    /api/status with --url; both print the same summary.
    """
    import json

    from gitsync import statusview

    if url:
        from gitsync.adminclient import AdminError, get_status

        try:
            data = get_status(url, admin_token)
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        settings = _settings(data_dir=data_dir, log_level=log_level)
        if not settings.data_dir.is_dir():
            raise ConfigurationError(f"data directory {settings.data_dir} does not exist "
                                     "(check --data-dir / RELAY_GIT_DATA_DIR)")
        config = _connectors(settings)
        if not config.connectors and not as_json:
            click.echo(f"no connectors in {settings.connectors_path}")
            return
        data = statusview.offline_status(settings, config)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    for line in statusview.render_status(data):
        click.echo(line)


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's repositories, state and remote in this directory.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Service log verbosity during the demo.")
@click.option("--serve", is_flag=True,
              help="Keep the stand-in and the service running afterwards (until Ctrl-C or "
              "SIGTERM) and print the export lines to point a second terminal at them.")
def demo(keep, log_level, serve) -> None:
    """Run everything locally: a Relay stand-in, the real service and a local bare remote.

    Syncs a sample folder, edits it through the stand-in, sends the webhooks, and prints
    the history that reached the remote. Needs no network, no git binary and no config.
    """
    from gitsync.dev.demo import run_demo

    if keep is not None and keep.exists() and any(keep.iterdir()):
        raise click.BadParameter(f"{keep} is not empty; give a new or empty directory", param_hint="--keep")
    configure_logging(log_level)
    stop = _stop_on_signals() if serve else None
    try:
        code = run_demo(click.echo, keep=keep, serve_until=stop)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    raise click.exceptions.Exit(code)


def _stop_on_signals():
    """An event set by SIGINT or SIGTERM, so a long-running command stops cleanly (exit 0)."""
    import signal
    import threading

    stop = threading.Event()

    def handler(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@cli.group()
def ssh() -> None:
    """SSH key used to push to git remotes."""


@ssh.command("show-pubkey")
@click.option("--log-level", default="WARNING", hidden=True)
def show_pubkey(log_level) -> None:
    """Print the public key of SSH_PRIVATE_KEY, to add as a deploy key with write access."""
    from gitsync.ssh import SSHKeyError, load_private_key, public_key_line

    settings = _settings(log_level=log_level)
    if not settings.ssh_private_key:
        raise ConfigurationError(
            "no SSH key configured: set SSH_PRIVATE_KEY to the private key text "
            "(e.g. export SSH_PRIVATE_KEY=\"$(cat git_sync_key)\")"
        )
    text = settings.ssh_private_key.strip()
    if text.startswith(("ssh-", "ecdsa-")):
        raise ConfigurationError("SSH_PRIVATE_KEY holds a public key; set it to the private key text "
                                   "(the file without .pub)")
    if "\n" not in text and "-----BEGIN" not in text and Path(text).expanduser().is_file():
        raise ConfigurationError("SSH_PRIVATE_KEY holds a file path; set it to the key's text: "
                                   f'export SSH_PRIVATE_KEY="$(cat {text})"')
    try:
        key = load_private_key(settings.ssh_private_key)
    except SSHKeyError as exc:
        raise ConfigurationError(str(exc)) from None
    click.echo(public_key_line(key))


@cli.group()
def connectors() -> None:
    """Inspect git_connectors.toml."""


@connectors.command("list")
@_common
def connectors_list(data_dir, log_level) -> None:
    """Show each connector, its remote and whether the remote's host key is trusted."""
    from gitsync import oneshot

    def render(settings, config):
        for info in oneshot.describe_connectors(settings, config):
            yield _connector_line(info)

    _echo_per_connector(_settings(data_dir=data_dir, log_level=log_level), render)


def _connector_line(info) -> str:
    """One line of ``connectors list``: folder, branch, prefix, remote and host-key trust."""
    connector = info.connector
    prefix = f" prefix={connector.prefix}" if connector.prefix else ""
    prefix += " commit_per_author=true" if connector.commit_per_author else ""
    line = f"{connector.name} branch={connector.branch}{prefix} remote="
    if not connector.url:
        return line + "(local only)"
    if info.invalid is not None:
        return line + f"invalid: {info.invalid}"
    trust = ""
    if info.host_key_trusted is not None:
        trust = " host-key=" + ("trusted" if info.host_key_trusted else "UNKNOWN (add it to known_hosts)")
    return line + f"{info.remote}{trust}"


@connectors.command("validate")
@_common
@click.option("--check-remote", is_flag=True, help="Also connect to each remote and list its branch.")
def connectors_validate(data_dir, log_level, check_remote) -> None:
    """Check git_connectors.toml; exits 2 naming the file, line and key of a problem.

    With --check-remote, a remote that cannot be reached exits 1.
    """
    from gitsync import oneshot

    settings = _settings(data_dir=data_dir, log_level=log_level)
    config = _connectors(settings)
    problems = oneshot.connector_problems(settings, config)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        raise ConfigurationError(f"{len(problems)} problem(s) in {settings.connectors_path}")
    click.echo(f"{settings.connectors_path}: {len(config.connectors)} connector(s), "
               f"{len(config.known_hosts)} known_hosts line(s): ok")
    if check_remote:
        problems = 0
        for check in oneshot.check_remotes(settings, config):
            name, branch = check.connector.name, check.connector.branch
            if not check.ok:
                click.echo(f"{name}: {check.where}: {check.error}")
                problems += 1
                continue
            where = f"{branch} at {check.head[:10]}" if check.head else f"{branch} absent (will be created)"
            click.echo(f"{name}: {check.where}: reachable, {where}")
        if problems:
            raise click.ClickException(f"{problems} remote(s) could not be reached")


def main() -> None:
    """Entry point of the ``relay-git-sync`` command and ``python -m gitsync``."""
    cli(complete_var=COMPLETE_VAR)
