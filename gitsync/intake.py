"""Journaling a webhook event: the one path from a validated event to the durable queue.

Why a module of its own: the web layer hands events to the :class:`gitsync.starter.
ServiceStarter` while the service opens and to the :class:`gitsync.service.Service`
afterwards, and both must answer the same way (ignored relay, queued, merged, 503). It
imports only the queue, so the starter stays light.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from .events import Accepted, AcceptStatus, WebhookEvent
from .service_errors import ServiceUnavailable
from .workqueue import JournalError, Lane, QueueClosed, WorkQueue

__all__ = ["Intake"]

log = logging.getLogger("gitsync.service")

_MAX_UNKNOWN = 10_000  # relays remembered for the warn-once log (bounded: ids come from outside)


class Intake:
    """Queues events of the relays we sync; counts and reports what it did.

    Args:
        relays: the relay ids that have a connector.
        count: called with ``"accepted"``, ``"merged"`` or ``"ignored"`` per event.
        on_journal: called with None after a durable write, or with the operator's
            message when the journal refused one (the service's health shows it).
    """

    def __init__(self, relays: Iterable[str], count: Callable[[str], None], *,
                 on_journal: Callable[[str | None], None] | None = None):
        self._relays = frozenset(relays)
        self._count = count
        self._on_journal = on_journal
        self._lock = threading.Lock()
        self._unknown: set[str] = set()  # relays whose ignored webhooks were logged

    def knows(self, relay_id: str) -> bool:
        return relay_id in self._relays

    def ignore(self, event: WebhookEvent) -> Accepted:
        """The answer to an event of a relay with no connector (a WARNING once per relay)."""
        self._count("ignored")
        with self._lock:
            first = event.relay_id not in self._unknown
            if first and len(self._unknown) < _MAX_UNKNOWN:
                self._unknown.add(event.relay_id)
        # A Relay Server sending us another relay's events is a configuration matter
        # (its webhook prefix, or a missing connector): said once, not per event.
        log.log(logging.WARNING if first else logging.DEBUG,
                "webhook ignored, no connector for relay relay=%s doc=%s (add a [[git_connector]] "
                "for it, or set this relay's webhook prefix on the Relay Server)",
                event.relay_id, event.doc_uuid)
        return Accepted(AcceptStatus.IGNORED, event.doc_id, reason="no connector for this relay")

    def accept(self, queue: WorkQueue, event: WebhookEvent, *, closing: bool = False) -> Accepted:
        """Durably queue ``event`` (or ignore it); the web layer answers 202 (200 when ignored).

        Raises:
            ServiceUnavailable: ``closing``, the queue is closed, or the journal is
                unwritable (answered 503).
        """
        if not self.knows(event.relay_id):
            return self.ignore(event)
        if closing:
            raise ServiceUnavailable("service is shutting down; not accepted")
        try:
            created = queue.put((event.relay_id, event.doc_uuid), lane=Lane.INTERACTIVE)
        except QueueClosed:
            raise ServiceUnavailable("service is shutting down; not accepted") from None
        except JournalError as exc:
            log.error("cannot journal a webhook, answering 503 doc=%s error=%s", event.doc_uuid, exc)
            if self._on_journal is not None:
                self._on_journal("cannot store webhooks durably: is the data directory writable and not full?")
            raise ServiceUnavailable(
                "cannot store the event durably (is the data directory writable and not full?)"
            ) from None
        if self._on_journal is not None:
            self._on_journal(None)
        self._count("accepted" if created else "merged")
        return Accepted(AcceptStatus.QUEUED if created else AcceptStatus.MERGED, event.doc_id)
