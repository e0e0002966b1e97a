"""Fixture plugin: the Relay Server stand-in (``gitsync.dev.relay``) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gitsync.dev.relay import DevRelay

TEST_API_KEY = "test-api-key"


@pytest.fixture
def relay_server() -> Iterator[DevRelay]:
    """A started :class:`DevRelay` (api key ``test-api-key``) on a free loopback port.

    Stopped after the test: shutdown, join of the serving thread, socket closed.
    Its base URL is ``relay_server.url``.
    """
    relay = DevRelay(api_key=TEST_API_KEY)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()
