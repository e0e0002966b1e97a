"""Random edits, creations, renames, moves and deletes in two folders, with lost webhooks
and a restart in the middle: the repositories must end up equal to the shared folders,
byte for byte, locally and on the remote."""

from __future__ import annotations

import os
import random

import pytest
from dulwich.repo import Repo

from gitsync import gitrepo, ydoc
from gitsync.dev.relay import DevRelay, FolderHandle

from .harness import InProcessService, head_files, wait_for, write_connectors

pytestmark = pytest.mark.slow

DIRS = ["", "notes/", "notes/deep/", "projects/"]


def expected(relay: DevRelay, folder: FolderHandle) -> dict[str, bytes]:
    out = {}
    for key, entry in folder.entries().items():
        path = key.lstrip("/")
        if entry["type"] == "markdown":
            out[path] = folder.text(path).encode()
        elif entry["type"] == "canvas":
            out[path] = ydoc.render_canvas(ydoc.read_canvas(relay.get_update(folder.doc_compound_id(path))))
        elif entry["type"] != "folder":
            out[path] = relay._blobs[entry["hash"]][0]  # the stand-in's stored attachment bytes
    return out


class Chaos:
    """Random Relay activity plus the webhooks the server would send (some lost)."""

    def __init__(self, relay: DevRelay, folder: FolderHandle, rng: random.Random):
        self.relay, self.folder, self.rng = relay, folder, rng
        self.counter = 0

    def files(self) -> list[str]:
        return sorted(k.lstrip("/") for k, e in self.folder.entries().items() if e["type"] == "markdown")

    def step(self) -> list[str]:
        """Do one random thing; returns the compound ids whose webhooks would be sent."""
        rng, folder = self.rng, self.folder
        files = self.files()
        roll = rng.random()
        self.counter += 1
        if roll < 0.55 and files:
            path = rng.choice(files)
            folder.edit_markdown(path, f"edit {self.counter} of {path}\n" + "x" * rng.randint(0, 40))
            return [folder.doc_compound_id(path)]
        if roll < 0.75 or not files:
            path = f"{rng.choice(DIRS)}new {self.counter}.md"
            folder.put_markdown(path, f"created {self.counter}\n")
            ids = [folder.compound_id, folder.doc_compound_id(path)]
            rng.shuffle(ids)  # the content webhook may come first
            return ids
        if roll < 0.84:
            src = rng.choice(files)
            dst = f"{rng.choice(DIRS)}moved {self.counter}.md"
            folder.rename(src, dst)
            return [folder.compound_id]
        if roll < 0.87:  # case-only rename
            src = rng.choice(files)
            head, _, name = src.rpartition("/")
            dst = (head + "/" if head else "") + (name.upper() if name != name.upper() else name.lower())
            if dst != src and dst not in files:
                folder.rename(src, dst)
            return [folder.compound_id]
        if roll < 0.90 and len(files) >= 2:  # swap two names through a temporary one
            a, b = rng.sample(files, 2)
            folder.rename(a, "swap-tmp.md")
            folder.rename(b, a)
            folder.rename("swap-tmp.md", b)
            return [folder.compound_id]
        if roll < 0.93:  # rename a whole directory with its contents
            dirs = sorted({f.rsplit("/", 1)[0] for f in files if "/" in f})
            if dirs:
                src = rng.choice(dirs)
                folder.rename(src, f"{src}-renamed-{self.counter}")
            return [folder.compound_id]
        if roll < 0.96:  # an attachment, new or with new bytes
            path = rng.choice(["assets/a.png", "assets/b.pdf", "c.png"])
            folder.put_attachment(path, rng.randbytes(rng.randint(1, 300)),
                                  "application/pdf" if path.endswith(".pdf") else "image/png")
            return [folder.compound_id]
        folder.delete(rng.choice(files))
        return [folder.compound_id]


