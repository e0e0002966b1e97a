"""The values that cross from the intake (webhooks, websockets) into the service.

A :class:`WebhookEvent` is built only from a checked compound document id, so the
service never sees an id it would have to validate again; :class:`Accepted` is what the
service answers, and the web layer turns it into the JSON of the 200/202 reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .ids import InvalidId, parse_compound_id

__all__ = ["AcceptStatus", "Accepted", "WebhookEvent"]


@dataclass(frozen=True)
class WebhookEvent:
    """One document changed on a relay: what ``Service.accept`` queues.

    Attributes:
        doc_id: the compound id as the Relay Server names the document (lower case).
        relay_id: the relay's UUID.
        doc_uuid: the document's UUID (the last part of ``doc_id``).
        event_id: the delivery's id, when the Relay Server sent one.
        timestamp: when the Relay Server says the change happened, as sent.
        user: who loaded the document (not necessarily who edited it), as sent.
    """

    doc_id: str
    relay_id: str
    doc_uuid: str
    event_id: str | None = None
    timestamp: str | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        for name in ("event_id", "timestamp", "user"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"webhook event {name} must be a string or absent")
        try:
            cid = parse_compound_id(self.doc_id) if isinstance(self.doc_id, str) else None
        except InvalidId as exc:
            raise ValueError(f"webhook event doc_id: {exc}") from None
        if cid is None or str(cid) != self.doc_id or (cid.relay_id, cid.doc_id) != (self.relay_id, self.doc_uuid):
            raise ValueError(f"webhook event ids disagree: doc_id {self.doc_id!r} is not relay "
                             f"{self.relay_id!r} and doc {self.doc_uuid!r}")

    @classmethod
    def for_document(cls, doc_id: str, *, event_id: str | None = None, timestamp: str | None = None,
                     user: str | None = None) -> WebhookEvent:
        """The event for a compound document id (2- or 3-UUID form, any case).

        Raises:
            InvalidId: ``doc_id`` is not a compound document id.
        """
        cid = parse_compound_id(doc_id)
        return cls(str(cid), cid.relay_id, cid.doc_id, event_id=event_id, timestamp=timestamp, user=user)


class AcceptStatus(StrEnum):
    """What became of an accepted event."""

    QUEUED = "queued"  # a new key in the durable queue
    MERGED = "merged"  # the document was already queued: one fetch serves both
    IGNORED = "ignored"  # acknowledged, nothing to do (no connector for the relay)


@dataclass(frozen=True)
class Accepted:
    """``Service.accept``'s answer; :meth:`as_json` is the body the web layer replies with."""

    status: AcceptStatus
    doc_id: str
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status.value}
        if self.reason is not None:
            body["reason"] = self.reason
        body["doc_id"] = self.doc_id
        return body
