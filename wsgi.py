"""WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Builds the settings from the environment and the app with a service *starter*: the
worker answers ``/health`` and journals webhooks as soon as it serves, while the service
itself (Dulwich, pycrdt, the state, the data-directory lock) opens in a background thread
started by gunicorn's ``post_worker_init`` hook (threads do not survive a fork). See
gitsync/starter.py.
"""

from __future__ import annotations

import os
import sys

from gitsync.config import ConfigError, settings_from_env
from gitsync.preflight import check_config
from gitsync.service_errors import ServiceError
from gitsync.starter import ServiceStarter
from gitsync.web import create_app

# gunicorn's exit code for a worker that cannot boot: the master stops with it instead of
# forking worker after worker against the same broken data directory.
WORKER_BOOT_ERROR = 3


def _cannot_open(message: str) -> None:
    """The service did not open (logged by the starter): end this worker."""
    sys.stderr.flush()
    os._exit(WORKER_BOOT_ERROR)


try:
    settings = settings_from_env(os.environ)
    settings.require_relay()
    app = create_app(settings, ServiceStarter(settings, check_config(settings), on_failure=_cannot_open))
except (ConfigError, ServiceError) as exc:  # one line for the operator, not a traceback
    sys.stderr.write(f"relay-git-sync: {exc}\n")
    raise SystemExit(2) from None
