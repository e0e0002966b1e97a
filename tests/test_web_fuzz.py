"""Hostile webhooks: whatever the body and headers, the answer is never a server error.

Hypothesis generates bodies (arbitrary bytes, arbitrary JSON, event-shaped JSON with
wrong types, deep nesting, huge numbers) and headers (both auth modes, valid and broken
signatures, forwarded headers) and posts them through the Flask app.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitsync.config import Settings
from gitsync.web import create_app
from gitsync.web.auth import decode_signing_secret, sign

from .test_web import BEARER_SECRET, COMPOUND, NOW, SIGNING_SECRET, RecordingService

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What an HTTP header value can carry: visible latin-1, spaces and tabs, no line breaks.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
) | st.sampled_from(["", " ", "Bearer", "Bearer ", "v1,", "v1,=", "0", "-1", "9" * 20])

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
doc_ids = (
    st.just(COMPOUND)
    | st.just(COMPOUND.upper())
    | st.uuids().map(lambda u: f"{COMPOUND[:36]}-{u}")
    | st.text(alphabet=string.hexdigits + "-", max_size=120)
    | json_values
)
payloads = st.fixed_dictionaries(
    {"doc_id": doc_ids},
    optional={"user": json_values, "timestamp": json_values, "metadata": json_values},
)
events = st.fixed_dictionaries(
    {},
    optional={
        "eventType": st.sampled_from(["document.updated", "document.deleted"]) | json_values,
        "eventId": json_values,
        "payload": payloads | json_values,
        "doc_id": doc_ids,
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["event", "json", "bytes", "deep", "number", "text"]))
    if kind == "event":
        return json.dumps(draw(events)).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(1, 20_000))
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"payload":']))
        closer = b"]" if opener == b"[" else b"}"
        return opener * depth + b"1" + closer * draw(st.integers(0, depth))
    if kind == "number":
        digits = draw(st.integers(1, 6000))
        return b'{"payload": {"doc_id": "%s", "n": %s}}' % (COMPOUND.encode(), b"7" * digits)
    return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")


@st.composite
def bearer_headers(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    choice = draw(st.sampled_from(["valid", "scheme", "random", "none"]))
    headers = {}
    if choice == "valid":
        headers["Authorization"] = f"Bearer {BEARER_SECRET}"
    elif choice == "scheme":
        headers["Authorization"] = draw(st.sampled_from(["bearer", "Basic", "BEARER"])) + " " + draw(header_text)
    elif choice == "random":
        headers["Authorization"] = draw(header_text)
    return headers


@st.composite
def signed_headers(draw: st.DrawFn, body: bytes) -> dict[str, str]:
    prefix = draw(st.sampled_from(["webhook", "svix"]))
    msg_id = draw(header_text)
    timestamp = draw(
        st.integers(NOW - 400, NOW + 400).map(str) | header_text
    )
    signature = draw(header_text)
    if draw(st.booleans()):
        try:
            signature = sign(decode_signing_secret(SIGNING_SECRET), msg_id, timestamp, body)
        except UnicodeEncodeError:
            pass
        if draw(st.booleans()):
            signature = draw(header_text) + " " + signature
    headers = {f"{prefix}-id": msg_id, f"{prefix}-timestamp": timestamp, f"{prefix}-signature": signature}
    dropped = draw(st.sets(st.sampled_from(sorted(headers)), max_size=3))
    return {k: v for k, v in headers.items() if k not in dropped}


forwarded = st.dictionaries(
    st.sampled_from(["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix",
                     "Content-Type", "Content-Encoding", "Transfer-Encoding"]),
    header_text,
    max_size=3,
)


def _app(secret: str, proxy_hops: int):
    app = create_app(Settings(webhook_secret=secret, proxy_hops=proxy_hops), RecordingService())
    app.config["WEBHOOK_CLOCK"] = lambda: NOW
    return app


APPS = {
    (secret, hops): _app(secret, hops)
    for secret in (BEARER_SECRET, SIGNING_SECRET)
    for hops in (0, 1)
}


def _check(response: Any) -> None:
    assert response.status_code < 500, response.get_data()[:300]
    data = response.get_json()
    assert isinstance(data, dict)
    if response.status_code >= 400:
        assert isinstance(data.get("error"), str) and data["error"]
    else:
        assert response.status_code in (200, 202) and isinstance(data.get("status"), str)


@FUZZ
@given(data=st.data(), body=bodies(), extra=forwarded, hops=st.sampled_from([0, 1]))
def test_bearer_webhooks_never_answer_5xx(data, body, extra, hops):
    headers = {**extra, **data.draw(bearer_headers(body))}
    client = APPS[(BEARER_SECRET, hops)].test_client()
    _check(client.post("/webhooks", data=body, headers=headers))


@FUZZ
@given(data=st.data(), body=bodies(), extra=forwarded, hops=st.sampled_from([0, 1]))
def test_signed_webhooks_never_answer_5xx(data, body, extra, hops):
    headers = {**extra, **data.draw(signed_headers(body))}
    client = APPS[(SIGNING_SECRET, hops)].test_client()
    _check(client.post("/webhooks", data=body, headers=headers))


@FUZZ
@given(event=events)
def test_authentic_event_shaped_webhooks_are_accepted_or_refused_clearly(event):
    """Authenticated, well-formed JSON: every answer is 200/202 or a 400 naming a field."""
    body = json.dumps(event).encode()
    client = APPS[(BEARER_SECRET, 0)].test_client()
    response = client.post("/webhooks", data=body, headers={"Authorization": f"Bearer {BEARER_SECRET}"},
                           content_type="application/json")
    _check(response)
    assert response.status_code in (200, 202, 400)
