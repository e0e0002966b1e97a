"""``POST /webhooks``: authenticate, validate, hand the event to the service, answer.

The request thread never fetches documents or touches git: it reads at most
``max_body_bytes``, checks the secret or signature, parses the event and calls
``service.accept``, which queues it durably before returning. The Relay Server does not
retry a refused delivery, so the answer must be fast.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..events import Accepted, AcceptStatus, WebhookEvent
from ..ids import InvalidId
from ..service_errors import ServiceUnavailable
from .auth import AuthError, WebhookAuth

__all__ = ["EventError", "HANDLED_EVENT", "MAX_JSON_DEPTH", "bp", "handle_webhook", "parse_event"]

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

HANDLED_EVENT = "document.updated"
# A Relay Server event nests three levels deep; the C JSON decoder recurses once per
# level and raises RecursionError somewhere past a few thousand, so refuse long before.
MAX_JSON_DEPTH = 32
# What the depth scan looks at: string delimiters, escapes and brackets.
_JSON_STRUCTURE = re.compile(r'["\\\[\]{}]')


class EventError(ValueError):
    """The webhook body is not a usable event; the message names the field at fault."""


def parse_event(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> WebhookEvent | None:
    """Turn a raw webhook body into the event handed to ``service.accept``.

    Accepts the current form ``{"eventType", "eventId", "payload": {"doc_id", "user",
    "timestamp", ...}}`` and the older one with ``doc_id`` (and ``timestamp``) at the top
    level; unknown fields are ignored. The body's size is the caller's to bound (the
    app reads at most ``max_body_bytes``); its nesting depth is checked here, before
    the decoder sees it.

    Returns:
        The event (ids lower-case; ``event_id``, ``timestamp`` and ``user`` kept only
        when strings), or None for an event type other than ``document.updated``.

    Raises:
        EventError: not UTF-8 JSON, nested deeper than ``max_depth``, not an object, no
            string ``doc_id``, or ``doc_id`` not a compound id.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError("malformed JSON: body is not UTF-8") from None
    if _nested_deeper_than(text, max_depth):
        raise EventError(f"malformed event: JSON nested deeper than {max_depth} levels")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # not reached after the depth check; never a 500 regardless
        raise EventError(f"malformed event: JSON nested deeper than {max_depth} levels") from None
    except ValueError:  # an integer literal longer than Python converts (4,300 digits)
        raise EventError("malformed JSON: a number has too many digits") from None
    if not isinstance(data, dict):
        raise EventError("malformed event: body must be a JSON object")
    event_type = data.get("eventType", HANDLED_EVENT)
    if not isinstance(event_type, str):
        raise EventError("eventType must be a string")
    if event_type != HANDLED_EVENT:
        return None
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise EventError("payload must be a JSON object")
    payload = payload or {}
    source = payload if "doc_id" in payload else data
    if "doc_id" not in source:
        raise EventError("payload has no doc_id")
    doc_id = source["doc_id"]
    if not isinstance(doc_id, str):
        raise EventError("payload.doc_id must be a string")
    event_id = data.get("eventId")
    timestamp = source.get("timestamp")
    user = source.get("user")
    try:
        return WebhookEvent.for_document(
            doc_id,
            event_id=event_id if isinstance(event_id, str) else None,
            timestamp=timestamp if isinstance(timestamp, str) else None,
            user=user if isinstance(user, str) else None,
        )
    except InvalidId as exc:
        raise EventError(str(exc)) from None


