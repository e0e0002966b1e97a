"""The example files in the repository work once their placeholders are filled in."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cli import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "git_connectors.example.toml"
KNOWN_HOSTS = ("[git.example.com]:2222 ssh-ed25519 "
               "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
FILLED = {
    "REPLACE-WITH-A-KNOWN-HOSTS-LINE": KNOWN_HOSTS,
    "REPLACE-WITH-THE-RELAY-ID": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "REPLACE-WITH-THE-SHARED-FOLDER-ID": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "REPLACE-WITH-ANOTHER-SHARED-FOLDER-ID": "0b1f3c9e-8f43-4d6b-9a57-1f0d4c2b7a11",
    "REPLACE-WITH-OWNER": "example",
    "REPLACE-WITH-REPOSITORY": "vault",
}


def private_key_text() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def validate(data_dir: Path, text: str):
    (data_dir / "git_connectors.toml").write_text(text)
    return CliRunner().invoke(cli, ["connectors", "validate", "--data-dir", str(data_dir)],
                              env={"SSH_PRIVATE_KEY": private_key_text()})


def test_every_placeholder_is_known():
    assert set(re.findall(r"REPLACE-[A-Z-]+(?<!-)", EXAMPLE.read_text())) == set(FILLED)


def test_example_as_shipped_is_refused_at_its_first_placeholder(tmp_path):
    result = validate(tmp_path, EXAMPLE.read_text())
    assert result.exit_code == 2
    assert "git_connectors.toml line 27: git_connector[1].shared_folder_id must be a UUID" in result.output


def test_example_with_placeholders_filled_validates(tmp_path):
    text = EXAMPLE.read_text()
    for placeholder, value in FILLED.items():
        text = text.replace(placeholder, value)
    result = validate(tmp_path, text)
    assert result.exit_code == 0, result.output
    assert "1 connector(s), 1 known_hosts line(s): ok" in result.output
    # The commented second connector is valid too once uncommented.
    second = re.sub(r"(?m)^# (\[\[git_connector\]\]|relay_id|shared_folder_id|url)", r"\1", text)
    result = validate(tmp_path, second)
    assert result.exit_code == 0, result.output
    assert "2 connector(s)" in result.output
