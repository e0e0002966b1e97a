"""gitsync.events: the typed webhook event and the service's answer to it."""

from __future__ import annotations

import dataclasses

import pytest

from gitsync.events import Accepted, AcceptStatus, WebhookEvent
from gitsync.ids import InvalidId

RELAY = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
DOC = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
OTHER = "0c5c2b3e-1f2a-4b7c-9d8e-123456789abc"


def test_for_document_splits_and_lowercases_the_compound_id():
    event = WebhookEvent.for_document(f"{RELAY}-{OTHER}-{DOC}".upper(), user="alice")
    assert (event.relay_id, event.doc_uuid, event.doc_id) == (RELAY, DOC, f"{RELAY}-{OTHER}-{DOC}")
    assert event.user == "alice" and event.event_id is None


def test_the_event_is_frozen_and_hashable():
    event = WebhookEvent.for_document(f"{RELAY}-{DOC}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.doc_uuid = OTHER  # type: ignore[misc]
    assert len({event, WebhookEvent.for_document(f"{RELAY}-{DOC}")}) == 1


@pytest.mark.parametrize("doc_id", ["", "not-an-id", RELAY, f"{RELAY}-{DOC}-", 42, None])
def test_for_document_rejects_what_is_not_a_compound_id(doc_id):
    with pytest.raises(InvalidId, match="doc_id"):
        WebhookEvent.for_document(doc_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(("doc_id", "relay_id", "doc_uuid"), [
    (f"{RELAY}-{DOC}", OTHER, DOC),  # relay disagrees with the compound id
    (f"{RELAY}-{DOC}", RELAY, OTHER),  # document disagrees
    (f"{RELAY}-{DOC}".upper(), RELAY, DOC),  # not the canonical (lower-case) form
    ("nonsense", RELAY, DOC),
])
def test_an_event_whose_ids_disagree_is_refused(doc_id, relay_id, doc_uuid):
    with pytest.raises(ValueError, match="webhook event"):
        WebhookEvent(doc_id, relay_id, doc_uuid)


@pytest.mark.parametrize("field", ["event_id", "timestamp", "user"])
def test_optional_fields_must_be_strings(field):
    with pytest.raises(ValueError, match=f"webhook event {field}"):
        WebhookEvent(f"{RELAY}-{DOC}", RELAY, DOC, **{field: ["not", "a", "string"]})


def test_accepted_answers_as_the_web_layer_replies():
    doc = f"{RELAY}-{DOC}"
    assert Accepted(AcceptStatus.QUEUED, doc).as_json() == {"status": "queued", "doc_id": doc}
    assert Accepted(AcceptStatus.IGNORED, doc, reason="no connector for this relay").as_json() == {
        "status": "ignored", "reason": "no connector for this relay", "doc_id": doc}
