"""gunicorn's access lines follow the configured log level like every other INFO line."""

from __future__ import annotations

import pytest

from gitsync.dev.relay import DevRelay

from .harness import GunicornService, write_connectors

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("level, logged", [("INFO", True), ("WARNING", False)])
def test_access_lines_follow_the_log_level(tmp_path, level, logged):
    with DevRelay(api_key="access-log-key") as relay:
        folder = relay.add_folder()
        folder.put_markdown("a.md", "one\n")
        data_dir = tmp_path / "data"
        write_connectors(data_dir, [folder])
        svc = GunicornService(relay, data_dir, extra_env={"RELAY_GIT_LOG_LEVEL": level})
        try:
            svc.wait_healthy()
            for _ in range(3):
                assert svc.post(relay, folder.doc_compound_id("a.md")).status_code == 202
            assert svc.terminate() == 0
            access = [line for line in svc.output().splitlines()
                      if "gunicorn.access" in line and "POST /webhooks" in line]
            assert (len(access) == 3) if logged else (access == [])
        finally:
            svc.close()
