from __future__ import annotations

import re
from pathlib import Path

import pytest

from gitsync.config import (
    ConfigError,
    Settings,
    load_connectors,
    normalize_prefix,
    settings_from_env,
)
from gitsync.ids import InvalidId, parse_compound_id, parse_uuid

RELAY = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
FOLDER = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
DOC = "0b1f3c9e-8f43-4d6b-9a57-1f0d4c2b7a11"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "git_connectors.toml"
    path.write_text(text)
    return path


def test_compound_ids_two_and_three_uuid_forms():
    two = parse_compound_id(f"{RELAY}-{DOC}")
    assert (two.relay_id, two.doc_id, two.middle_id) == (RELAY, DOC, None)
    three = parse_compound_id(f"{RELAY.upper()}-{FOLDER}-{DOC}")
    assert (three.relay_id, three.middle_id, three.doc_id) == (RELAY, FOLDER, DOC)
    assert str(three) == f"{RELAY}-{FOLDER}-{DOC}"


@pytest.mark.parametrize("bad", ["", RELAY, f"{RELAY}-", f"{RELAY}-{DOC}-x", "x" * 500, None, 42])
def test_bad_compound_ids_are_rejected(bad):
    with pytest.raises(InvalidId, match="doc_id must be"):
        parse_compound_id(bad)


def test_parse_uuid_names_the_field():
    with pytest.raises(InvalidId, match="relay_id must be a UUID"):
        parse_uuid("nope", what="relay_id")


def test_connectors_file_example_from_the_spec(tmp_path):
    path = write(tmp_path, f'''
[[git_connector]]
shared_folder_id = "{FOLDER}"
relay_id = "{RELAY}"
url = "https://github.com/example/repository.git"
branch = "main"
remote_name = "origin"
prefix = ""  # Optional: subdirectory within repo
''')
    config = load_connectors(path)
    (connector,) = config.connectors
    assert connector.folder_id == FOLDER and connector.relay_id == RELAY
    assert connector.url == "https://github.com/example/repository.git"
    assert connector.prefix == "" and connector.branch == "main"


def test_missing_file_means_no_connectors(tmp_path):
    assert load_connectors(tmp_path / "absent.toml").connectors == ()


