"""Capped exponential backoff with jitter, and a per-key failure counter built on it.

Every retry in the service (a document that failed to sync, a push that failed) waits
``min(cap, base * 2**attempt)`` seconds scaled by a random factor in ``[0.5, 1]``: the
wait grows quickly, never exceeds the cap, and retries of many keys that failed together
spread out instead of arriving at the same instant.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Hashable

__all__ = ["MAX_DELAY", "Backoff", "backoff_delay"]

#: The longest wait between two attempts, in seconds.
MAX_DELAY = 300.0


def backoff_delay(attempt: int, *, base: float = 1.0, cap: float = MAX_DELAY,
                  rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    Args:
        attempt: failures so far (at least 1).
        base: the delay of attempt 0 before jitter; attempt n waits up to ``base * 2**n``.
        cap: upper bound of the delay before jitter.
        rng: a source of floats in ``[0, 1)`` (seeded in tests).

    Returns:
        A delay in ``[d / 2, d]`` with ``d = min(cap, base * 2**attempt)``.
    """
    exponent = min(max(attempt, 0), 62)  # 2**62 already exceeds any cap; keeps floats finite
    ceiling = min(cap, base * float(2**exponent))
    return ceiling * (0.5 + rng() / 2)


class Backoff:
    """Consecutive failures per key and the delay each one earns; thread-safe.

    ``failure(key)`` counts one more failure and returns how long to wait;
    ``reset(key)`` forgets the key after a success.
    """

    def __init__(self, *, base: float = 1.0, cap: float = MAX_DELAY,
                 rng: Callable[[], float] = random.random):
        self.base = base
        self.cap = cap
        self._rng = rng
        self._failures: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def failure(self, key: Hashable) -> float:
        """Count a failure of ``key``; returns the seconds to wait before retrying it."""
        with self._lock:
            attempts = self._failures.get(key, 0) + 1
            self._failures[key] = attempts
        return backoff_delay(attempts, base=self.base, cap=self.cap, rng=self._rng)

    def failures(self, key: Hashable) -> int:
        """Consecutive failures of ``key`` so far (0 after a success)."""
        with self._lock:
            return self._failures.get(key, 0)

    def reset(self, key: Hashable) -> None:
        """Forget ``key``'s failures (it succeeded)."""
        with self._lock:
            self._failures.pop(key, None)
