"""gitsync.backoff: capped exponential delays with jitter, counted per key."""

from __future__ import annotations

import pytest

from gitsync.backoff import MAX_DELAY, Backoff, backoff_delay


@pytest.mark.parametrize("attempt,ceiling", [(1, 2.0), (2, 4.0), (5, 32.0), (9, MAX_DELAY), (10_000, MAX_DELAY)])
def test_delay_doubles_up_to_the_cap_and_jitter_keeps_half(attempt, ceiling):
    assert backoff_delay(attempt, rng=lambda: 0.999999) == pytest.approx(ceiling, rel=1e-5)
    assert backoff_delay(attempt, rng=lambda: 0.0) == pytest.approx(ceiling / 2)


def test_base_and_cap_are_honoured():
    assert backoff_delay(3, base=0.5, cap=3.0, rng=lambda: 0.999999) == pytest.approx(3.0, rel=1e-5)
    assert backoff_delay(1, base=0.5, rng=lambda: 0.0) == pytest.approx(0.5)


def test_counter_grows_per_key_and_resets():
    backoff = Backoff(rng=lambda: 0.0)
    assert [backoff.failure("a") for _ in range(3)] == [1.0, 2.0, 4.0]
    assert backoff.failure("b") == 1.0
    assert backoff.failures("a") == 3
    backoff.reset("a")
    assert backoff.failures("a") == 0 and backoff.failure("a") == 1.0
