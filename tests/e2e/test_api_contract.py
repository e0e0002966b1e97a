"""The committed ``openapi.yaml`` against the running service (schemathesis).

The real service and app are served on 127.0.0.1 (werkzeug, as the e2e harness does),
with the Relay stand-in behind them. For every documented operation schemathesis
generates requests from the spec, valid and invalid, with and without the webhook
secret, and checks each answer: no server error, a documented status code, the
documented content type, headers and body schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from gitsync.dev.relay import DevRelay

from .harness import SECRET, InProcessService, wait_for, write_connectors

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    relay = DevRelay(api_key="contract-api-key")
    relay.start()
    try:
        folder = relay.add_folder()
        folder.put_markdown("a.md", "a\n")
        data_dir = tmp_path_factory.mktemp("contract")
        write_connectors(data_dir, [folder])
        with InProcessService(relay, data_dir) as svc:
            wait_for(lambda: svc.service.initial_sync_done.is_set(), "the startup sync")
            yield svc
    finally:
        relay.stop()


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_committed_spec(case, service):
    """Webhooks carry the right secret here, so generated events reach the parser."""
    headers = {**(case.headers or {}), "Authorization": f"Bearer {SECRET}"}
    case.call_and_validate(base_url=service.url, headers=headers, checks=CHECKS)


@SCHEMA.include(path="/webhooks").parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_unauthenticated_webhooks_match_the_committed_spec(case, service):
    case.call_and_validate(base_url=service.url, checks=CHECKS)