SEEDS = [int(x) for x in os.environ.get("GITSYNC_SOAK_SEEDS", "7,2026").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_activity_converges_exactly(relay_server: DevRelay, tmp_path, seed):
    rng = random.Random(seed)
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folders = [relay_server.add_folder() for _ in range(2)]
    for folder in folders:
        for i in range(12):
            folder.put_markdown(f"{DIRS[i % 4]}start {i}.md", f"start {i}\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, folders[:1], url=str(bare))
    with (data_dir / "git_connectors.toml").open("a") as toml:
        toml.write(f'\n[[git_connector]]\nshared_folder_id = "{folders[1].folder_id}"\n'
                   f'relay_id = "{folders[1].relay_id}"\nprefix = "vault"\n')
    chaos = [Chaos(relay_server, f, rng) for f in folders]
    lost = 0
    options = dict(commit_interval=0.2, debounce=0.05, workers=3, reconcile_interval=1.0)
    for phase in range(2):  # the second phase runs on a restarted service
        with InProcessService(relay_server, data_dir, **options) as svc:
            for _ in range(60):
                actor = rng.choice(chaos)
                for compound in actor.step():
                    if rng.random() < 0.1:
                        lost += 1  # the Relay Server never retries a failed delivery
                        continue
                    assert svc.post(relay_server, compound).status_code == 202
            if phase == 1:
                for folder, prefix in ((folders[0], ""), (folders[1], "vault/")):
                    want = {prefix + p: data for p, data in expected(relay_server, folder).items()}
                    wait_for(lambda folder=folder, want=want: head_files(data_dir, folder) == want,
                             f"folder {folder.folder_id} to converge (seed {seed}, {lost} webhooks lost)",
                             timeout=90)
                wait_for(lambda: svc.service.status()["folders"][0]["uncommitted_paths"] == 0, "last commit")
    with Repo(str(bare)) as remote:
        assert gitrepo.read_tree_paths(remote, "main") == head_files(data_dir, folders[0])
    assert lost > 0


def test_random_activity_with_kill_9_converges(relay_server: DevRelay, tmp_path):
    """Like above, but the service (gunicorn) is killed with SIGKILL mid-activity, twice."""
    from .harness import GunicornService

    rng = random.Random(99)
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    for i in range(12):
        folder.put_markdown(f"{DIRS[i % 4]}start {i}.md", f"start {i}\n")
    data_dir = tmp_path / "data"
    write_connectors(data_dir, [folder], url=str(bare))
    chaos = Chaos(relay_server, folder, rng)
    env = {"RELAY_GIT_DEBOUNCE": "0.05", "RELAY_GIT_LOG_LEVEL": os.environ.get("SOAK_LOG_LEVEL", "INFO")}
    for round_ in range(3):
        svc = GunicornService(relay_server, data_dir, commit_interval=0.2, extra_env=env)
        try:
            svc.wait_healthy()
            for _ in range(40):
                for compound in chaos.step():
                    assert svc.post(relay_server, compound).status_code == 202
            if round_ < 2:
                svc.kill()  # no drain, no final commit: the journal and state must carry it
            else:
                want = expected(relay_server, folder)
                try:
                    wait_for(lambda want=want: head_files(data_dir, folder) == want,
                             "convergence after crashes", timeout=90)
                except AssertionError:
                    have = head_files(data_dir, folder)
                    diff = {p: (have.get(p), want.get(p)) for p in set(have) | set(want)
                            if have.get(p) != want.get(p)}
                    from gitsync.state import StateRegistry

                    saved = StateRegistry(data_dir, readonly=True)
                    mine = saved.relay(folder.relay_id).folder(folder.folder_id)
                    saved.close()
                    records = {d: r for d, r in mine.files.items() if r.path in diff}
                    work = data_dir / "repos" / folder.relay_id / folder.folder_id
                    disk = {p: (work / p).read_bytes() if (work / p).is_file() else None for p in diff}
                    raise AssertionError(
                        f"not converged: {diff}\nrecords: {records}\ndisk: {disk}\n"
                        f"dirty: {list(mine.dirty)}\n{svc.output()[-3000:]}") from None
                assert svc.terminate() == 0, svc.output()
        finally:
            svc.close()
    with Repo(str(bare)) as remote:
        assert gitrepo.read_tree_paths(remote, "main") == expected(relay_server, folder)
