"""WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Builds the settings from the environment and the service (not yet started: threads do
not survive a fork, so gunicorn's ``post_worker_init`` hook starts them in the worker).
"""

from __future__ import annotations

import os
import sys

from gitsync.config import ConfigError, settings_from_env
from gitsync.service import ServiceError, build_service
from gitsync.web import create_app

try:
    settings = settings_from_env(os.environ)
    app = create_app(settings, build_service(settings))
except (ConfigError, ServiceError) as exc:  # one line for the operator, not a traceback
    sys.stderr.write(f"relay-git-sync: {exc}\n")
    raise SystemExit(2) from None
