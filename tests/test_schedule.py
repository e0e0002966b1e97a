"""Commit schedule: leading edge, at most one commit per folder per interval."""

from __future__ import annotations

import pytest

from gitsync.schedule import CommitSchedule


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def run(schedule: CommitSchedule, clock: Clock, seconds: float, step: float = 0.1, *,
        edits_every: float | None = None, key="A") -> list[float]:
    """Simulate a publisher loop; returns the times at which commits were made."""
    commits, next_edit, end = [], clock.now, clock.now + seconds
    while clock.now < end:
        if edits_every is not None and clock.now >= next_edit:
            schedule.changed(key)
            next_edit += edits_every
        for due in schedule.take_due():
            commits.append(clock.now)
            schedule.committed(due)
        clock.now = round(clock.now + step, 6)
    return commits


def test_first_change_after_a_quiet_spell_is_due_at_once():
    clock = Clock()
    schedule = CommitSchedule(2.0, clock=clock)
    schedule.changed("A")
    assert schedule.take_due() == ["A"]


def test_a_stream_of_edits_commits_once_per_interval():
    clock = Clock()
    schedule = CommitSchedule(2.0, clock=clock)
    commits = run(schedule, clock, 10.0, edits_every=0.1)
    assert commits[0] == 1000.0  # leading edge
    gaps = [b - a for a, b in zip(commits, commits[1:], strict=False)]
    assert all(gap >= 2.0 - 1e-9 for gap in gaps)
    assert 4 <= len(commits) <= 6


def test_change_during_the_interval_waits_for_its_end():
    clock = Clock()
    schedule = CommitSchedule(2.0, clock=clock)
    schedule.changed("A")
    assert schedule.take_due() == ["A"]
    schedule.committed("A")
    clock.now += 0.5
    schedule.changed("A")
    assert schedule.take_due() == []
    assert schedule.seconds_to_next() == 1.5
    clock.now += 1.5
    assert schedule.take_due() == ["A"]


def test_a_busy_folder_does_not_delay_another():
    clock = Clock()
    schedule = CommitSchedule(2.0, clock=clock)
    schedule.changed("A")
    schedule.changed("B")
    assert sorted(schedule.take_due()) == ["A", "B"]
    schedule.retry("A", 0.2)  # A's lock was busy
    schedule.committed("B")
    clock.now += 0.2
    assert schedule.take_due() == ["A"]


def test_change_while_a_commit_is_being_made_comes_one_interval_later():
    clock = Clock()
    schedule = CommitSchedule(2.0, clock=clock)
    schedule.changed("A")
    assert schedule.take_due() == ["A"]
    schedule.changed("A")  # arrives while A's commit is in progress
    assert schedule.take_due() == []
    schedule.committed("A")
    clock.now += 1.9
    assert schedule.take_due() == []
    clock.now += 0.1
    assert schedule.take_due() == ["A"]


def test_nothing_changed_nothing_due():
    schedule = CommitSchedule(2.0, clock=Clock())
    assert schedule.take_due() == []
    assert schedule.seconds_to_next() is None


def test_the_interval_counts_from_the_commit_start_not_the_push_end():
    clock = Clock()
    schedule = CommitSchedule(2.0, clock=clock)
    schedule.changed("A")
    assert schedule.take_due() == ["A"]
    schedule.started("A")  # committed at 1000.0, then pushed for 1.2 s
    clock.now += 0.5
    schedule.changed("A")  # written while the push runs
    clock.now += 0.7
    schedule.committed("A")
    assert schedule.seconds_to_next() == pytest.approx(0.8)  # due at 1002.0, not 1002.5 or 1003.2
    clock.now = 1002.0
    assert schedule.take_due() == ["A"]
    schedule.started("A")
    schedule.committed("A")
    clock.now += 0.3
    schedule.changed("A")  # after a quick commit: one interval after its start
    assert schedule.seconds_to_next() == pytest.approx(1.7)


def test_a_change_due_while_its_folder_still_pushes_is_due_once_the_push_ends():
    clock = Clock()
    schedule = CommitSchedule(2.0, clock=clock)
    schedule.changed("A")
    assert schedule.take_due() == ["A"]
    schedule.started("A")
    clock.now += 0.5
    schedule.changed("A")
    clock.now += 2.0  # a slow push: the change is due, its folder is still claimed
    assert schedule.take_due() == []
    assert schedule.take_due() == []
    schedule.committed("A")
    assert schedule.take_due() == ["A"]
