"""Pushing to an http(s) remote with credentials from the environment, against Dulwich's
own smart-HTTP server (behind Basic auth) on 127.0.0.1."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest
from dulwich.repo import Repo
from dulwich.server import DictBackend
from dulwich.web import make_wsgi_chain
from werkzeug.serving import make_server

from gitsync import gitrepo
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.engine import Engine
from gitsync.publish import Publisher
from gitsync.relay import RelayClient

USER, PASSWORD = "sync-bot", "PASSWORD-MARKER-91"


class BasicAuth:
    def __init__(self, app):
        self.app = app
        self.seen: list[str] = []

    def __call__(self, environ, start_response):
        header = environ.get("HTTP_AUTHORIZATION", "")
        self.seen.append(header.split(" ")[0] if header else "")
        want = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if header != want:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'),
                                                ("Content-Type", "text/plain")])
            return [b"auth required"]
        return self.app(environ, start_response)


@pytest.fixture
def http_remote(tmp_path) -> Iterator[tuple[str, object]]:
    bare = tmp_path / "remote.git"
    repo = Repo.init_bare(str(bare), mkdir=True, default_branch=b"main")
    app = BasicAuth(make_wsgi_chain(DictBackend({"/vault.git": repo})))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/vault.git", bare
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        repo.close()


def make(relay_server, tmp_path, url):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "over http\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=url)
    settings = Settings(data_dir=tmp_path / "data", relay_server_url=relay_server.url,
                        relay_server_api_key=relay_server.api_key)
    config = ConnectorsConfig((conn,))
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), config)
    return engine, conn, settings, config


def test_push_with_credentials_from_the_environment(relay_server, http_remote, tmp_path):
    url, bare = http_remote
    engine, conn, settings, config = make(relay_server, tmp_path, url)
    publisher = Publisher(settings, config, env={"GIT_HTTPS_USERNAME": USER, "GIT_HTTPS_PASSWORD": PASSWORD})
    try:
        engine.sync_folder(conn)
        with engine.lock(conn):
            result = publisher.push(engine, conn)
        assert result.ok, result
        with Repo(str(bare)) as repo:
            assert gitrepo.read_tree_paths(repo, "main") == {"a.md": b"over http\n"}
        assert PASSWORD.encode() not in (settings.repo_dir(conn) / ".git" / "config").read_bytes()
    finally:
        engine.close()


def test_wrong_credentials_fail_clearly_without_the_password(relay_server, http_remote, tmp_path):
    url, _ = http_remote
    engine, conn, settings, config = make(relay_server, tmp_path, url)
    publisher = Publisher(settings, config, env={"GIT_HTTPS_USERNAME": USER, "GIT_HTTPS_PASSWORD": "wrong-" + PASSWORD})
    try:
        engine.sync_folder(conn)
        with engine.lock(conn):
            result = publisher.push(engine, conn)
        assert result.ok is False
        assert PASSWORD not in str(result)
        assert "127.0.0.1" in result.error
    finally:
        engine.close()