def test_url_is_optional_and_defaults_apply(tmp_path):
    path = write(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nprefix = "/vault/notes/"\n')
    (connector,) = load_connectors(path).connectors
    assert connector.url is None
    assert (connector.branch, connector.remote_name, connector.prefix) == ("main", "origin", "vault/notes")


def test_repository_config_is_refused_unless_a_connector_allows_it(tmp_path):
    other = "0b9b6f3e-3b57-4a4e-9d0c-7e1b7b3a2c11"
    path = write(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\n\n'
                           f'[[git_connector]]\nshared_folder_id = "{other}"\nrelay_id = "{RELAY}"\n'
                           'allow_repository_config = true\n')
    first, second = load_connectors(path).connectors
    assert first.allow_repository_config is False
    assert second.allow_repository_config is True


def test_known_hosts_are_read(tmp_path):
    path = write(tmp_path, 'known_hosts = ["[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza"]\n')
    assert load_connectors(path).known_hosts == ("[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza",)


@pytest.mark.parametrize(
    "body, message",
    [
        (f'relay_id = "{RELAY}"\n', r"line 2: git_connector\[1\]\.shared_folder_id is required"),
        (f'shared_folder_id = "nope"\nrelay_id = "{RELAY}"\n',
         r"line 3: git_connector\[1\]\.shared_folder_id must be a UUID"),
        (f'shared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nbranchh = "main"\n',
         r"line 5: git_connector\[1\]: unknown key 'branchh'"),
        (f'shared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nbranch = "a..b"\n',
         r"git_connector\[1\]\.branch must be a valid branch name"),
        (f'shared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nprefix = "../escape"\n',
         r"line 5: git_connector\[1\]\.prefix must be a relative directory"),
        (f'shared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nurl = 5\n',
         r"git_connector\[1\]\.url must be a string"),
        (f'shared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nremote_name = "a b"\n',
         r"remote_name must be a simple name"),
        (f'shared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nallow_repository_config = "yes"\n',
         r"line 5: git_connector\[1\]\.allow_repository_config must be true or false \(got 'yes'\)"),
        (f'shared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\nallow_repository_config = 1\n',
         r"line 5: git_connector\[1\]\.allow_repository_config must be true or false"),
    ],
)
def test_connector_errors_name_file_line_and_key(tmp_path, body, message):
    path = write(tmp_path, "# connectors\n[[git_connector]]\n" + body)
    with pytest.raises(ConfigError, match=message) as info:
        load_connectors(path)
    assert "git_connectors.toml" in str(info.value)


def test_duplicate_folder_is_rejected(tmp_path):
    table = f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\n'
    path = write(tmp_path, table + "\n" + table)
    with pytest.raises(ConfigError, match=r"line 6: git_connector\[2\]: duplicate shared_folder_id"):
        load_connectors(path)


def test_invalid_toml_and_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_connectors(write(tmp_path, "[[git_connector]\n"))
    with pytest.raises(ConfigError, match="unknown top-level key 'connector'"):
        load_connectors(write(tmp_path, "[[connector]]\n"))


def test_settings_precedence_flag_over_env_over_default(tmp_path):
    env = {"RELAY_SERVER_URL": "http://relay.example/", "RELAY_GIT_COMMIT_INTERVAL": "3",
           "RELAY_GIT_DATA_DIR": str(tmp_path)}
    settings = settings_from_env(env, commit_interval=7)
    assert settings.commit_interval == 7.0
    assert settings.relay_server_url == "http://relay.example"
    assert settings.data_dir == tmp_path
    assert settings_from_env({}).port == 8000


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PORT": "abc"}, "PORT must be a whole number"),
        ({"PORT": "0"}, "--port (PORT) must be between 1 and 65535"),
        ({"RELAY_GIT_COMMIT_INTERVAL": "0"}, "--commit-interval (RELAY_GIT_COMMIT_INTERVAL) must be at least"),
        ({"RELAY_SERVER_URL": "relay.example"}, "--relay-server-url (RELAY_SERVER_URL) must be an http"),
        ({"RELAY_GIT_WORKERS": "0"}, "--workers (RELAY_GIT_WORKERS) must be at least 1"),
        ({"RELAY_GIT_FETCH_CONCURRENCY": "0"}, "invalid setting: RELAY_GIT_FETCH_CONCURRENCY must be at least 1"),
        ({"RELAY_GIT_PROXY_HOPS": "-1"}, "--proxy-hops (RELAY_GIT_PROXY_HOPS) must be between 0 (no proxy) and 10"),
        ({"RELAY_GIT_PROXY_HOPS": "one"}, "RELAY_GIT_PROXY_HOPS must be a whole number"),
    ],
)
def test_bad_settings_name_the_setting(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from_env(env)


def test_proxy_hops_default_to_none_and_come_from_flag_or_environment():
    assert settings_from_env({}).proxy_hops == 0
    assert settings_from_env({"RELAY_GIT_PROXY_HOPS": "1"}).proxy_hops == 1
    assert settings_from_env({"RELAY_GIT_PROXY_HOPS": "1"}, proxy_hops=2).proxy_hops == 2


def test_secrets_are_redacted_in_repr_and_log_safe():
    settings = Settings(relay_server_api_key="KEY-MARKER-1", webhook_secret="SECRET-MARKER-2",
                        ssh_private_key="PRIVATE-MARKER-3")
    text = repr(settings) + str(settings.log_safe())
    for marker in ("KEY-MARKER-1", "SECRET-MARKER-2", "PRIVATE-MARKER-3"):
        assert marker not in text
    assert settings.log_safe()["relay_server_api_key"] == "REDACTED"


def test_require_relay_names_the_variable():
    with pytest.raises(ConfigError, match="RELAY_SERVER_URL"):
        Settings().require_relay()


@pytest.mark.parametrize("bad", ["..", "a/../..", ".git", "x/.GIT/y", "a\x00b"])
def test_prefix_must_stay_inside_the_repository(bad):
    with pytest.raises(ValueError):
        normalize_prefix(bad)


@pytest.mark.parametrize("text, secret_free", [
    ("GET https://s3.example.com/b/k?X-Amz-Signature=abc&X-Amz-Expires=3 failed", "X-Amz-Signature=abc"),
    ("headers={'Authorization': 'Bearer sk-123456'}", "sk-123456"),
    ("key -----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----", "abc"),
    ("the value s3cret-value leaked", "s3cret-value"),
])
def test_redact_removes_secrets(text, secret_free):
    from gitsync.redact import redact

    assert secret_free not in redact(text, ["s3cret-value"])


@pytest.mark.parametrize("text", [
    "fetch http://h/repo.git/info/refs?service=git-upload-pack failed",
    "Authorization header must use the Bearer scheme",
])
def test_redact_keeps_harmless_text(text):
    from gitsync.redact import redact

    assert redact(text) == text


def test_transport_is_read_and_defaults_follow_the_webhook_secret(tmp_path):
    from gitsync.config import resolve_transport

    path = write(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\n'
                           f'transport = "both"\n\n[[git_connector]]\nshared_folder_id = "{DOC}"\n'
                           f'relay_id = "{RELAY}"\n')
    explicit, default = load_connectors(path).connectors
    assert explicit.transport == "both" and default.transport is None
    assert resolve_transport(explicit, Settings()) == "both"
    assert resolve_transport(default, Settings()) == "websocket"
    assert resolve_transport(default, Settings(webhook_secret="s")) == "webhook"


@pytest.mark.parametrize("value", ['"socket"', "1", '"WEBHOOK"'])
def test_bad_transport_names_line_and_choices(tmp_path, value):
    path = write(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\n'
                           f'transport = {value}\n')
    with pytest.raises(ConfigError) as info:
        load_connectors(path)
    assert info.value.line == 4 and info.value.key == "transport"
    assert "git_connectors.toml line 4" in str(info.value) and "git_connector[1].transport" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "/srv/git/vault.git", "./vault.git", "../backups/vault.git", "~/vault.git",
        "file:///srv/git/vault.git", "ssh://git@git.example.com:2222/team/vault.git",
        "git+ssh://git@git.example.com/vault.git", "git@github.com:me/vault.git",
        "github.com:me/vault.git", "https://github.com/me/vault.git", "http://10.0.0.5/v.git",
    ],
)
def test_remote_url_forms_that_work(tmp_path, url):
    path = write(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\n'
                           f'relay_id = "{RELAY}"\nurl = "{url}"\n')
    assert load_connectors(path).connectors[0].url == url


