"""Fixtures of the deployment-file tests: the flags Parley really has, and real server processes."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.process.conftest import start_server  # noqa: F401  (the process tests' real servers)
from tests.process.proc import ROOT

DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="session")
def server_flags() -> set[str]:
    """Every `--flag` that `python server.py --help` lists (the flags `parley serve` takes)."""
    out = subprocess.run([sys.executable, str(ROOT / "server.py"), "--help"], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out))


def options(command: list[str]) -> list[tuple[str, str | None]]:
    """The `--flag value` and `--flag=value` options of a command line in order (bare flags: None)."""
    found: list[tuple[str, str | None]] = []
    for n, word in enumerate(command):
        if not word.startswith("--"):
            continue
        flag, eq, value = word.partition("=")
        following = command[n + 1] if n + 1 < len(command) else None
        found.append((flag, value if eq else (following if following and not following.startswith("--") else None)))
    return found


def flags_of(command: list[str]) -> dict[str, str | None]:
    """Each flag's value (the last one given, as argparse takes it)."""
    return dict(options(command))
