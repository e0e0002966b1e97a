"""gitsync.ssh: keys from text, known_hosts parsing, strict host keys over a real sshd."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dulwich.client import SSHGitClient

from gitsync.ssh import (
    BUILTIN_KNOWN_HOSTS,
    HostKeyMismatch,
    HostKeyUnknown,
    ParamikoVendor,
    SSHAuthFailed,
    SSHConnectFailed,
    SSHKeyError,
    fingerprint,
    host_key_name,
    key_type,
    load_private_key,
    parse_known_hosts,
    public_key_line,
)
from tests.fixtures_ssh import settled, tool

# SHA256 fingerprints as published by the services (docs.github.com, about.gitlab.com,
# support.atlassian.com); the built-in lines must hash to exactly these.
PUBLISHED = {
    ("github.com", "ssh-ed25519"): "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU",
    ("github.com", "ecdsa-sha2-nistp256"): "SHA256:p2QAMXNIC1TJYWeIOttrVc98/R1BUFWu3/LiyKgUfQM",
    ("github.com", "ssh-rsa"): "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
    ("gitlab.com", "ssh-ed25519"): "SHA256:eUXGGm1YGsMAS7vkcx6JOJdOGHPem5gQp4taiCfCLB8",
    ("gitlab.com", "ecdsa-sha2-nistp256"): "SHA256:HbW3g8zUjNSksFbqTiUWPWg2Bq1x8xdGUrliXFzSnUw",
    ("gitlab.com", "ssh-rsa"): "SHA256:ROQFvPThGrW4RuWLoL9tq9I9zJ42fK4XywyRtbOz/EQ",
    ("bitbucket.org", "ssh-ed25519"): "SHA256:ybgmFkzwOSotHTHLJgHO0QN8L0xErw6vd0VhFA9m3SM",
    ("bitbucket.org", "ecdsa-sha2-nistp256"): "SHA256:FC73VB6C4OQLSCrjEayhMp9UMxS97caD/Yyi2bhW/J0",
    ("bitbucket.org", "ssh-rsa"): "SHA256:46OSHA1Rmj8E8ERTC6xkNcmGOw9oFxYr0WF6zWW8l1E",
}


def keygen(tmp_path: Path, kind: str, fmt: str, passphrase: str = "") -> Path:
    path = tmp_path / f"key_{kind}_{fmt}_{bool(passphrase)}"
    args = [tool("ssh-keygen"), "-q", "-t", kind, "-N", passphrase, "-f", str(path)]
    if fmt == "PEM":
        args += ["-m", "PEM"]
    subprocess.run(args, check=True, capture_output=True)
    return path


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "kind,fmt,expected",
    [
        ("ed25519", "openssh", "ssh-ed25519"),
        ("ecdsa", "openssh", "ecdsa-sha2-nistp256"),
        ("rsa", "openssh", "ssh-rsa"),
        ("ecdsa", "PEM", "ecdsa-sha2-nistp256"),
        ("rsa", "PEM", "ssh-rsa"),
    ],
)
def test_each_key_type_and_format_loads(tmp_path: Path, kind: str, fmt: str, expected: str):
    path = keygen(tmp_path, kind, fmt)
    text = path.read_text()
    if fmt == "PEM":
        assert "OPENSSH" not in text.splitlines()[0]
    pkey = load_private_key(text)
    assert key_type(pkey) == expected
    pub = Path(str(path) + ".pub").read_text().split()
    assert public_key_line(pkey, comment=None) == f"{pub[0]} {pub[1]}"
    assert public_key_line(pkey).endswith(" relay-git-sync")
    out = subprocess.run([tool("ssh-keygen"), "-lf", str(path) + ".pub"], capture_output=True, text=True, check=True)
    assert fingerprint(pkey) == out.stdout.split()[1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ed25519.Ed25519PrivateKey.generate(),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["ed25519", "ecdsa-p384", "rsa"],
)
def test_pkcs8_pem_keys_load(make):
    key = make()
    text = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pkey = load_private_key(text)
    expected = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert public_key_line(pkey, comment=None) == expected.decode()


def test_key_with_literal_backslash_n_loads(tmp_path: Path):
    text = keygen(tmp_path, "ed25519", "openssh").read_text()
    assert key_type(load_private_key(text.strip().replace("\n", "\\n"))) == "ssh-ed25519"


def _assert_clean(exc: SSHKeyError, text: str) -> None:
    message = str(exc) + repr(exc)
    assert "SSH_PRIVATE_KEY" in str(exc)
    body = [line for line in text.splitlines() if line and not line.startswith("-----")]
    for line in body:
        assert line[:16] not in message
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbC1ub3QtYS1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nTUlJRXBBSUJBQUtDQVFFQTBzZWNyZXRzZWNyZXQ=\n-----END RSA PRIVATE KEY-----\n",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    ],
    ids=["garbage", "empty", "bad-openssh", "bad-pem", "public-key"],
)
def test_garbage_key_is_a_clear_error_without_key_text(text: str):
    with pytest.raises(SSHKeyError) as info:
        load_private_key(text)
    _assert_clean(info.value, text)


@pytest.mark.parametrize("fmt", ["openssh", "PEM"])
def test_passphrase_key_is_a_clear_error(tmp_path: Path, fmt: str):
    text = keygen(tmp_path, "rsa" if fmt == "PEM" else "ed25519", fmt, passphrase="hunter2").read_text()
    with pytest.raises(SSHKeyError, match="passphrase") as info:
        load_private_key(text)
    _assert_clean(info.value, text)


# ---------------------------------------------------------------- known hosts


def test_builtin_host_keys_match_published_fingerprints():
    keys = parse_known_hosts([], include_builtin=True)
    seen = {}
    for line in BUILTIN_KNOWN_HOSTS:
        host, ktype, _ = line.split()
        seen[(host, ktype)] = fingerprint(keys.lookup(host)[ktype])
    assert seen == PUBLISHED


def test_parse_known_hosts_forms(tmp_path: Path):
    ed = paramiko.Ed25519Key(filename=str(keygen(tmp_path, "ed25519", "openssh")))
    pub = f"{ed.get_name()} {ed.get_base64()}"
    plain = tmp_path / "kh"
    plain.write_text(f"hashed.example.org {pub}\n")
    subprocess.run([tool("ssh-keygen"), "-H", "-f", str(plain)], check=True, capture_output=True)
    hashed_line = plain.read_text().strip()
    assert hashed_line.startswith("|1|")
    lines = [
        "# a comment",
        "",
        f"plain.example.org {pub}",
        f"[port.example.org]:2222 {pub} some comment",
        f"one.example.org,two.example.org {pub}",
        hashed_line,
        "@cert-authority *.example.org " + pub,
        "this is not a known_hosts line",
    ]
    keys = parse_known_hosts(lines, include_builtin=False)
    for host in ("plain.example.org", "[port.example.org]:2222", "one.example.org", "two.example.org",
                 "hashed.example.org"):
        assert keys.lookup(host) is not None, host
        assert keys.lookup(host)["ssh-ed25519"] == ed
    assert keys.lookup("port.example.org") is None
    assert keys.lookup("github.com") is None
    assert parse_known_hosts([]).lookup("github.com") is not None


def test_host_key_name():
    assert host_key_name("example.org", None) == "example.org"
    assert host_key_name("example.org", 22) == "example.org"
    assert host_key_name("127.0.0.1", 2222) == "[127.0.0.1]:2222"


# ---------------------------------------------------------------- over sshd


def get_refs(server, vendor: ParamikoVendor, bare: Path):
    client = SSHGitClient(server.host, port=server.port, username=server.user, vendor=vendor)
    try:
        return client.get_refs(str(bare))
    finally:
        client.close()


@pytest.mark.ssh
def test_connects_with_known_host_and_does_not_leak_threads(git_remote):
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [git_remote.known_hosts_line])
    assert vendor.is_trusted(git_remote.server.host, git_remote.server.port)
    get_refs(git_remote.server, vendor, git_remote.bare)
    before = threading.active_count()
    for _ in range(5):
        get_refs(git_remote.server, vendor, git_remote.bare)
    assert threading.active_count() <= before
    assert "PRIVATE" not in repr(vendor)


@pytest.mark.ssh
def test_hashed_known_hosts_entry_is_trusted(git_remote, tmp_path: Path):
    kh = tmp_path / "known_hosts"
    kh.write_text(git_remote.known_hosts_line + "\n")
    subprocess.run([tool("ssh-keygen"), "-H", "-f", str(kh)], check=True, capture_output=True)
    hashed = kh.read_text().strip()
    assert hashed.startswith("|1|")
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [hashed])
    get_refs(git_remote.server, vendor, git_remote.bare)


@pytest.mark.ssh
def test_unknown_host_key_is_refused_with_fingerprint(git_remote):
    server = git_remote.server
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [])
    with pytest.raises(HostKeyUnknown) as info:
        get_refs(server, vendor, git_remote.bare)
    host_pub = paramiko.PKey.from_type_string("ssh-ed25519", paramiko.Ed25519Key(
        filename=str(server.host_key)).asbytes())
    exc = info.value
    assert exc.fingerprint == fingerprint(host_pub)
    assert exc.fingerprint in str(exc) and "ssh-ed25519" in str(exc)
    assert exc.known_hosts_line == server.known_hosts_line
    assert server.known_hosts_line in str(exc)
    # the line from the message is exactly what makes it work
    get_refs(server, ParamikoVendor(load_private_key(git_remote.client_private_key), [exc.known_hosts_line]),
             git_remote.bare)


@pytest.mark.ssh
def test_changed_host_key_is_refused(git_remote, tmp_path: Path):
    server = git_remote.server
    other = paramiko.Ed25519Key(filename=str(keygen(tmp_path, "ed25519", "openssh")))
    line = f"[{server.host}]:{server.port} ssh-ed25519 {other.get_base64()}"
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [line])
    with pytest.raises(HostKeyMismatch) as info:
        get_refs(server, vendor, git_remote.bare)
    assert info.value.expected_fingerprint == fingerprint(other)
    assert info.value.fingerprint in str(info.value) and "changed" in str(info.value)
    assert info.value.known_hosts_line.startswith(f"[{server.host}]:{server.port} ssh-ed25519 ")


@pytest.mark.ssh
def test_trust_on_first_use_only_when_opted_in(git_remote):
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [], trust_on_first_use=True)
    get_refs(git_remote.server, vendor, git_remote.bare)
    assert vendor.learned_host_lines == [git_remote.known_hosts_line]
    get_refs(git_remote.server, vendor, git_remote.bare)  # remembered


@pytest.mark.ssh
def test_wrong_client_key_is_a_clear_auth_error(git_remote, tmp_path: Path):
    stranger = keygen(tmp_path, "ed25519", "openssh").read_text()
    vendor = ParamikoVendor(load_private_key(stranger), [git_remote.known_hosts_line])
    with pytest.raises(SSHAuthFailed) as info:
        get_refs(git_remote.server, vendor, git_remote.bare)
    message = str(info.value)
    assert "deploy key" in message and "write access" in message
    assert fingerprint(load_private_key(stranger)) in message
    assert stranger.splitlines()[1][:16] not in message


@pytest.mark.ssh
@pytest.mark.parametrize("kind,fmt", [("ecdsa", "PEM"), ("rsa", "openssh"), ("rsa", "PEM")])
def test_other_key_types_authenticate(git_remote, tmp_path: Path, kind: str, fmt: str):
    path = keygen(tmp_path, kind, fmt)
    git_remote.server.authorize(Path(str(path) + ".pub").read_text())
    vendor = ParamikoVendor(load_private_key(path.read_text()), [git_remote.known_hosts_line])
    get_refs(git_remote.server, vendor, git_remote.bare)


@pytest.mark.ssh
def test_closed_port_is_connect_failed(git_remote):
    from tests.fixtures_ssh import _free_port

    port = _free_port()
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [], timeout=5)
    client = SSHGitClient("127.0.0.1", port=port, username="git", vendor=vendor)
    with pytest.raises(SSHConnectFailed, match=str(port)):
        client.get_refs("/x.git")


# ---------------------------------------------------------------- kept connections


@pytest.mark.ssh
def test_one_connection_carries_every_command(sshd_private, git_binary, make_vendor):
    from tests.fixtures_ssh import make_bare_repo

    bare = make_bare_repo(sshd_private, git_binary, "kept")
    vendor = make_vendor(sshd_private.client_private_key, [sshd_private.known_hosts_line])
    for _ in range(5):
        get_refs(sshd_private, vendor, bare)
    assert settled(lambda: len(sshd_private.commands()), 5) == 5
    assert sshd_private.logins() == 1  # one handshake and authentication for five commands
    assert vendor.connections_opened == 1 and vendor.open_connections == 1


@pytest.mark.ssh
def test_a_dropped_connection_is_replaced(sshd_private, git_binary, make_vendor):
    from tests.fixtures_ssh import make_bare_repo

    bare = make_bare_repo(sshd_private, git_binary, "dropped")
    vendor = make_vendor(sshd_private.client_private_key, [sshd_private.known_hosts_line])
    get_refs(sshd_private, vendor, bare)
    assert sshd_private.drop_connections()  # the server side of our connection is killed
    get_refs(sshd_private, vendor, bare)  # no error: a new connection is made
    assert vendor.connections_opened == 2
    assert settled(sshd_private.logins, 2) == 2
    get_refs(sshd_private, vendor, bare)
    assert vendor.connections_opened == 2


@pytest.mark.ssh
def test_an_idle_connection_is_closed_and_reopened_on_demand(sshd_private, git_binary, make_vendor):
    from tests.fixtures_ssh import make_bare_repo

    bare = make_bare_repo(sshd_private, git_binary, "idle")
    vendor = make_vendor(sshd_private.client_private_key, [sshd_private.known_hosts_line], idle_timeout=0.2)
    get_refs(sshd_private, vendor, bare)
    assert settled(lambda: vendor.open_connections, 0) == 0
    assert settled(lambda: "Connection closed by 127.0.0.1" in sshd_private.log_text(), True)
    get_refs(sshd_private, vendor, bare)
    assert vendor.connections_opened == 2


@pytest.mark.ssh
def test_close_ends_every_connection_and_thread(git_remote, make_vendor):
    before = {t.ident for t in threading.enumerate()}
    vendor = make_vendor(git_remote.client_private_key, [git_remote.known_hosts_line])
    get_refs(git_remote.server, vendor, git_remote.bare)
    assert vendor.open_connections == 1
    vendor.close()
    assert vendor.open_connections == 0
    assert settled(lambda: {t.ident for t in threading.enumerate() if t.is_alive()} - before, set()) == set()
