"""No secret anywhere: every secret set to a marker, syncs and pushes made to fail for
real, then logs, ``/api/status``, CLI output, exception messages and ``.git/config``
searched for the markers.

Secrets: the Relay API key, the webhook secret, the SSH private key, the https user and
password from the environment, and credentials written into remote URLs (a password
containing ``@``, a token as the user name, an SSH password).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from werkzeug.serving import make_server

from cli import cli
from gitsync import gitrepo
from gitsync.config import Settings, load_connectors
from gitsync.service import Service
from gitsync.web import create_app
from tests.e2e.harness import wait_for
from tests.relay_faults import FaultyRelay

API_KEY = "API-KEY-MARKER-1a7"
WEBHOOK_SECRET = "WEBHOOK-MARKER-2b8"
HTTPS_USER = "HTTPS-USER-MARKER-3c9"
HTTPS_PASSWORD = "HTTPS-PASS-MARKER-4d0"
URL_PASSWORD = "p@ss-URL-MARKER-5e1"  # an unescaped "@" inside the password
URL_TOKEN = "TOKEN-MARKER-6f2"
SSH_URL_PASSWORD = "SSH-PW-MARKER-7g3"


def private_key_text() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def key_markers(key_text: str) -> list[str]:
    return [line for line in key_text.splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def refusing_git_server() -> Iterator[str]:
    """A smart-HTTP endpoint that refuses every credential (401), on 127.0.0.1."""

    def app(environ, start_response):
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'),
                                            ("Content-Type", "text/plain")])
        return [b"bad credentials"]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def connectors_file(data_dir: Path, relay: FaultyRelay, host: str) -> list[str]:
    """Three connectors whose pushes fail; returns their URLs."""
    urls = [
        f"http://user:{URL_PASSWORD}@{host}/a.git",
        f"http://{URL_TOKEN}@{host}/b.git",
        f"ssh://git:{SSH_URL_PASSWORD}@127.0.0.1:1/c.git",
    ]
    tables = []
    for url in urls:
        folder = relay.add_folder()
        folder.put_markdown("a.md", "a\n")
        tables.append(f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\n'
                      f'relay_id = "{folder.relay_id}"\nurl = "{url}"\n')
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "git_connectors.toml").write_text("\n".join(tables))
    return urls


def assert_clean(text: str, markers: list[str]) -> None:
    found = [m for m in markers if m in text]
    assert found == [], f"secrets leaked: {found}"


def test_no_secret_reaches_logs_status_cli_errors_or_git_config(tmp_path, refusing_git_server, caplog):
    caplog.set_level(logging.DEBUG)
    relay = FaultyRelay(api_key=API_KEY)
    relay.start()
    key_text = private_key_text()
    markers = [API_KEY, WEBHOOK_SECRET, HTTPS_USER, HTTPS_PASSWORD, URL_PASSWORD, "p@ss",
               URL_TOKEN, SSH_URL_PASSWORD, *key_markers(key_text)]
    data_dir = tmp_path / "data"
    try:
        urls = connectors_file(data_dir, relay, refusing_git_server)
        env = {"RELAY_SERVER_URL": relay.url or "", "RELAY_SERVER_API_KEY": API_KEY,
               "WEBHOOK_SECRET": WEBHOOK_SECRET, "SSH_PRIVATE_KEY": key_text,
               "GIT_HTTPS_USERNAME": HTTPS_USER, "GIT_HTTPS_PASSWORD": HTTPS_PASSWORD,
               "RELAY_GIT_DATA_DIR": str(data_dir), "RELAY_GIT_SSH_TRUST_ON_FIRST_USE": "true"}
        outputs: list[str] = []

        # the one-time sync: every push fails (401 twice, connection refused once)
        result = CliRunner().invoke(cli, ["sync", "--all"], env=env)
        assert result.exit_code == 1, result.output
        assert result.output.count("failed") >= 3
        outputs.append(result.output)

        # the service: a sync made to fail by the relay, failing pushes, a refused webhook
        settings = Settings(data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=API_KEY,
                            webhook_secret=WEBHOOK_SECRET, ssh_private_key=key_text,
                            https_username=HTTPS_USER, https_password=HTTPS_PASSWORD,
                            trust_on_first_use=True, commit_interval=0.2, reconcile_interval=0,
                            debounce=0.05, relay_retries=1)
        relay.fail_next(100, 500)
        service = Service(settings, load_connectors(settings.connectors_path))
        app = create_app(settings, service)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        service.start()
        try:
            seen: list[str] = []

            def failing_everywhere() -> bool:
                current = service.status()
                seen.append(str(current))  # a relay error and a push error may follow each other
                folders = current["folders"]
                return (all(f["last_error"] and f["push"] and not f["push"]["ok"] for f in folders)
                        and any("relay server unavailable" in s for s in seen))

            wait_for(failing_everywhere, "failed syncs and pushes in every folder")
            outputs.append(requests.get(f"{base}/api/status", timeout=5).text)
            outputs.append(requests.get(f"{base}/health", timeout=5).text)
            outputs.append(requests.post(f"{base}/webhooks", json={}, timeout=5,
                                         headers={"Authorization": "Bearer wrong"}).text)
            status = str(service.status()) + "".join(seen)
            outputs.append(status)
            outputs.append(repr(settings) + repr(service.config))
        finally:
            service.stop(timeout=10)
            server.shutdown()
            server.server_close()
            thread.join()
        assert "relay server unavailable" in status and "No valid credentials" in status

        # the CLI's read-only views
        for args in (["status"], ["connectors", "list"], ["connectors", "validate", "--check-remote"]):
            result = CliRunner().invoke(cli, args, env=env)
            assert "Traceback" not in result.output, result.output
            outputs.append(result.output)

        # the URL parser's errors for malformed URLs carrying credentials, and its display
        for bad in (f"https://{URL_TOKEN}@/x.git", f"ftp://u:{URL_PASSWORD}@h/x",
                    f"https://u:{URL_PASSWORD}@h:port/x", f"https://u:{URL_TOKEN}?x@h/x"):
            with pytest.raises(gitrepo.GitError) as info:
                gitrepo.parse_remote_url(bad)
            outputs.append(str(info.value))
        outputs.append(gitrepo.parse_remote_url(f"u:{URL_PASSWORD}@h:x.git").display)  # scp-like, odd

        # what people browsing the checkouts see
        for config in data_dir.glob("repos/*/*/.git/config"):
            outputs.append(config.read_text())
        assert len(list(data_dir.glob("repos/*/*/.git/config"))) == len(urls)
    finally:
        relay.stop()
    assert "127.0.0.1" in "".join(outputs)  # the remotes are still named, only without credentials
    assert_clean("\n".join(outputs), markers)
    assert_clean(caplog.text, markers)