def handle_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    auth: WebhookAuth,
    service: Any,
    now: float,
    remote_addr: str | None,
) -> tuple[int, dict[str, Any]]:
    """Everything ``POST /webhooks`` decides, for a body already read within the limit.

    Shared by the Flask view and the fast path (``gitsync.web.fastpath``), so both
    answer alike.

    Returns:
        The status code and the JSON object to answer with.

    Raises:
        Exception: whatever ``service.accept`` raises other than ServiceUnavailable (a
            bug: answered as a bare 500 by the caller).
    """
    try:
        auth.verify(headers, body, now=now)
    except AuthError as exc:
        log.warning("webhook refused reason=%s remote=%s", exc, remote_addr)
        return 401, {"error": str(exc)}
    try:
        event = parse_event(body)
    except EventError as exc:
        log.info("webhook rejected reason=%s", exc)
        return 400, {"error": str(exc)}
    if event is None:
        return 200, {"status": "ignored", "reason": "event type not handled"}
    if service is None:
        return 503, {"error": "service not running"}
    try:
        result: Accepted = service.accept(event)
    except ServiceUnavailable as exc:
        # Not accepted, so not acknowledged: the Relay Server logs the failure and the
        # next edit (or our reconcile) brings the change.
        log.warning("webhook not queued doc=%s reason=%s", event.doc_id, exc)
        return 503, {"error": str(exc)}
    log.debug("webhook accepted doc=%s status=%s", event.doc_id, result.status.value)
    if result.status == AcceptStatus.IGNORED:
        return 200, result.as_json()  # acknowledged, nothing to do: not "accepted for processing"
    return 202, result.as_json()


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` opens more than ``limit`` arrays/objects at once.

    Linear in the length and cheap for ordinary events: a text with at most ``limit``
    brackets cannot be deeper, so only bodies with many brackets are scanned. Brackets
    inside strings do not count. Malformed text is left to the decoder to describe.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_STRUCTURE.finditer(text):
        at = match.start()
        if at == escaped_at:
            continue
        char = text[at]
        if in_string:
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _read_body() -> bytes:
    """The raw body, at most ``MAX_CONTENT_LENGTH`` bytes.

    Raises:
        RequestEntityTooLarge: the body is longer than the limit (answered as JSON 413).
    """
    body = request.get_data(cache=False)  # 413 when Content-Length exceeds the limit
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # A chunked body (no Content-Length) is cut at the limit by Werkzeug instead of
    # refused; one that fills the limit may have been longer, so refuse it too.
    if request.content_length is None and limit is not None and len(body) >= limit:
        raise RequestEntityTooLarge()
    return body


@bp.post("/webhooks")
def receive_webhook() -> Any:
    """Receive a Relay Server document notification.
    ---
    post:
      tags: [webhooks]
      summary: Relay Server document notification
      description: >
        Authenticated with `Authorization: Bearer <WEBHOOK_SECRET>`, or, when the
        secret starts with `whsec_`, with Standard Webhooks / Svix signature headers
        (`webhook-id`, `webhook-timestamp`, `webhook-signature`, or the same with
        `svix-`; 5 minute timestamp tolerance). Without a configured secret every
        request is refused. The event is queued durably before the 202 answer; the
        document is fetched and committed in the background. Events other than
        `document.updated` are acknowledged and ignored.
      security:
        - bearerAuth: []
        - webhookId: []
          webhookTimestamp: []
          webhookSignature: []
      requestBody:
        required: true
        content:
          application/json:
            schema:
              $ref: '#/components/schemas/WebhookEvent'
      responses:
        '200':
          description: Event type not handled; acknowledged and ignored.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/WebhookResult'
        '202':
          description: Event queued durably (or ignored by the service, e.g. no connector).
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/WebhookResult'
        '400':
          description: >
            Malformed JSON, JSON nested deeper than 32 levels, no `doc_id`, or `doc_id`
            is not a compound id.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '401':
          description: Missing or wrong secret or signature, stale timestamp, or no secret configured.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '413':
          description: Body larger than the limit (64 KiB by default).
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '500':
          description: The event could not be queued.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
        '503':
          description: >
            Not accepted: the sync service is not running or is shutting down, or the
            event could not be stored durably. Nothing was queued.
          content:
            application/json:
              schema:
                $ref: '#/components/schemas/Error'
    """
    from . import get_service, get_webhook_auth

    body = _read_body()
    status, answer = handle_webhook(
        request.headers,
        body,
        auth=get_webhook_auth(),
        service=get_service(),
        now=current_app.config["WEBHOOK_CLOCK"](),
        remote_addr=request.remote_addr,
    )
    return jsonify(answer), status
