"""Repository policy end to end: a vault editor cannot push CI or git configuration.

The stand-in serves a folder holding CI workflows and git's in-tree configuration; the
engine syncs it and the Publisher pushes to a real SSH remote (the test sshd). What reaches
the remote is read back with the real git binary, on the server side.
"""

from __future__ import annotations

import logging

from dulwich.repo import Repo

from gitsync import gitrepo
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.engine import Engine
from gitsync.publish import Publisher
from gitsync.relay import RelayClient

HOSTILE = {
    ".github/workflows/ci.yml": "on: push\njobs: {x: {runs-on: ubuntu-latest, steps: [{run: env}]}}\n",
    ".gitlab-ci.yml": "steal:\n  script: env\n",
    ".gitmodules": '[submodule "x"]\n\tpath = x\n\turl = ssh://evil.example/x\n',
    ".gitattributes": "* filter=evil\n",
    "notes/.gitattributes": "*.md diff=evil\n",
}
HARMLESS = {
    "notes/a.md": "a note\n",
    ".gitignore": "*.tmp\n",
    "notes/.github/workflows/ci.yml": "a note about workflows\n",  # not at the root: nothing reads it
}


def _engine(relay_server, data_dir, conn, key, known_hosts):
    settings = Settings(data_dir=data_dir, relay_server_url=relay_server.url,
                        relay_server_api_key=relay_server.api_key, ssh_private_key=key)
    config = ConnectorsConfig((conn,), known_hosts=(known_hosts,))
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), config)
    return engine, Publisher(settings, config)


def _sync_and_push(relay_server, data_dir, conn, remote):
    engine, remotes = _engine(relay_server, data_dir, conn, remote.client_private_key,
                              remote.known_hosts_line)
    try:
        report = engine.sync_folder(conn)
        with engine.lock(conn):
            pushed = remotes.push(engine, conn)
        assert pushed.ok, pushed
        return report
    finally:
        engine.close()


def test_repository_config_is_not_pushed_unless_the_connector_allows_it(relay_server, git_remote, tmp_path,
                                                                         caplog):
    folder = relay_server.add_folder()
    for path, text in {**HOSTILE, **HARMLESS}.items():
        folder.put_markdown(path, text)
    conn = Connector(folder.relay_id, folder.folder_id, url=git_remote.url)
    caplog.set_level(logging.WARNING, logger="gitsync")

    report = _sync_and_push(relay_server, tmp_path, conn, git_remote)
    assert sorted(git_remote.files()) == sorted(HARMLESS)
    skipped = dict(report.skipped)
    for path in HOSTILE:
        assert "is repository configuration" in skipped[path]
        assert "allow_repository_config = true" in skipped[path]
    assert ".github" in skipped and ".github/workflows" in skipped  # their folder entries too
    assert "'.github' at the repository root is repository configuration" in caplog.text

    # the operator opts in: the same folder syncs whole
    allowed = Connector(folder.relay_id, folder.folder_id, url=git_remote.url, allow_repository_config=True)
    report = _sync_and_push(relay_server, tmp_path, allowed, git_remote)
    assert report.skipped == []
    assert sorted(git_remote.files()) == sorted({**HOSTILE, **HARMLESS})
    assert git_remote.read(".gitlab-ci.yml") == HOSTILE[".gitlab-ci.yml"]

    # and out again: what the service wrote under the policy's names is deleted and pushed
    report = _sync_and_push(relay_server, tmp_path, conn, git_remote)
    assert report.deleted == len(HOSTILE)
    assert sorted(git_remote.files()) == sorted(HARMLESS)


def test_the_policy_judges_the_path_inside_the_repository(relay_server, tmp_path):
    """Under a prefix, CI names are ordinary folders; .gitattributes counts everywhere."""
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    for path, text in {**HOSTILE, **HARMLESS}.items():
        folder.put_markdown(path, text)
    conn = Connector(folder.relay_id, folder.folder_id, url=str(bare), prefix="vault")
    settings = Settings(data_dir=tmp_path / "data", relay_server_url=relay_server.url,
                        relay_server_api_key=relay_server.api_key)
    config = ConnectorsConfig((conn,))
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), config)
    try:
        report = engine.sync_folder(conn)
        with engine.lock(conn):
            assert Publisher(settings, config).push(engine, conn).ok
    finally:
        engine.close()
    assert sorted(p for p, _ in report.skipped) == [".gitattributes", "notes/.gitattributes"]
    with Repo(str(bare)) as repo:
        pushed = gitrepo.read_tree_paths(repo, "main")
    expected = {f"vault/{p}" for p in {**HOSTILE, **HARMLESS}} - {"vault/.gitattributes",
                                                                  "vault/notes/.gitattributes"}
    assert set(pushed) == expected
