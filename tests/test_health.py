"""HealthTracker: failure streaks, the grace period, permanence, and the kept file."""

from __future__ import annotations

import json

from gitsync.health import Health, HealthTracker, iso_time, read_folder_health

A = ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "f47ac10b-58cc-4372-a567-0e02b2c3d479")
B = ("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "0c5c2b3e-1f2a-4b7c-9d8e-123456789abc")


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_short_outage_stays_ok_a_long_one_degrades_and_success_clears_it(tmp_path):
    clock = Clock()
    tracker = HealthTracker(tmp_path / "h.json", grace=180, clock=clock)
    assert tracker.evaluate() == (Health.OK, [])
    assert tracker.failed(A, "read", "relay unreachable") == 1
    clock.now += 179
    assert tracker.failed(A, "read", "relay unreachable again") == 2
    assert tracker.evaluate()[0] == Health.OK  # younger than the grace period
    clock.now += 1
    verdict, reasons = tracker.evaluate()
    assert verdict == Health.DEGRADED
    assert [(r.folder_id, r.kind, r.message) for r in reasons] == [(A[1], "read", "relay unreachable again")]
    assert reasons[0].as_dict()["since"] == iso_time(clock.now - 180)
    tracker.succeeded(A, "read")
    assert tracker.evaluate() == (Health.OK, [])
    assert tracker.folder(A).failures == 0


def test_what_cannot_heal_is_unhealthy_at_once_and_kinds_are_separate(tmp_path):
    clock = Clock()
    tracker = HealthTracker(None, grace=180, clock=clock)
    tracker.failed(A, "push", "push declined by a hook", permanent=True)
    tracker.failed(B, "read", "slow relay")
    verdict, reasons = tracker.evaluate()
    assert verdict == Health.UNHEALTHY and [r.kind for r in reasons] == ["push"]
    tracker.succeeded(A, "read")  # a read working does not clear a push failure
    assert tracker.evaluate()[0] == Health.UNHEALTHY
    assert tracker.evaluate([B])[0] == Health.OK  # only the folders asked about
    tracker.note("websocket", B, "websocket refused (HTTP 401)", permanent=True)
    assert {r.kind for r in tracker.evaluate()[1]} == {"push", "websocket"}
    tracker.note("websocket", B, None)
    tracker.succeeded(A, "push")
    assert tracker.evaluate()[0] == Health.OK


def test_held_deletions_degrade_without_waiting(tmp_path):
    tracker = HealthTracker(None, grace=180, clock=Clock())
    tracker.note("held_deletion", A, "mass deletion held: 30 file(s)")
    verdict, reasons = tracker.evaluate()
    assert verdict == Health.DEGRADED and reasons[0].kind == "held_deletion"


def test_failures_are_kept_on_disk_and_shown_but_not_judged_after_a_restart(tmp_path):
    path = tmp_path / "state" / "folder_health.json"
    clock = Clock()
    first = HealthTracker(path, grace=0, clock=clock)
    first.failed(A, "read", "relay refused the API key", permanent=True)
    first.failed(A, "read", "relay refused the API key", permanent=True)
    kept = read_folder_health(path)
    assert kept[A][0].failures == 2 and kept[A][0].earlier_run
    again = HealthTracker(path, grace=0, clock=clock)
    assert again.folder(A).failures == 2 and again.folder(A).last_error == "relay refused the API key"
    assert again.evaluate()[0] == Health.OK  # not seen by this process yet
    clock.now += 5
    assert again.failed(A, "read", "still refused", permanent=True) == 3
    assert again.evaluate()[0] == Health.UNHEALTHY
    again.succeeded(A)
    assert json.loads(path.read_text())["folders"] == []


def test_an_unreadable_file_is_ignored(tmp_path):
    path = tmp_path / "folder_health.json"
    for text in ("not json", '{"folders": [{"relay_id": 1}]}', "[]"):
        path.write_text(text)
        assert read_folder_health(path) == {}
        assert HealthTracker(path).evaluate() == (Health.OK, [])
