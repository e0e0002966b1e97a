"""Log formats: text and JSON lines, context fields lifted from messages, secrets scrubbed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gitsync.config import ConfigError, settings_from_env
from gitsync.logsetup import configure_logging, context_fields

SECRET = "SECRET-MARKER-0b9d"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Our handler writes here for the test; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_context_fields(stream):
    configure_logging("INFO", stream=stream, fmt="json")
    log = logging.getLogger("gitsync.engine")
    log.info("document skipped relay=%s folder=%s doc=%s path=%s reason=%s",
             "r-1", "f-2", "d-3", "notes/new idea.md", "too big")
    log.warning("unsafe path skipped relay=%s folder=%s path=%r reason=%s",
                "r-1", "f-2", "a 'quoted' b.md", "x")
    log.info("commit made relay=%s folder=%s commit=%s paths=%d", "r-1", "f-2", "abc1234", 3)
    log.info("service started workers=4")
    first, second, third, fourth = lines(stream)
    assert first["message"].startswith("document skipped relay=r-1")
    assert (first["level"], first["logger"]) == ("INFO", "gitsync.engine")
    assert {k: first[k] for k in ("relay", "folder", "doc", "path")} == {
        "relay": "r-1", "folder": "f-2", "doc": "d-3", "path": "notes/new idea.md"}
    assert "reason" not in first  # only the documented context keys become fields
    assert second["path"] == "a 'quoted' b.md" and second["level"] == "WARNING"
    assert third["commit"] == "abc1234"
    assert not {"relay", "folder", "doc", "path", "commit"} & set(fourth)
    assert first["time"].endswith("+00:00") and "T" in first["time"]


def test_json_lines_are_scrubbed_fields_and_tracebacks_included(stream):
    configure_logging("INFO", secrets=[SECRET], stream=stream, fmt="json")
    log = logging.getLogger("gitsync.relay")
    log.warning("fetch failed path=%s auth=%s", f"/d/{SECRET}/as-update", f"Bearer {SECRET}")
    try:
        raise RuntimeError(f"boom with {SECRET}")
    except RuntimeError:
        log.exception("unexpected error relay=%s", "r-1")
    text = stream.getvalue()
    assert SECRET not in text
    first, second = lines(stream)
    assert first["path"] == "/d/REDACTED/as-update"
    assert "Traceback" in second["message"] and second["relay"] == "r-1"
    assert len(text.splitlines()) == 2  # a traceback stays inside its one JSON line


def test_text_format_is_unchanged(stream):
    configure_logging("INFO", secrets=[SECRET], stream=stream)
    logging.getLogger("gitsync.x").info("hello relay=%s key=%s", "r", SECRET)
    line = stream.getvalue().strip()
    assert line.endswith(" INFO gitsync.x: hello relay=r key=REDACTED")


@pytest.mark.parametrize(
    ("message", "fields"),
    [
        ("a relay=r folder=f", {"relay": "r", "folder": "f"}),
        ("removed a half-written file path=/x/y z", {"path": "/x/y z"}),
        ("mypath=x norelay=y", {}),
        ("first path=a path=b", {"path": "a"}),
        ("error=a path=b\nTraceback path=zzz", {"path": "b"}),
        ("empty relay= folder=f", {"folder": "f"}),
    ],
)
def test_context_fields(message, fields):
    assert context_fields(message) == fields


def test_log_format_setting():
    assert settings_from_env({"RELAY_GIT_LOG_FORMAT": "json"}).log_format == "json"
    assert settings_from_env({}).log_format == "text"
    with pytest.raises(ConfigError, match=r"--log-format \(RELAY_GIT_LOG_FORMAT\) must be text or json"):
        settings_from_env({"RELAY_GIT_LOG_FORMAT": "xml"})
