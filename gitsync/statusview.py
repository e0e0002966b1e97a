"""The operator's view of the service: gathered from the data directory (service running
or not) or from ``/api/status``, and printed the same way either way.

:func:`offline_status` reads the state database (read-only, its own transaction), the
queue journal, the folder health file and each checkout, and returns a dict shaped like
``/api/status``; :func:`render_status` turns either into lines. ``cli.py status`` and
``cli.py status --url`` print those lines, ``--json`` the dict.
"""

from __future__ import annotations

import json
from typing import Any

from . import __version__
from .config import ConnectorsConfig, Settings
from .health import HEALTH_FILE, iso_time, read_folder_health

__all__ = ["offline_status", "render_status"]


def _journal_outstanding(settings: Settings) -> int | None:
    journal = settings.queue_dir / "journal.jsonl"
    if not journal.exists():
        return None
    outstanding: dict[str, int] = {}
    for raw in journal.read_text(errors="replace").splitlines():
        try:
            record = json.loads(raw)
            key = "/".join(record["key"])
        except (ValueError, KeyError, TypeError):
            continue
        outstanding[key] = outstanding.get(key, 0) + (1 if record.get("op") == "put" else -1)
    return sum(1 for n in outstanding.values() if n > 0)


def offline_status(settings: Settings, config: ConnectorsConfig) -> dict[str, Any]:
    """What the data directory says, per connector (read-only, no lock; safe while the
    service runs). The keys are those of ``/api/status`` that can be known offline."""
    from dulwich.repo import Repo

    from . import gitrepo
    from .publish import redact_url
    from .state import StateRegistry, damaged_state_files

    out: dict[str, Any] = {"source": str(settings.data_dir), "version": __version__}
    waiting = _journal_outstanding(settings)
    if waiting is not None:
        out["queue"] = {"outstanding": waiting}
    states = StateRegistry(settings.data_dir, readonly=True)
    try:
        relays = {c.relay_id: states.relay(c.relay_id) for c in config.connectors}
        if states.problem:
            out["problem"] = states.problem
    finally:
        states.close()
    health = read_folder_health(settings.data_dir / "state" / HEALTH_FILE)
    folders = []
    for connector in config.connectors:
        folder = relays[connector.relay_id].folders.get(connector.folder_id)
        problems = sorted(health.get(connector.key, []), key=lambda p: p.last_at)
        entry: dict[str, Any] = {
            "relay_id": connector.relay_id,
            "folder_id": connector.folder_id,
            "remote": redact_url(connector.url) if connector.url else None,
            "branch": connector.branch,
            "prefix": connector.prefix,
            "damaged_state": damaged_state_files(settings.data_dir, connector.relay_id),
            "failures": sum(p.failures for p in problems),
            "last_error": problems[-1].error if problems else None,
            "last_error_at": iso_time(problems[-1].last_at) if problems else None,
            "problems": [{"kind": p.kind, "error": p.error, "since": iso_time(p.since), "failures": p.failures,
                          "permanent": p.permanent} for p in problems],
            "never_synced": folder is None,
        }
        folders.append(entry)
        if folder is None:
            continue
        entry.update({
            "files": sum(1 for rec in folder.files.values() if rec.type != "folder"),
            "last_sync": iso_time(folder.last_sync),
            "uncommitted_paths": len(folder.dirty),
            "held_deletion": ({"reason": held.reason, "since": iso_time(held.since), "count": held.count}
                              if (held := folder.held_deletion) else None),
        })
        repo_dir = settings.repo_dir(connector)
        if (repo_dir / ".git").exists():
            with Repo(str(repo_dir)) as repo:
                entry["head"] = gitrepo.head_commit(repo, connector.branch)
                if connector.url:
                    entry["unpushed_commits"] = gitrepo.count_unpushed(
                        repo, branch=connector.branch, remote_name=connector.remote_name)
    out["folders"] = folders
    return out


def _seconds(value: Any) -> str:
    return f"{float(value):.0f} s" if isinstance(value, (int, float)) else "?"


