"""gunicorn settings for relay-git-sync (each one says why it is here).

One worker process holds the work queue; its threads answer requests while the
service's own threads (started after the fork) sync, commit and push.
"""

import logging
import os
import sys

from gitsync.config import ConfigError, settings_from_env
from gitsync.logsetup import configure_logging, gunicorn_logconfig

# Everything is validated here, in the master, so a bad setting is one clear line
# and an exit before any worker forks.
try:
    _settings = settings_from_env(os.environ)
except ConfigError as _exc:  # the log format may be what is wrong: a plain line
    sys.stderr.write(f"relay-git-sync: {_exc}\n")
    sys.exit(2)
configure_logging(_settings.log_level, secrets=_settings.secrets, fmt=_settings.log_format)
# gunicorn's own lines in our format (text or JSON) and through the secret filter.
logconfig_dict = gunicorn_logconfig(_settings.log_level)
try:
    _settings.require_relay()
    # Not gitsync.service: its imports (Dulwich, pycrdt, requests) would delay the first
    # /health answer; the worker opens the service after it serves (gitsync/starter.py).
    from gitsync.preflight import check_config as _check_config  # a gunicorn setting name

    _connectors = _check_config(_settings)
except ConfigError as _exc:
    logging.getLogger("gitsync").error("relay-git-sync: %s", _exc)
    sys.exit(2)
# Credentials in the connectors' remote URLs are secrets too.
configure_logging(_settings.log_level, secrets=[*_settings.secrets, *_connectors.secrets],
                  fmt=_settings.log_format)

bind = os.environ.get("GUNICORN_BIND") or _settings.listen_address  # --bind, else --host/--port
# One worker process: the work queue, its journal lock and the folder locks live in it.
workers = 1
# gthread, except that the worker's main loop reads each request (non-blocking) and
# hands it to a thread only once it has fully arrived: clients that connect and stall
# (half a request line, half a header block, a body that never comes) cost a socket,
# not a thread, and are disconnected after 10 s. Plain gthread gives each of them a
# thread until it finishes; 8 of them stopped /health and /webhooks. See
# gitsync/web/gworker.py.
worker_class = "gitsync.web.gworker.HeadFirstWorker"
# Threads only run the app (parse, authenticate, journal with a shared fsync, answer)
# and never wait for a client; a few more than the cores keep fsync waits overlapped.
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Connections open at once, slow ones included (beyond it new ones wait in the backlog).
worker_connections = 1000
keepalive = 5  # seconds an idle kept-alive connection stays open (a reverse proxy reuses it)
# Forwarded headers (X-Forwarded-Proto and friends) are the app's to trust, as many proxy
# hops as RELAY_GIT_PROXY_HOPS says; gunicorn itself would trust them from 127.0.0.1.
forwarded_allow_ips = ""
# SIGTERM drains the queue and makes the final commit and push before the worker exits;
# whatever does not fit stays in the on-disk journal for the next start.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "60"))
timeout = 120
control_socket_disable = True  # no ~/.gunicorn socket: read-only homes, parallel instances
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()


def on_starting(server):
    # The work queue, its journal and the folder locks live in one process: a second
    # worker would run a second queue on the same data directory. gunicorn's -w and
    # GUNICORN_CMD_ARGS override this file, so the check is here, in the master,
    # before any worker forks.
    if server.cfg.workers != 1:
        server.log.error(
            "relay-git-sync: gunicorn must run exactly one worker process (got %d from"
            " -w/--workers or GUNICORN_CMD_ARGS): the work queue lives in one process; for"
            " more concurrent requests raise GUNICORN_THREADS instead", server.cfg.workers,
        )
        sys.exit(2)


def _service(worker):
    app = getattr(worker, "wsgi", None)
    state = getattr(app, "extensions", {}).get("gitsync") if app is not None else None
    return state.get("service") if state else None


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
# A webhook is answered after a few such waits, and during a full sync the sync's threads
# want the GIL most of the time: at 2 ms, intake during a 4,000-document startup sync
# answered about 30 % more requests/s with a lower median (bench/README.md).
_SWITCH_INTERVAL = 0.002


def post_worker_init(worker):
    sys.setswitchinterval(_SWITCH_INTERVAL)
    service = _service(worker)
    if service is not None:
        service.start()


def worker_exit(server, worker):
    if os.getpid() != worker.pid:  # gunicorn also calls this in the master
        return
    service = _service(worker)
    if service is not None:
        service.stop(timeout=max(5.0, graceful_timeout - 10.0))
