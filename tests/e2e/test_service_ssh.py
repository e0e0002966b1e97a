"""The service publishing to a real OpenSSH server: never force, keep foreign commits,
survive a remote outage. The client side runs with git absent from PATH."""

from __future__ import annotations

import shutil

import pytest
import requests

from gitsync.dev.relay import DevRelay
from tests.fixtures_ssh import GitRemote, make_bare_repo

from .harness import InProcessService, head_files, wait_for, write_connectors

pytestmark = [pytest.mark.slow, pytest.mark.ssh]


def test_service_pushes_and_keeps_external_commits(relay_server: DevRelay, git_remote: GitRemote, tmp_path):
    assert shutil.which("git") is None
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "ours v1\n")
    folder.put_markdown("b.md", "b\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder], url=git_remote.url, prefix="vault",
                     known_hosts=[git_remote.known_hosts_line])
    with InProcessService(relay_server, data_dir, ssh_private_key=git_remote.client_private_key) as svc:
        # both notes: the startup sync may commit and push a.md before b.md is written
        # (leading edge), and a clone between the two pushes would be behind
        wait_for(lambda: git_remote.read("vault/a.md") == "ours v1\n" and git_remote.read("vault/b.md") == "b\n",
                 "the startup sync pushed")
        pubkey = requests.get(f"{svc.url}/api/pubkey", timeout=5).json()
        assert pubkey["key_type"] == "ssh-ed25519" and pubkey["public_key"].startswith("ssh-ed25519 ")

        person = git_remote.clone(tmp_path / "person")
        person.write("README.md", "outside the prefix\n")  # (a)
        person.write("vault/a.md", "theirs\n")  # (b): we change it too
        person.write("vault/b.md", "b edited by hand\n")  # (c): inside, we leave it
        external = person.commit_all("external edits")
        person.push()

        folder.edit_markdown("a.md", "ours v2\n")
        assert svc.post(relay_server, folder.doc_compound_id("a.md")).status_code == 202
        wait_for(lambda: git_remote.read("vault/a.md") == "ours v2\n", "our rebuilt push")
        head = git_remote.head()
        assert git_remote.is_ancestor(external, head)
        assert git_remote.read("README.md") == "outside the prefix\n"
        assert git_remote.read("vault/b.md") == "b edited by hand\n"
        git_remote.fsck()
        # the working tree followed the remote outside what we wrote
        repo_dir = data_dir / "repos" / folder.relay_id / folder.folder_id
        assert (repo_dir / "README.md").read_text() == "outside the prefix\n"
        status = svc.service.status()["folders"][0]
        assert status["push"]["ok"] is True
        assert git_remote.client_private_key not in str(svc.service.status())
        vendor = svc.service.publisher.vendor()
        assert vendor.open_connections == 1  # kept between pushes
    assert vendor.open_connections == 0  # closed when the service stops


def test_commits_accumulate_while_the_remote_is_down(relay_server, sshd_private, git_binary, tmp_path):
    bare = make_bare_repo(sshd_private, git_binary, "down")
    remote = GitRemote(sshd_private, bare, git_binary)
    folder = relay_server.add_folder()
    folder.put_markdown("n.md", "0\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder], url=remote.url, known_hosts=[remote.known_hosts_line])
    with InProcessService(relay_server, data_dir, ssh_private_key=remote.client_private_key) as svc:
        wait_for(lambda: remote.read("n.md") == "0\n", "the first push")
        sshd_private.stop()
        for i in range(1, 4):
            folder.edit_markdown("n.md", f"{i}\n")
            svc.post(relay_server, folder.doc_compound_id("n.md"))
            wait_for(lambda i=i: head_files(data_dir, folder).get("n.md") == f"{i}\n".encode(),
                     f"local commit {i}")
        wait_for(lambda: (svc.service.status()["folders"][0]["push"] or {}).get("ok") is False,
                 "a failed push to be reported")
        assert remote.read("n.md") == "0\n"
        sshd_private.start()
        wait_for(lambda: remote.read("n.md") == "3\n", "the backlog to reach the remote", timeout=120)
        subjects = remote.subjects()
        assert subjects[-3:] == ["Update n.md"] * 3