def _service_lines(data: dict[str, Any]) -> list[str]:
    if "state" not in data:
        return [f"data directory {data.get('source')} (read offline; the service may or may not be running)"]
    lines = [f"service: {data['state']}, health {data.get('health', '?')}, initial sync "
             f"{data.get('initial_sync', '?')}, version {data.get('version', '?')}"]
    for reason in data.get("health_reasons") or []:
        where = f"{reason['relay_id']}/{reason['folder_id']} " if reason.get("folder_id") else ""
        since = f" (since {reason['since']})" if reason.get("since") else ""
        lines.append(f"  {where}{reason.get('kind')}: {reason.get('message')}{since}")
    return lines


def _queue_line(queue: dict[str, Any] | None) -> list[str]:
    if not queue:
        return []
    if "outstanding" in queue:
        return [f"queue: {queue['outstanding']} accepted webhook(s) not yet applied"]
    return [f"queue: {queue.get('pending', 0)} pending, {queue.get('in_progress', 0)} in progress, "
            f"{queue.get('deferred', 0)} waiting to retry (oldest {_seconds(queue.get('oldest_age_seconds'))})"]


def _push_line(push: dict[str, Any] | None) -> list[str]:
    if not push:
        return []
    if push.get("ok"):
        return [f"  last push: {push.get('status')} at {push.get('at')}"]
    permanent = ", permanent: the remote refuses it; fix the cause there" if push.get("permanent") else ""
    return [f"  last push FAILED at {push.get('at')} ({push.get('failures')} in a row, next try in "
            f"{_seconds(push.get('retry_in'))}{permanent}): {push.get('error')}"]


def _folder_lines(folder: dict[str, Any]) -> list[str]:
    lines = [f"{folder['relay_id']}/{folder['folder_id']} -> {folder.get('remote') or '(local only)'}"]
    if folder.get("damaged_state"):
        lines.append(f"  state files were damaged and set aside ({', '.join(folder['damaged_state'])}); "
                     "the next full sync rebuilds them")
    if folder.get("never_synced"):
        lines.append("  never synced")
    elif "files" in folder:
        lines.append(f"  files: {folder['files']}, last sync: {folder.get('last_sync') or 'never'}, "
                     f"uncommitted paths: {folder.get('uncommitted_paths', 0)}")
    if folder.get("state"):
        lines.append(f"  state: {folder['state']}, last success: {folder.get('last_success') or 'not yet'}")
    parts = []
    if "head" in folder:
        parts.append(f"head: {folder['head'][:10] if folder['head'] else '(no commit yet)'}")
    elif folder.get("last_commit"):
        parts.append(f"last commit: {folder['last_commit'][:10]}")
    if folder.get("remote") and folder.get("unpushed_commits") is not None:
        parts.append(f"unpushed commits: {folder['unpushed_commits'] or 'none'}")
    if parts:
        lines.append("  " + ", ".join(parts))
    if folder.get("failures"):
        lines.append(f"  failures: {folder['failures']} in a row, last error at {folder.get('last_error_at')}: "
                     f"{folder.get('last_error')}")
    held = folder.get("held_deletion")
    if held:
        lines.append(f"  HELD deletion of {held.get('count')} file(s): {held.get('reason')} (applied when a later "
                     f"read confirms it; or: cli.py sync --relay-id {folder['relay_id']} --folder-id "
                     f"{folder['folder_id']} --confirm-deletions)")
    lines += _push_line(folder.get("push"))
    transport = folder.get("transport") or {}
    if transport.get("state"):
        error = f", last error: {transport['last_error']}" if transport.get("last_error") else ""
        lines.append(f"  websocket: {transport['state']}, reconnects: {transport.get('reconnects', 0)}{error}")
    for item in folder.get("left_out") or []:
        lines.append(f"  left out of commits: {item.get('path')}: {item.get('reason')}")
    return lines


def render_status(data: dict[str, Any]) -> list[str]:
    """The human view of :func:`offline_status` or ``/api/status`` data."""
    lines = _service_lines(data) + _queue_line(data.get("queue"))
    if data.get("problem"):
        lines.append(f"state: {data['problem']}")
    folders = data.get("folders") or []
    if not folders:
        lines.append("no connectors")
    for folder in folders:
        lines += _folder_lines(folder)
    return lines
