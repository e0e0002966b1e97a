"""Layering rules of the package (docs/architecture.md), checked on the source itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gitsync"
PURE = ["ids.py", "ydoc.py", "ycheck.py", "plan.py", "yframes.py", "authors.py"]
IO_LIBRARIES = {"flask", "requests", "dulwich", "paramiko", "urllib3", "werkzeug", "gunicorn"}
# Modules of the package allowed to read os.environ (cli.py: the command line, as at the top level).
ENVIRON_ALLOWED = {"config.py", "cli.py"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_do_no_io(name):
    assert imported_roots(PACKAGE / name) & IO_LIBRARIES == set()


def test_environment_is_read_only_at_the_edges():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ENVIRON_ALLOWED:
            continue
        if re.search(r"os\.environ|os\.getenv", path.read_text()):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_only_cli_tests_import_cli():
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "tests").parts[:1]:
            continue
        if "cli" in imported_roots(path) or "gitsync.cli" in imported_modules(path):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_product_modules_do_not_import_the_cli():
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if p.name not in ("cli.py", "__main__.py")
                 and imported_modules(p) & {"gitsync.cli", "cli"}]
    assert offenders == []


def test_no_porcelain_on_the_commit_path():
    source = (PACKAGE / "gitrepo.py").read_text()
    assert not re.search(r"porcelain\.(add|commit|status)\(", source)


def test_no_subprocess_in_the_package():
    for path in PACKAGE.rglob("*.py"):
        assert "subprocess" not in imported_roots(path), path


def test_docs_page_uses_no_cdn():
    for path in PACKAGE.rglob("*"):
        if path.suffix in {".py", ".html"}:
            assert not re.search(r"cdn\.jsdelivr|unpkg\.com|cdnjs", path.read_text()), path


def test_product_modules_do_not_import_the_dev_tools():
    """The stand-in and the demo are development tools: only the command line reaches them."""
    pattern = re.compile(r"^\s*(from\s+(gitsync)?\.*dev(\.|\s)|import\s+gitsync\.dev\b)", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")
                 if "dev" not in p.relative_to(PACKAGE).parts[:1]
                 and p.name not in ("cli.py", "__main__.py") and pattern.search(p.read_text())]
    assert offenders == []
