"""The service as the web layer sees it from the first request, while it opens.

Why: opening the service (Dulwich, pycrdt and ``requests`` imported, the state read, the
data-directory lock taken) takes longer than a health checker waits after a start, and a
webhook arriving meanwhile must not be lost (the Relay Server never retries). So gunicorn's
worker serves a :class:`ServiceStarter` at once: it opens the durable work queue (cheap)
before the first request, answers ``/health`` (state ``starting``) and journals webhooks
into that queue, while a background thread opens the real :class:`gitsync.service.Service`
on the same queue and then starts it. From then on every call goes to the service.

What waits for the service instead: ``/api/status``, the public key and full-sync
requests wait up to ``wait`` seconds for it (it usually takes about a second), then
answer 503.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from . import __version__
from .config import ConnectorsConfig, Settings
from .events import Accepted, WebhookEvent
from .intake import Intake
from .metrics import Metrics
from .service_errors import ServiceUnavailable
from .workqueue import JournalError, WorkQueue

__all__ = ["ServiceStarter"]

log = logging.getLogger("gitsync.service")


class ServiceStarter:
    """Accepts webhooks and answers ``/health`` from the start; opens the service behind.

    Args:
        settings: validated settings (the Relay settings present).
        connectors: the checked git_connectors.toml (``preflight.check_config``).
        on_failure: called with a one-line message when the service cannot be opened
            (gunicorn's worker exits then, as it did when the service opened before
            serving).
        wait: seconds a call that needs the service waits for it to open.
    """

    def __init__(self, settings: Settings, connectors: ConnectorsConfig, *,
                 on_failure: Callable[[str], None] | None = None, wait: float = 30.0):
        log.info("relay-git-sync %s starting pid=%d data_dir=%s", __version__, os.getpid(), settings.data_dir)
        self.settings = settings
        self.config = connectors
        self.metrics = Metrics()  # handed to the service: webhook counts from the start
        self._intake = Intake((c.relay_id for c in connectors.connectors), self._count_early)
        self._on_failure = on_failure
        self._wait = wait
        self._lock = threading.Lock()
        self._opened = threading.Event()  # the service exists, or opening it failed
        self._service: Any = None
        self._failure: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._early = {"accepted": 0, "merged": 0, "ignored": 0}  # answered before the service
        self.queue: WorkQueue | None = None
        try:
            self.queue = WorkQueue(settings.queue_dir / "journal.jsonl", min_interval=settings.debounce)
        except JournalError as exc:
            # Another worker still holds it (a restart): the service opens it once that
            # worker has let go of the data directory; webhooks wait for that.
            log.info("work journal busy, opening it with the service error=%s", exc)

    # --- lifecycle ------------------------------------------------------------------

    @property
    def service(self) -> Any:
        """The opened service, or None while it opens (or when opening failed)."""
        return self._service

    def start(self) -> None:
        """Open and start the service in a background thread (returns at once)."""
        with self._lock:
            if self._thread is not None:
                if self._service is not None:
                    self._service.start()  # after a fork: threads do not survive it
                return
            self._thread = threading.Thread(target=self._open, name="service-open", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            from .service import Service  # the heavy imports, off the first answer's path

            service = Service(self.settings, self.config, queue=self.queue, metrics=self.metrics)
        except Exception as exc:
            from .redact import redact

            secrets = [*self.settings.secrets, *self.config.secrets]
            self._failure = redact(f"cannot open the service: {exc}", secrets)
            log.error("relay-git-sync: %s", self._failure,
                      exc_info=not isinstance(exc, (ServiceUnavailable, OSError, ValueError)))
            self._opened.set()
            if self._on_failure is not None:
                self._on_failure(self._failure)
            return
        with self._lock:
            self._service = service
            self.queue = service.queue
            stopping = self._stopping
        self._opened.set()
        if not stopping:
            service.start()

    def stop(self, timeout: float = 25.0) -> None:
        """Stop the service (see ``Service.stop``), or the opening one once it is open."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        service = self._service
        if service is not None:
            service.stop(timeout=timeout if service.running else 0.0)
        elif self.queue is not None:
            self.queue.close()

    def _require(self) -> Any:
        """The service, waiting for it to open.

        Raises:
            ServiceUnavailable: it did not open within ``wait`` seconds, or failed to.
        """
        if self._service is None and not self._opened.wait(self._wait):
            raise ServiceUnavailable("service is starting; try again in a moment")
        if self._service is None:
            raise ServiceUnavailable("service could not be opened; see the log")
        return self._service

    # --- what the web layer calls ---------------------------------------------------

    def accept(self, event: WebhookEvent) -> Accepted:
        """Durably queue a webhook event, before the service is open too.

        Raises:
            ServiceUnavailable: shutting down, or the journal is unwritable or not open.
        """
        service = self._service
        if service is not None:
            return service.accept(event)
        if not self._intake.knows(event.relay_id):
            return self._intake.ignore(event)
        queue = self.queue
        if queue is None:  # the previous worker still holds the journal: wait for the service
            return self._require().accept(event)
        return self._intake.accept(queue, event, closing=self._stopping)

    def _count_early(self, what: str) -> None:
        with self._lock:
            self._early[what] += 1

    def health(self) -> dict:
        """``/health``: the service's answer once open; ``starting`` (ok) until then."""
        service = self._service
        if service is not None:
            return service.health()
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "state": "starting",
            "initial_sync": "running",
            "queue": self.queue.pending_count if self.queue is not None and not self.queue.closed else 0,
        }
        if self._failure is not None:
            body["status"] = "unhealthy"
            body["reasons"] = [{"relay_id": None, "folder_id": None, "kind": "startup",
                                "message": self._failure, "since": None, "permanent": True}]
        return body

    def status(self) -> dict:
        """``/api/status`` of the service, with the webhooks answered before it opened."""
        body = self._require().status()
        counts = body.get("counts")
        if isinstance(counts, dict):
            with self._lock:
                for key, value in self._early.items():
                    counts[key] = counts.get(key, 0) + value
        return body

    def public_key(self) -> tuple[str, str] | None:
        return self._require().public_key()

    def request_full_sync(self, *args: Any, **kwargs: Any) -> Any:
        return self._require().request_full_sync(*args, **kwargs)
