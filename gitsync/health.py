"""Whether the service works, per folder and overall, and the failures it remembers.

The service reports what happens to each folder (a read, commit or push failed or
worked); :class:`HealthTracker` keeps one failure streak per folder and kind of work and
decides what ``/health`` says:

- ``ok``: every folder's reads, commits and pushes work (a streak younger than the grace
  period is not counted: a relay restart or a network blip heals by itself);
- ``degraded`` (HTTP 200): some folder has been failing for longer than the grace
  period, e.g. the Relay Server or the remote is unreachable, or a mass deletion is held;
- ``unhealthy`` (HTTP 503): something that cannot heal by itself: the Relay Server
  refuses the API key, the remote permanently rejects our pushes, or the websocket is
  refused. A container healthcheck on ``/health`` then turns unhealthy.

The last failure of every folder is written to ``state/folder_health.json`` (temporary
file and rename) whenever it changes, so ``cli.py status`` shows it with the service
stopped. Failures read back from an earlier run are shown but do not count for
``/health`` until they happen again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "HEALTH_FILE",
    "FolderHealth",
    "Health",
    "HealthTracker",
    "Problem",
    "Reason",
    "iso_time",
    "read_folder_health",
]

log = logging.getLogger(__name__)

HEALTH_FILE = "folder_health.json"
_FORMAT = 1

Key = tuple[str, str]


def iso_time(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC (``2026-12-02T05:09:31Z``), None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Health(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass
class Problem:
    """One failure streak of one folder for one kind of work.

    Attributes:
        kind: ``read`` (the Relay Server), ``commit``, ``push`` or ``internal``.
        error: the last error, secrets removed.
        since: when the streak began (Unix seconds).
        last_at: when it last failed.
        failures: failures in a row.
        permanent: retrying will not help (a refused key, a rejected push).
        earlier_run: read back from the file, not seen by this process yet.
    """

    kind: str
    error: str
    since: float
    last_at: float
    failures: int = 1
    permanent: bool = False
    earlier_run: bool = False


@dataclass(frozen=True)
class Reason:
    """Why ``/health`` is not ``ok``: one per failing folder and kind."""

    relay_id: str | None
    folder_id: str | None
    kind: str
    message: str
    since: float | None = None
    permanent: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"] = iso_time(self.since)
        return out


@dataclass
class FolderHealth:
    """What status shows per folder: consecutive failures and the latest error."""

    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    problems: list[Problem] = field(default_factory=list)


class HealthTracker:
    """Failure streaks per folder and kind, the health verdict, and their file.

    Args:
        path: where failures are kept (None: memory only).
        grace: seconds a non-permanent streak may last before it degrades health.
        clock: Unix seconds (tests pass their own).
    """

    def __init__(self, path: Path | None, *, grace: float = 180.0, clock: Callable[[], float] = time.time):
        self.path = path
        self.grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        self._problems: dict[Key, dict[str, Problem]] = {}
        self._notes: dict[tuple[str, Key | None], Reason] = {}
        if path is not None:
            for key, problems in read_folder_health(path).items():
                self._problems[key] = {p.kind: p for p in problems}

    # --- events -----------------------------------------------------------------------

    def failed(self, key: Key, kind: str, error: str, *, permanent: bool = False) -> int:
        """Count one failure; returns the folder's consecutive failures (all kinds)."""
        now = self._clock()
        with self._lock:
            problems = self._problems.setdefault(key, {})
            current = problems.get(kind)
            if current is None or current.earlier_run:
                previous = current.failures if current is not None else 0
                problems[kind] = Problem(kind, error, since=now, last_at=now, failures=previous + 1,
                                         permanent=permanent)
            else:
                current.error, current.last_at, current.permanent = error, now, permanent
                current.failures += 1
            total = sum(p.failures for p in problems.values())
            self._save()
        return total

    def succeeded(self, key: Key, *kinds: str) -> None:
        """The folder's ``kinds`` of work (all when none given) work again."""
        with self._lock:
            problems = self._problems.get(key)
            if not problems:
                return
            for kind in kinds or list(problems):
                problems.pop(kind, None)
            if not problems:
                del self._problems[key]
            self._save()

    def note(self, name: str, key: Key | None, message: str | None, *, permanent: bool = False,
             since: float | None = None) -> None:
        """Set (or clear, with ``message=None``) a condition the service observes from
        outside the streaks: a held deletion, a websocket state, an unwritable journal."""
        with self._lock:
            if message is None:
                self._notes.pop((name, key), None)
                return
            old = self._notes.get((name, key))
            start = since if since is not None else (old.since if old is not None else self._clock())
            self._notes[(name, key)] = Reason(key[0] if key else None, key[1] if key else None, name,
                                              message, start, permanent)

    # --- reading ----------------------------------------------------------------------

    def folder(self, key: Key) -> FolderHealth:
        with self._lock:
            problems = sorted((Problem(**asdict(p)) for p in self._problems.get(key, {}).values()),
                              key=lambda p: p.last_at)
        if not problems:
            return FolderHealth()
        latest = problems[-1]
        return FolderHealth(sum(p.failures for p in problems), latest.error, latest.last_at, problems)

    def evaluate(self, keys: Iterable[Key] | None = None) -> tuple[Health, list[Reason]]:
        """The verdict and its reasons, for the folders ``keys`` (all when None)."""
        now = self._clock()
        wanted = set(keys) if keys is not None else None
        reasons: list[Reason] = []
        with self._lock:
            for key, problems in self._problems.items():
                if wanted is not None and key not in wanted:
                    continue
                for p in problems.values():
                    if p.earlier_run:
                        continue
                    if p.permanent or now - p.since >= self.grace:
                        reasons.append(Reason(key[0], key[1], p.kind, p.error, p.since, p.permanent))
            for (_name, key), reason in self._notes.items():
                if wanted is not None and key is not None and key not in wanted:
                    continue
                if reason.permanent or reason.since is None or now - reason.since >= self.grace \
                        or reason.kind == "held_deletion":
                    reasons.append(reason)
        if any(r.permanent for r in reasons):
            return Health.UNHEALTHY, reasons
        return (Health.DEGRADED if reasons else Health.OK), reasons

    # --- the file ---------------------------------------------------------------------

    def _save(self) -> None:
        """Write every streak (lock held). A failed write is logged, never raised: the
        file only serves ``cli.py status``."""
        if self.path is None:
            return
        from .state import write_atomic

        data = {"format": _FORMAT, "folders": [
            {"relay_id": key[0], "folder_id": key[1],
             "problems": [{k: v for k, v in asdict(p).items() if k != "earlier_run"}
                          for p in problems.values()]}
            for key, problems in self._problems.items() if problems
        ]}
        try:
            write_atomic(self.path, json.dumps(data, indent=1).encode(), fsync=False)
        except OSError as exc:
            log.warning("folder health not written path=%s error=%s", self.path, exc)


def read_folder_health(path: Path) -> dict[Key, list[Problem]]:
    """The streaks kept in ``path`` (marked ``earlier_run``); {} when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        out: dict[Key, list[Problem]] = {}
        for folder in data.get("folders", []):
            key = (str(folder["relay_id"]), str(folder["folder_id"]))
            out[key] = [Problem(kind=str(p["kind"]), error=str(p["error"]), since=float(p["since"]),
                                last_at=float(p["last_at"]), failures=int(p.get("failures", 1)),
                                permanent=bool(p.get("permanent", False)), earlier_run=True)
                        for p in folder.get("problems", [])]
        return out
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("folder health file unreadable, ignored path=%s error=%s", path, exc)
        return {}
