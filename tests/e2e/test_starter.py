"""The service starter: webhooks journaled and /health answered while the service opens."""

from __future__ import annotations

import pytest

from gitsync.config import Settings, load_connectors
from gitsync.dev.relay import DevRelay
from gitsync.events import AcceptStatus, WebhookEvent
from gitsync.service import Service
from gitsync.service_errors import ServiceUnavailable
from gitsync.starter import ServiceStarter

from .harness import head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow


def _settings(relay: DevRelay, data_dir) -> Settings:
    return Settings(data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=relay.api_key,
                    webhook_secret="starter-secret", commit_interval=0.3, reconcile_interval=0,
                    workers=2, debounce=0.1)


def _event(relay: DevRelay, compound: str) -> WebhookEvent:
    return WebhookEvent.for_document(compound)


def test_a_webhook_accepted_while_the_service_opens_is_processed_by_it(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder])
    settings = _settings(relay_server, tmp_path)
    starter = ServiceStarter(settings, load_connectors(settings.connectors_path), wait=0.0)
    try:
        answer = starter.accept(_event(relay_server, folder.doc_compound_id("a.md")))
        assert answer.status == AcceptStatus.QUEUED
        health = starter.health()
        assert health["status"] == "ok" and health["state"] == "starting" and health["queue"] == 1
        with pytest.raises(ServiceUnavailable, match="starting"):
            starter.status()  # needs the service; it is not open yet
        starter.start()
        wait_for(lambda: starter.service is not None, "the service to open")
        service = starter.service
        assert service.queue is starter.queue  # the journal the webhook went into
        wait_for(lambda: service.queue.snapshot()["done"] >= 1, "the early webhook to be processed")
        wait_for(lambda: head_files(tmp_path, folder) == {"a.md": b"one\n"}, "the commit")
        assert starter.status()["counts"]["accepted"] == 1  # counted before the service opened
        assert starter.health()["state"] in ("initial_sync", "running")
    finally:
        starter.stop(timeout=20)


def test_a_webhook_accepted_before_a_crash_in_the_opening_is_kept(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "one\n")
    write_connectors(tmp_path, [folder])
    settings = _settings(relay_server, tmp_path)
    config = load_connectors(settings.connectors_path)
    starter = ServiceStarter(settings, config)
    starter.accept(_event(relay_server, folder.doc_compound_id("a.md")))
    starter.stop()  # never opened: the journal is closed as it is
    service = Service(settings, config)
    try:
        assert service.queue.pending_count == 1
    finally:
        service.stop(timeout=0)


def test_a_service_that_cannot_open_reports_it(relay_server, tmp_path):
    folder = relay_server.add_folder()
    write_connectors(tmp_path, [folder])
    settings = _settings(relay_server, tmp_path)
    config = load_connectors(settings.connectors_path)
    (tmp_path / "state" / ".lock").mkdir(parents=True)  # the data-directory lock cannot be taken
    failures: list[str] = []
    starter = ServiceStarter(settings, config, on_failure=failures.append, wait=0.0)
    try:
        starter.start()
        wait_for(lambda: failures, "the failure to be reported")
        assert "cannot open the service" in failures[0]
        assert relay_server.api_key not in failures[0]
        health = starter.health()
        assert health["status"] == "unhealthy" and health["reasons"][0]["kind"] == "startup"
        with pytest.raises(ServiceUnavailable, match="could not be opened"):
            starter.status()
    finally:
        starter.stop()
