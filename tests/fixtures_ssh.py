"""Fixture plugin: a real OpenSSH server on 127.0.0.1 with bare repositories (``git_remote``).

The server side (sshd, ``git init --bare``, git-upload-pack/receive-pack behind
``git-shell``) and the "external person" may use the real git binary; the client under
test never does (tests/conftest.py removes git from PATH).

Our own sshd: own config and host key in a temp dir, ``StrictModes no``,
``UsePAM no``, ``AllowUsers``, ``/run/sshd``, a dedicated user (created with ``useradd``
when running as root, unlocked with ``usermod -p '*'``) whose shell is git-shell.
Without root the server runs as the current user instead.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
GIT_SHELL = "/usr/bin/git-shell"
TEST_USER = "gitsync-test"
START_TIMEOUT = 20.0


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def tool(name: str) -> str:
    """Absolute path of a system tool (the tests' PATH lacks /usr/bin, which holds git)."""
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        pytest.skip(f"{name} not installed")
    return found


def settled(read, want, timeout: float = 10.0):
    """``read()`` once it equals ``want``, else its last value after ``timeout`` seconds.

    sshd writes a log line a moment after the event it describes; this waits for the
    log to catch up instead of sleeping a fixed time.
    """
    deadline = time.monotonic() + timeout
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def _ssh_keygen(*args: str) -> None:
    _run([tool("ssh-keygen"), "-q", *args])


def _ensure_user() -> str:
    """The login the server accepts: a dedicated git-shell user as root, else ourselves."""
    if os.geteuid() != 0:
        return getpass.getuser()
    try:
        _run([tool("id"), "-u", TEST_USER])
    except subprocess.CalledProcessError:
        _run([tool("useradd"), "-M", "-d", "/", "-s", GIT_SHELL, TEST_USER])
    # useradd makes a locked account, which sshd refuses with UsePAM no
    _run([tool("usermod"), "-p", "*", "-d", "/", TEST_USER])
    return TEST_USER


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


class SSHServer:
    """One sshd instance with its own directory, host key and authorized client key."""

    def __init__(self, base: Path, user: str, port: int | None = None, log_level: str = "VERBOSE"):
        self.base = base
        self.user = user
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self.host_key = base / "ssh_host_ed25519_key"
        self.client_key = base / "client_ed25519"
        self.authorized_keys = base / "authorized_keys"
        self.config = base / "sshd_config"
        self.pidfile = base / "sshd.pid"
        self.logfile = base / "sshd.log"
        _ssh_keygen("-t", "ed25519", "-N", "", "-f", str(self.host_key))
        _ssh_keygen("-t", "ed25519", "-N", "", "-f", str(self.client_key), "-C", "gitsync-test-client")
        self.authorized_keys.write_text(Path(str(self.client_key) + ".pub").read_text())
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pidfile}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin no",
                    f"AllowUsers {self.user}",
                    "AcceptEnv GIT_PROTOCOL",
                    # VERBOSE logs each login and session; DEBUG3 also each command run
                    f"LogLevel {log_level}",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        _run([SSHD, "-t", "-f", str(self.config)])

    @property
    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` of the server's host key."""
        return " ".join(Path(str(self.host_key) + ".pub").read_text().split()[:2])

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    @property
    def client_private_key(self) -> str:
        return self.client_key.read_text()

    def authorize(self, public_line: str) -> None:
        with self.authorized_keys.open("a") as fh:
            fh.write(public_line.strip() + "\n")

    def rekey(self) -> None:
        """Give the server a new host key (stopped and started again around it)."""
        self.stop()
        for path in (self.host_key, Path(str(self.host_key) + ".pub")):
            path.unlink()
        _ssh_keygen("-t", "ed25519", "-N", "", "-f", str(self.host_key))
        self.start()

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def logins(self) -> int:
        """Successful SSH authentications (one per connection) logged so far."""
        return self.log_text().count("Accepted publickey for ")

    def commands(self) -> list[str]:
        """Commands run through the server so far, e.g. ``git-receive-pack '/x.git'``.

        Needs ``LogLevel DEBUG3`` (the ``sshd_private`` fixture).
        """
        marker = "mm_audit_run_command entering command "
        return [line.split(marker, 1)[1].strip() for line in self.log_text().splitlines() if marker in line]

    def drop_connections(self) -> list[int]:
        """Kill the server side of every open SSH connection (the listener keeps running).

        Returns the pids stopped: the per-connection processes the listener forked.
        """
        listener = int(self.pidfile.read_text().strip())
        dropped = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == listener:
                try:
                    os.kill(int(entry.name), signal.SIGTERM)
                    dropped.append(int(entry.name))
                except ProcessLookupError:
                    pass
        return dropped

    def running(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def start(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        _run([SSHD, "-f", str(self.config), "-E", str(self.logfile)])
        deadline = time.monotonic() + START_TIMEOUT
        while not self.running():
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start; log: {self.logfile.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server like a host going down: open connections end too."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        self.drop_connections()
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + START_TIMEOUT
        while self.running():
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not stop")
            time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)


def _make_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="gitsync-sshd-"))
    base.chmod(0o755)  # the git-shell user must traverse to the repositories
    return base


def _serve(*, need_git_shell: bool, log_level: str = "VERBOSE") -> Iterator[SSHServer]:
    if not Path(SSHD).exists():
        pytest.skip(f"{SSHD} not installed (apt-get install openssh-server)")
    tool("ssh-keygen")
    if need_git_shell and os.geteuid() == 0 and not Path(GIT_SHELL).exists():
        pytest.skip(f"{GIT_SHELL} not installed (apt-get install git)")
    base = _make_base()
    server = SSHServer(base, _ensure_user(), log_level=log_level)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """A session-wide sshd on a free 127.0.0.1 port (skipped when sshd is missing)."""
    yield from _serve(need_git_shell=True)


@pytest.fixture
def sshd_private() -> Iterator[SSHServer]:
    """A function-scoped sshd of its own, for tests that stop and restart the server or
    count its logins and commands (it logs at DEBUG3)."""
    yield from _serve(need_git_shell=True, log_level="DEBUG3")


@pytest.fixture
def make_vendor() -> Iterator:
    """``make_vendor(private_key_text, known_host_lines, **options)``: a ParamikoVendor
    whose kept connections are closed when the test ends."""
    from gitsync.ssh import ParamikoVendor, load_private_key

    made = []

    def make(private_key: str, known_hosts=(), **options):
        vendor = ParamikoVendor(load_private_key(private_key), list(known_hosts), **options)
        made.append(vendor)
        return vendor

    try:
        yield make
    finally:
        for vendor in made:
            vendor.close()


@dataclass
class ExternalClone:
    """A person with a real git clone who commits and pushes next to the service."""

    remote: GitRemote
    path: Path
    name: str = "External Person"
    email: str = "external@example.com"

    def git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            [self.remote.git_binary, *args],
            cwd=self.path,
            env=self.remote.git_env(self.name, self.email),
            capture_output=True,
            text=True,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def commit_all(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def push(self) -> None:
        self.git("push", "-q", "origin", f"HEAD:{self.remote.branch}")

    def pull(self) -> None:
        self.git("pull", "-q", "--ff-only", "origin", self.remote.branch)


@dataclass
class GitRemote:
    """A fresh bare repository on the test sshd, plus what a client needs to reach it."""

    server: SSHServer
    bare: Path
    git_binary: str
    branch: str = "main"
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        # the external person's HOME lives with the server, removed with it
        self.home = self.server.base / f"home-{self.bare.name}"
        self.home.mkdir(exist_ok=True)

    @property
    def url(self) -> str:
        """``ssh://user@127.0.0.1:port/abs/path.git``"""
        return f"ssh://{self.server.user}@{self.server.host}:{self.server.port}{self.bare}"

    @property
    def known_hosts_line(self) -> str:
        return self.server.known_hosts_line

    @property
    def client_private_key(self) -> str:
        return self.server.client_private_key

    def git_env(self, name: str = "External Person", email: str = "external@example.com") -> dict[str, str]:
        known = self.home / "known_hosts"
        known.write_text(self.known_hosts_line + "\n")
        ssh = (
            f"{tool('ssh')} -i {self.server.client_key} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes"
        )
        path = os.pathsep.join([str(Path(self.git_binary).parent), os.environ.get("PATH", "")])
        return {
            "PATH": path,
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_SSH_COMMAND": ssh,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "LC_ALL": "C",
        }

    def bare_git(self, *args: str) -> str:
        """Run git on the bare repository directly (server side, read-only use)."""
        proc = subprocess.run(
            [self.git_binary, "-c", "safe.directory=*", f"--git-dir={self.bare}", *args],
            env=self.git_env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def head(self) -> str | None:
        out = subprocess.run(
            [self.git_binary, "-c", "safe.directory=*", f"--git-dir={self.bare}",
             "rev-parse", "--verify", "-q", f"refs/heads/{self.branch}"],
            env=self.git_env(), capture_output=True, text=True,
        )
        return out.stdout.strip() or None

    def read(self, path: str) -> str | None:
        proc = subprocess.run(
            [self.git_binary, "-c", "safe.directory=*", f"--git-dir={self.bare}",
             "show", f"{self.branch}:{path}"],
            env=self.git_env(), capture_output=True, text=True,
        )
        return proc.stdout if proc.returncode == 0 else None

    def files(self) -> list[str]:
        if self.head() is None:
            return []
        return self.bare_git("ls-tree", "-r", "--name-only", self.branch).split()

    def subjects(self) -> list[str]:
        """Commit subjects, oldest first (first-parent)."""
        return self.bare_git("log", "--first-parent", "--reverse", "--format=%s", self.branch).splitlines()

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        proc = subprocess.run(
            [self.git_binary, "-c", "safe.directory=*", f"--git-dir={self.bare}",
             "merge-base", "--is-ancestor", ancestor, descendant],
            env=self.git_env(), capture_output=True, text=True,
        )
        return proc.returncode == 0

    def fsck(self) -> str:
        return self.bare_git("fsck", "--strict")

    def clone(self, dest: Path, **kw) -> ExternalClone:
        branch = ["-b", self.branch] if self.head() else []  # an empty remote has no branch yet
        proc = subprocess.run(
            [self.git_binary, "clone", "-q", *branch, self.url, str(dest)],
            env=self.git_env(), capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise AssertionError(f"git clone failed: {proc.stderr}")
        clone = ExternalClone(self, dest, **kw)
        if not branch:
            clone.git("checkout", "-q", "-b", self.branch)
        return clone


def make_bare_repo(server: SSHServer, git_binary: str, name: str, branch: str = "main") -> Path:
    repos = server.base / "repos"
    repos.mkdir(exist_ok=True)
    repos.chmod(0o755)
    bare = repos / f"{name}.git"
    if os.geteuid() == 0 and server.user != "root":
        uid, gid = _ids(server.user)
        os.chown(repos, uid, gid)
        _run([tool("su"), "-s", "/bin/sh", server.user, "-c",
              f"'{git_binary}' init -q --bare -b {branch} '{bare}'"])
    else:
        _run([git_binary, "init", "-q", "--bare", "-b", branch, str(bare)])
    return bare


@pytest.fixture
def git_remote(sshd: SSHServer, git_binary: str, request: pytest.FixtureRequest) -> Iterator[GitRemote]:
    """A fresh empty bare repository (branch ``main``) on the session sshd."""
    name = f"r{abs(hash(request.node.nodeid)) % 10**10}-{time.monotonic_ns()}"
    bare = make_bare_repo(sshd, git_binary, name)
    remote = GitRemote(sshd, bare, git_binary)
    try:
        yield remote
    finally:
        shutil.rmtree(bare, ignore_errors=True)
        shutil.rmtree(remote.home, ignore_errors=True)
