"""Webhook authentication (gitsync.web.auth), cross-checked against ``standardwebhooks``."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from gitsync.web.auth import (
    AuthError,
    WebhookAuth,
    decode_signing_secret,
    sign,
    verify_bearer,
    verify_signature,
)

# The Standard Webhooks reference test vector (the library's sign() gives the same).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = decode_signing_secret(VECTOR_SECRET)


def headers(sig: str = VECTOR_SIG, *, ts: int | str = VECTOR_TS, prefix: str = "webhook") -> dict:
    return {f"{prefix}-id": VECTOR_ID, f"{prefix}-timestamp": str(ts), f"{prefix}-signature": sig}


def lib_sign(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    when = datetime.fromtimestamp(ts, tz=UTC)
    return Webhook(secret).sign(msg_id, when, body.decode("utf-8"))


# --- the test vector and the reference library ---------------------------------------


def test_sign_matches_test_vector():
    assert sign(KEY, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG
    assert lib_sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIG


def test_verify_accepts_test_vector():
    verify_signature(KEY, headers(), VECTOR_BODY, now=VECTOR_TS)


def test_library_verifies_our_signature():
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    now = int(datetime.now(tz=UTC).timestamp())
    body = b'{"eventType": "document.updated"}'
    sig = sign(decode_signing_secret(secret), "msg_1", now, body)
    Webhook(secret).verify(
        body,
        {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sig},
        json_parse=False,
    )


def test_unpadded_secret_is_accepted():
    raw = bytes(range(31))  # base64 of 31 bytes needs one "=" of padding
    padded = base64.b64encode(raw).decode()
    assert padded.endswith("=")
    unpadded = "whsec_" + padded.rstrip("=")
    assert decode_signing_secret(unpadded) == raw
    sig = lib_sign(unpadded, "msg_x", VECTOR_TS, VECTOR_BODY)
    verify_signature(raw, {**headers(sig), "webhook-id": "msg_x"}, VECTOR_BODY, now=VECTOR_TS)


@pytest.mark.parametrize("secret", ["whsec_not*base64!", "whsec_", "whsec_QUJDR"])
def test_decode_signing_secret_rejects_bad_secret(secret):
    with pytest.raises(ValueError, match="whsec_") as info:
        decode_signing_secret(secret)
    tail = secret.removeprefix("whsec_")
    assert not tail or tail not in str(info.value)


# --- verify_signature ----------------------------------------------------------------


def test_svix_headers_are_accepted():
    verify_signature(KEY, headers(prefix="svix"), VECTOR_BODY, now=VECTOR_TS)


def test_header_names_are_case_insensitive():
    upper = {k.upper(): v for k, v in headers().items()}
    verify_signature(KEY, upper, VECTOR_BODY, now=VECTOR_TS)


def test_second_of_several_signatures_matches():
    wrong = "v1," + base64.b64encode(b"\0" * 32).decode()
    verify_signature(KEY, headers(f"{wrong} {VECTOR_SIG}"), VECTOR_BODY, now=VECTOR_TS)


@pytest.mark.parametrize(
    "sig",
    [
        f"garbage {VECTOR_SIG}",  # no comma
        f"v1,!!notbase64!! {VECTOR_SIG}",  # bad base64 before the match
        f"v2,{VECTOR_SIG[3:]} {VECTOR_SIG}",  # unknown version skipped
        f"v1, {VECTOR_SIG}",  # empty signature
    ],
)
def test_malformed_entries_are_skipped_not_raised(sig):
    verify_signature(KEY, headers(sig), VECTOR_BODY, now=VECTOR_TS)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamp_within_tolerance(offset):
    verify_signature(KEY, headers(), VECTOR_BODY, now=VECTOR_TS + offset)


@pytest.mark.parametrize(
    ("hdrs", "body", "now", "message"),
    [
        ({}, VECTOR_BODY, VECTOR_TS, "missing webhook signature headers"),
        (
            {"webhook-signature": VECTOR_SIG, "webhook-timestamp": str(VECTOR_TS)},
            VECTOR_BODY,
            VECTOR_TS,
            "missing webhook signature header(s): webhook-id",
        ),
        (headers(), VECTOR_BODY + b" ", VECTOR_TS, "no matching webhook signature"),
        (headers(), VECTOR_BODY, VECTOR_TS + 301, "webhook timestamp too old"),
        (headers(), VECTOR_BODY, VECTOR_TS - 301, "webhook timestamp too new"),
        (headers(ts="abc"), VECTOR_BODY, VECTOR_TS, "webhook timestamp must be unix seconds"),
        (headers(ts=f"{VECTOR_TS}.0"), VECTOR_BODY, VECTOR_TS, "unix seconds"),
        (headers(ts=f" {VECTOR_TS}"), VECTOR_BODY, VECTOR_TS, "unix seconds"),
        (headers("garbage"), VECTOR_BODY, VECTOR_TS, "no matching webhook signature"),
        (headers("v1,%%%"), VECTOR_BODY, VECTOR_TS, "no matching webhook signature"),
        (headers("v1"), VECTOR_BODY, VECTOR_TS, "no matching webhook signature"),
        (headers(""), VECTOR_BODY, VECTOR_TS, "missing webhook signature header(s)"),
        (
            headers("v1," + base64.b64encode(b"short").decode()),
            VECTOR_BODY,
            VECTOR_TS,
            "no matching webhook signature",
        ),
        ({**headers(), "webhook-id": "msg_other"}, VECTOR_BODY, VECTOR_TS, "no matching"),
    ],
)
def test_verify_signature_rejects(hdrs, body, now, message):
    with pytest.raises(AuthError) as info:
        verify_signature(KEY, hdrs, body, now=now)
    assert message in str(info.value)
    assert VECTOR_SIG[3:] not in str(info.value)


def test_tampered_body_rejected_even_with_lib_signature():
    sig = lib_sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    with pytest.raises(AuthError, match="no matching"):
        verify_signature(KEY, headers(sig), b'{"test": 2432232315}', now=VECTOR_TS)


def test_non_utf8_body_verifies_as_bytes():
    body = b"\xff\xfe not utf-8"
    verify_signature(KEY, headers(sign(KEY, VECTOR_ID, VECTOR_TS, body)), body, now=VECTOR_TS)


# --- verify_bearer -------------------------------------------------------------------

SECRET = "marker-bearer-secret-7f3a"


@pytest.mark.parametrize("value", [f"Bearer {SECRET}", f"bearer {SECRET}", f"BEARER  {SECRET} "])
def test_bearer_accepted(value):
    verify_bearer(value, SECRET)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        (f"Basic {SECRET}", "must use the Bearer scheme"),
        (SECRET, "must use the Bearer scheme"),
        ("Bearer", "invalid bearer token"),
        ("Bearer wrong", "invalid bearer token"),
        (f"Bearer {SECRET}x", "invalid bearer token"),
        ("Bearer caf\xe9", "invalid bearer token"),
    ],
)
def test_bearer_rejected(value, message):
    with pytest.raises(AuthError) as info:
        verify_bearer(value, SECRET)
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def test_bearer_secret_with_non_ascii_characters():
    secret = "s\xe9cret"
    # WSGI hands header bytes over as latin-1; a UTF-8 client sends these bytes.
    header = "Bearer " + secret.encode("utf-8").decode("latin-1")
    verify_bearer(header, secret)


# --- WebhookAuth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "mode"),
    [(None, "none"), ("", "none"), (SECRET, "bearer"), (VECTOR_SECRET, "signature")],
)
def test_webhook_auth_mode(secret, mode):
    auth = WebhookAuth(secret)
    assert auth.mode == mode
    assert repr(auth) == f"WebhookAuth(mode={mode!r})"


def test_webhook_auth_without_secret_refuses_everything():
    with pytest.raises(AuthError, match="webhook secret not configured; set WEBHOOK_SECRET"):
        WebhookAuth(None).verify({"Authorization": "Bearer "}, b"{}", now=0)


def test_webhook_auth_bearer_mode():
    auth = WebhookAuth(SECRET)
    auth.verify({"authorization": f"Bearer {SECRET}"}, b"{}", now=0)
    with pytest.raises(AuthError):
        auth.verify(headers(), VECTOR_BODY, now=VECTOR_TS)


def test_webhook_auth_signature_mode_ignores_bearer():
    auth = WebhookAuth(VECTOR_SECRET)
    auth.verify(headers(), VECTOR_BODY, now=VECTOR_TS)
    with pytest.raises(AuthError, match="missing webhook signature headers"):
        auth.verify({"Authorization": f"Bearer {VECTOR_SECRET}"}, VECTOR_BODY, now=VECTOR_TS)


def test_webhook_auth_rejects_bad_whsec_secret():
    with pytest.raises(ValueError, match="must be base64"):
        WebhookAuth("whsec_***")


def test_signature_is_hmac_sha256_over_id_timestamp_body():
    expected = hmac.new(KEY, f"{VECTOR_ID}.{VECTOR_TS}.".encode() + VECTOR_BODY, hashlib.sha256)
    assert VECTOR_SIG == "v1," + base64.b64encode(expected.digest()).decode()
