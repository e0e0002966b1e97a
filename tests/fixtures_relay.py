"""Fixture plugin: the Relay Server stand-in (``gitsync.dev.relay``) on 127.0.0.1, with the
tests' fault injection (:class:`tests.relay_faults.FaultyRelay`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.relay_faults import FaultyRelay

TEST_API_KEY = "test-api-key"


@pytest.fixture
def relay_server() -> Iterator[FaultyRelay]:
    """A started :class:`FaultyRelay` (api key ``test-api-key``) on a free loopback port.

    Stopped after the test: shutdown, join of the serving thread, socket closed.
    Its base URL is ``relay_server.url``.
    """
    relay = FaultyRelay(api_key=TEST_API_KEY)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
