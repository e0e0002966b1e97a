"""Prometheus metrics of one service: what happened (counters, histograms) and what is
(gauges read when scraped).

Each :class:`Metrics` has its own ``CollectorRegistry``, never the process-wide one:
several services and apps live in one test process, and a restarted service must not
collide with the names of the one before. The service calls the event methods
(``webhook``, ``fetched``, ``sync_finished``, ``committed``, ``pushed``,
``unpushed_commits``) where things happen, and hands :meth:`Metrics.observe` the
callbacks that describe the present (queue, folders, websockets) for each scrape.

Labels are bounded: ``relay`` and ``folder`` come from ``git_connectors.toml``, every
other label from a fixed list here. No label or value carries a secret, a path or an
error text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .relay_errors import BadResponse, NotFound, RelayError, TooLarge, Unauthorized, Unavailable

__all__ = [
    "CONTENT_TYPE",
    "FolderView",
    "Metrics",
    "PREFIX",
    "QueueView",
    "SYNC_KINDS",
    "fetch_error_reason",
]

PREFIX = "relay_git_sync"
CONTENT_TYPE = CONTENT_TYPE_LATEST
SYNC_KINDS = ("interactive", "startup", "reconcile", "manual")
FETCH_KINDS = ("folder", "document", "attachment")
WEBSOCKET_STATES = ("connecting", "connected", "backing_off", "unauthorized", "stopped")
# From a webhook fetch of one document (tens of ms) to a full sync of a large folder.
SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0)


def fetch_error_reason(exc: BaseException) -> str:
    """A bounded label for a failed read from the Relay Server."""
    for kind, reason in ((Unauthorized, "unauthorized"), (NotFound, "not_found"), (TooLarge, "too_large"),
                         (Unavailable, "unavailable"), (BadResponse, "bad_response"), (RelayError, "relay_error")):
        if isinstance(exc, kind):
            return reason
    return "error"


@dataclass(frozen=True)
class QueueView:
    """The work queue at one moment: keys by state, and how long the oldest has waited."""

    pending: int = 0
    in_progress: int = 0
    deferred: int = 0
    oldest_age: float = 0.0


@dataclass(frozen=True)
class FolderView:
    """One connector at one moment, as the scrape shows it."""

    relay_id: str
    folder_id: str
    held_files: int = 0
    failures: int = 0
    # the websocket's SocketStatus.as_dict(), or None for a webhook-only connector
    websocket: dict[str, Any] | None = field(default=None)


class _Live:
    """A collector that asks the service's callbacks at every scrape."""

    def __init__(self) -> None:
        self.queue: Callable[[], QueueView] | None = None
        self.folders: Callable[[], Iterable[FolderView]] | None = None

    def describe(self) -> list[Metric]:
        return []  # names are checked when collected; nothing to ask before the service exists

    def collect(self) -> Iterator[Metric]:
        if self.queue is not None:
            view = self.queue()
            depth = GaugeMetricFamily(f"{PREFIX}_queue_depth",
                                      "Keys in the work queue (documents or folders to sync), by state.",
                                      labels=["state"])
            for state in ("pending", "in_progress", "deferred"):
                depth.add_metric([state], getattr(view, state))
            yield depth
            yield GaugeMetricFamily(f"{PREFIX}_queue_oldest_age_seconds",
                                    "Seconds the oldest outstanding key has waited since it was queued "
                                    "(0 when the queue is empty).", value=view.oldest_age)
        if self.folders is None:
            return
        folders = list(self.folders())
        labels = ["relay", "folder"]
        held = GaugeMetricFamily(f"{PREFIX}_held_deletions",
                                 "Files whose deletion is held until a later read or an operator confirms it.",
                                 labels=labels)
        failing = GaugeMetricFamily(f"{PREFIX}_folder_consecutive_failures",
                                    "Consecutive failed syncs, commits or pushes of the folder (0 when it works).",
                                    labels=labels)
        state = GaugeMetricFamily(f"{PREFIX}_websocket_state",
                                  "1 for the websocket's current state, per folder with a websocket.",
                                  labels=[*labels, "state"])
        connected = GaugeMetricFamily(f"{PREFIX}_websocket_connected",
                                      "1 when the folder's websocket is connected.", labels=labels)
        reconnects = CounterMetricFamily(f"{PREFIX}_websocket_reconnects",
                                         "Websocket connections made after the first one.", labels=labels)
        events = CounterMetricFamily(f"{PREFIX}_websocket_events",
                                     "Document change events received on the folder's websocket.",
                                     labels=labels)
        for view in folders:
            key = [view.relay_id, view.folder_id]
            held.add_metric(key, view.held_files)
            failing.add_metric(key, view.failures)
            ws = view.websocket
            if ws is None:
                continue
            for name in WEBSOCKET_STATES:
                state.add_metric([*key, name], 1.0 if ws.get("state") == name else 0.0)
            connected.add_metric(key, 1.0 if ws.get("state") == "connected" else 0.0)
            reconnects.add_metric(key, float(ws.get("reconnects") or 0))
            events.add_metric(key, float(ws.get("events") or 0))
        yield from (held, failing, state, connected, reconnects, events)