@pytest.mark.parametrize(
    "url, message",
    [
        ("github.com/me/vault", "must be an absolute path, a ./-relative path, a file://, ssh://, "
                                "https:// or http:// URL, or user@host:path (got 'github.com/me/vault'"),
        ("vault.git", "(got 'vault.git'"),
        ("ftp://example.com/vault.git", "uses an unsupported scheme 'ftp://'"),
        ("git://example.com/vault.git", "uses an unsupported scheme 'git://'"),
        ("TOKEN-MARKER@github.com/me/vault", "(got '...@github.com/me/vault'"),
    ],
)
def test_remote_url_that_would_silently_be_a_local_directory_is_refused(tmp_path, url, message):
    """A typo such as a missing ``https://`` names the line instead of creating a directory."""
    path = write(tmp_path, f'# vault\n[[git_connector]]\nshared_folder_id = "{FOLDER}"\n'
                           f'relay_id = "{RELAY}"\nbranch = "main"\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as info:
        load_connectors(path)
    text = str(info.value)
    assert text.startswith("git_connectors.toml line 6: git_connector[1].url ")
    assert message in text
    assert "TOKEN-MARKER" not in text
    assert (info.value.key, info.value.line) == ("url", 6)


def test_authors_table_template_and_commit_per_author_are_read(tmp_path):
    path = tmp_path / "git_connectors.toml"
    path.write_text(
        'author_template = "Relay {user} <{user}@relay.example.org>"\n\n'
        "[authors]\n"
        '"user-ada" = "Ada Lovelace <ada@example.org>"\n'
        "zoe = '  Zoë Ångström   <zoë@exämple.org>'\n\n"
        f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\ncommit_per_author = true\n',
        encoding="utf-8",
    )
    config = load_connectors(path)
    assert config.connectors[0].commit_per_author is True
    assert config.authors.identity("user-ada") == "Ada Lovelace <ada@example.org>"
    assert config.authors.identity("zoe") == "Zoë Ångström <zoë@exämple.org>"
    assert config.authors.identity("u-9") == "Relay u-9 <u-9@relay.example.org>"
    default = load_connectors(write(tmp_path, f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\n'
                                              f'relay_id = "{RELAY}"\n'))
    assert default.connectors[0].commit_per_author is False
    assert default.authors.identity("u-9") == "u-9 <u-9@users.relay.invalid>"


@pytest.mark.parametrize(
    "text, line, key, message",
    [
        ('[authors]\nada = "Ada"\n', 2, "authors.ada", "authors.ada must look like 'Name <email@example.org>'"),
        ('# who is who\n[authors]\nok = "Ok <ok@example.org>"\n"user 2" = "<u2@example.org>"\n', 4,
         "authors.user 2", "authors.user 2 needs a name"),
        ("[authors]\nada = 'Ada <ada at example.org>'\n", 2, "authors.ada", "needs an email"),
        ('[authors]\nada = 5\n', 2, "authors.ada", "must be a string"),
        ('[authors]\n"" = "Ada <ada@example.org>"\n', 2, "authors", "is not a relay user id"),
        ('authors = "ada"\n', 1, "authors", "authors must be a table"),
        ('[authors]\nauthor_template = "{user} <{user}@example.org>"\n', 2, "authors.author_template",
         "author_template must come before the first"),
        ('author_template = "{user}"\n', 1, "author_template", "author_template must look like"),
        (f'[[git_connector]]\nshared_folder_id = "{FOLDER}"\nrelay_id = "{RELAY}"\ncommit_per_author = "yes"\n',
         4, "commit_per_author", r"git_connector[1].commit_per_author must be true or false"),
    ],
)
def test_authors_errors_name_the_line_and_key(tmp_path, text, line, key, message):
    with pytest.raises(ConfigError) as info:
        load_connectors(write(tmp_path, text))
    assert (info.value.line, info.value.key) == (line, key)
    assert f"git_connectors.toml line {line}: " in str(info.value) and message in str(info.value)
