"""gitsync.redact: URLs without credentials, secrets out of text; config's one list of secrets."""

from __future__ import annotations

import logging

import pytest

from gitsync.config import Connector, ConnectorsConfig, Settings, settings_from_env
from gitsync.redact import QueryFilter, SecretFilter, redact, redact_url, url_secrets


@pytest.mark.parametrize(("url", "shown", "secrets"), [
    ("https://user:p@ss@host/x.git", "https://host/x.git", ["p@ss"]),
    ("https://TOKEN@host/x.git", "https://host/x.git", ["TOKEN"]),
    ("https://x-access-token:ghp_abc123@github.com/o/r.git", "https://github.com/o/r.git", ["ghp_abc123"]),
    ("http://u:p%40ss@h:8080/x", "http://h:8080/x", ["p%40ss", "p@ss"]),
    ("https://u:p?s#s@h/x", "https://h/x", ["p?s#s"]),
    ("ssh://git:pw@host:22/x.git", "ssh://git@host:22/x.git", ["pw"]),
    ("ssh://git@host/x.git", "ssh://git@host/x.git", []),
    ("git+ssh://deploy@host/x", "git+ssh://deploy@host/x", []),
    ("git@github.com:owner/repo.git", "git@github.com:owner/repo.git", []),
    ("user:pw@host:path", "user@host:path", ["pw"]),
    ("https://host/x.git", "https://host/x.git", []),
    ("https://host/x?a=b@c", "https://host/x?a=b@c", []),
    ("/srv/git/x.git", "/srv/git/x.git", []),
    ("file:///srv/x.git", "file:///srv/x.git", []),
])
def test_redact_url_and_url_secrets(url, shown, secrets):
    assert redact_url(url) == shown
    assert url_secrets(url) == secrets


def test_redact_url_keeps_none():
    assert redact_url(None) is None and url_secrets(None) == []


@pytest.mark.parametrize(("text", "gone", "kept"), [
    ("push to https://user:p@ss-X@h/x.git failed", "p@ss-X", "https://h/x.git failed"),
    ("see http://TOKEN-X@h:8/y and more", "TOKEN-X", "http://h:8/y and more"),
    ("ssh://git:PW-X@h/x refused", "PW-X", "ssh://git@h/x refused"),
    ("the value s3cret-value leaked", "s3cret-value", "the value REDACTED leaked"),
    ("headers={'Authorization': 'Bearer sk-123456'}", "sk-123456", "Bearer REDACTED"),
])
def test_redact_text(text, gone, kept):
    clean = redact(text, ["s3cret-value"])
    assert gone not in clean and kept in clean


def test_redact_replaces_the_longest_secret_first():
    assert redact("key=abcdef-long", ["abcd", "abcdef-long"]) == "key=REDACTED"


def test_log_filters_scrub_message_arguments_and_tracebacks():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("https://TOK-X@h/x",), None)
    try:
        raise ValueError("inner VALUE-X")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    SecretFilter(["VALUE-X"]).filter(record)
    assert record.getMessage().startswith("failed https://h/x") and "VALUE-X" not in record.getMessage()
    query = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1, "%s", ("/b?sig=abc",), None)
    QueryFilter().filter(query)
    assert query.getMessage() == "/b?<redacted>"


def test_settings_list_every_secret_once():
    settings = Settings(relay_server_url="https://relay-user:RELAY-PW@relay.example", relay_server_api_key="KEY-1",
                        webhook_secret="HOOK-2", ssh_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\n"
                        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----\n",
                        https_username="bot", https_password="PASS-3")
    secrets = settings.secrets
    for value in ("KEY-1", "HOOK-2", "PASS-3", "RELAY-PW", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU"):
        assert value in secrets
    assert "bot" not in secrets  # with a password the user name is an account name
    assert "TOKEN-4" in Settings(https_username="TOKEN-4").secrets  # alone, it is the token
    text = repr(settings) + str(settings.log_safe())
    assert not any(value in text for value in ("PASS-3", "bot", "RELAY-PW"))


def test_https_credentials_come_from_the_environment_through_config():
    settings = settings_from_env({"GIT_HTTPS_USERNAME": "bot", "GIT_HTTPS_PASSWORD": "PASS-5"})
    assert settings.remote_env == {"GIT_HTTPS_USERNAME": "bot", "GIT_HTTPS_PASSWORD": "PASS-5"}
    assert "PASS-5" in settings.secrets


def test_connector_urls_carry_their_own_secrets_and_never_show_them():
    conn = Connector("r", "f", url="https://user:URL-PW@host/x.git")
    config = ConnectorsConfig((conn, Connector("r", "g", url="https://TOKEN-6@host/y.git")))
    assert config.secrets == ("URL-PW", "TOKEN-6")
    assert "URL-PW" not in repr(conn) and "https://host/x.git" in repr(conn)