class Metrics:
    """The metrics of one service, in a registry of their own.

    Args:
        version: shown by ``relay_git_sync_build_info``.
    """

    def __init__(self, version: str = __version__):
        # No *_created sample per series: Prometheus does not need them in the text
        # format, and they add a quarter to the size of a scrape of many connectors. (A switch of
        # the client library for the whole process; nothing else here exports metrics.)
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        Info(f"{PREFIX}_build", "Version of relay-git-sync.", registry=r).info({"version": version})
        self._webhooks = Counter(f"{PREFIX}_webhooks", "POST /webhooks answers by result: queued, merged, "
                                 "ignored, not_handled, invalid, unauthorized, too_large, unavailable, error.",
                                 ["result"], registry=r)
        self._fetches = Counter(f"{PREFIX}_fetches", "Reads from the Relay Server by kind "
                                "(folder index, document, attachment), failed ones included.", ["kind"],
                                registry=r)
        self._fetch_errors = Counter(f"{PREFIX}_fetch_errors", "Failed reads from the Relay Server by kind "
                                     "and reason.", ["kind", "reason"], registry=r)
        self._sync_seconds = Histogram(f"{PREFIX}_sync_duration_seconds", "Duration of folder syncs by kind: "
                                       "interactive (webhooks and events), startup, reconcile, manual "
                                       "(POST /api/sync).", ["kind"], buckets=SYNC_BUCKETS, registry=r)
        self._sync_failures = Counter(f"{PREFIX}_sync_failures", "Folder syncs that failed, by kind.", ["kind"],
                                      registry=r)
        self._commits = Counter(f"{PREFIX}_commits", "Commits made, per connector.", ["relay", "folder"],
                                registry=r)
        self._pushes = Counter(f"{PREFIX}_pushes", "Pushes that sent commits, per connector.",
                               ["relay", "folder"], registry=r)
        self._push_failures = Counter(f"{PREFIX}_push_failures", "Failed pushes per connector; permanent=true "
                                      "when the remote refused the update itself.",
                                      ["relay", "folder", "permanent"], registry=r)
        self._unpushed = Gauge(f"{PREFIX}_unpushed_commits", "Local commits not yet on the remote, per "
                               "connector with a remote.", ["relay", "folder"], registry=r)
        self._last_push = Gauge(f"{PREFIX}_last_push_success_timestamp_seconds", "When a push last "
                                "succeeded (the remote has our branch), Unix time.", ["relay", "folder"],
                                registry=r)
        for kind in SYNC_KINDS:  # present from the first scrape, so rate() has a start
            self._sync_seconds.labels(kind)
            self._sync_failures.labels(kind)
        for kind in FETCH_KINDS:
            self._fetches.labels(kind)
        self._live = _Live()
        r.register(self._live)

    # --- what the service calls --------------------------------------------------------

    def observe(self, *, queue: Callable[[], QueueView] | None = None,
                folders: Callable[[], Iterable[FolderView]] | None = None) -> None:
        """Callbacks asked at every scrape; each must be quick and never wait on the network."""
        if queue is not None:
            self._live.queue = queue
        if folders is not None:
            self._live.folders = folders

    def connectors(self, keys: Iterable[tuple[str, str]], *, with_remote: Iterable[tuple[str, str]] = ()) -> None:
        """Create the per-connector series at zero, so every connector shows from the start."""
        for relay_id, folder_id in keys:
            self._commits.labels(relay_id, folder_id)
        for relay_id, folder_id in with_remote:
            self._pushes.labels(relay_id, folder_id)
            for permanent in ("false", "true"):
                self._push_failures.labels(relay_id, folder_id, permanent)

    def webhook(self, result: str) -> None:
        self._webhooks.labels(result).inc()

    def fetched(self, kind: str, error: BaseException | None = None) -> None:
        """One read from the Relay Server ended (``error`` is what it raised, if anything)."""
        self._fetches.labels(kind).inc()
        if error is not None:
            self._fetch_errors.labels(kind, fetch_error_reason(error)).inc()

    def sync_finished(self, kind: str, seconds: float, *, ok: bool = True) -> None:
        self._sync_seconds.labels(kind).observe(max(0.0, seconds))
        if not ok:
            self._sync_failures.labels(kind).inc()

    def committed(self, key: tuple[str, str]) -> None:
        self._commits.labels(*key).inc()

    def pushed(self, key: tuple[str, str], *, ok: bool, sent: bool = False, permanent: bool = False,
               at: float | None = None) -> None:
        """A push attempt ended: ``sent`` when commits went out, ``at`` when it started (Unix)."""
        if ok:
            if sent:
                self._pushes.labels(*key).inc()
            self._last_push.labels(*key).set(at if at is not None else time.time())
        else:
            self._push_failures.labels(*key, "true" if permanent else "false").inc()

    def unpushed_commits(self, key: tuple[str, str], count: int) -> None:
        self._unpushed.labels(*key).set(count)

    def instrument(self, relay: Any, folder_ids: Callable[[], set[str]]) -> _CountingRelay:
        """Wrap a RelayClient so that every read is counted by kind.

        Args:
            relay: the client the engine reads with.
            folder_ids: compound ids of the synced folders' documents (their reads are
                ``folder``; every other document read is ``document``).
        """
        return _CountingRelay(relay, self, folder_ids)

    # --- exposition --------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)


class _CountingRelay:
    """A RelayClient that counts its reads; every other attribute is the client's own."""

    def __init__(self, relay: Any, metrics: Metrics, folder_ids: Callable[[], set[str]]):
        self._relay = relay
        self._metrics = metrics
        self._folder_ids = folder_ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._relay, name)

    def _counted(self, kind: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except Exception as exc:
            self._metrics.fetched(kind, exc)
            raise
        self._metrics.fetched(kind)
        return result

    def get_update(self, compound_id: str, *args: Any, **kwargs: Any) -> bytes:
        kind = "folder" if compound_id.lower() in self._folder_ids() else "document"
        return self._counted(kind, lambda: self._relay.get_update(compound_id, *args, **kwargs))

    def download_attachment(self, *args: Any, **kwargs: Any) -> Any:
        return self._counted("attachment", lambda: self._relay.download_attachment(*args, **kwargs))

    def download_attachment_to(self, *args: Any, **kwargs: Any) -> Any:
        return self._counted("attachment", lambda: self._relay.download_attachment_to(*args, **kwargs))
