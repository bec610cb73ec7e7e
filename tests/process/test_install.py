"""`pip install .` as an operator does it: the wheel built from this checkout, installed into a new
virtualenv, serves the page, its files and /health from a directory that is not the checkout.

Offline and fast (about 15 s): the wheel is built without build isolation (setuptools from the test
extra) from a copy of the checkout, so that no build/ left in the checkout leaks into it; the copy's
index.html gets a marker comment, so the page served is known to be the wheel's. The wheel is
installed with --no-deps into a venv made without pip, by this venv's pip (`--python`). Its
dependencies are not downloaded again: a .pth file in the new venv's site-packages appends this
venv's site-packages to its sys.path. That .pth is a plain path line, so the editable install of the
checkout kept there (an import hook that only a .pth of a site directory runs) never runs in the new
venv; `test_imports_come_from_the_new_venv` proves it, or the rest would prove nothing.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from server import VERSION
from tests.process.proc import ROOT, Server

MARKER = "<!-- the page of the wheel built by tests/process/test_install.py -->"
# what the wheel leaves out of a copy of the checkout; __pycache__ and *.egg-info at every level
_NOT_COPIED = {".git", ".venv", "node_modules", "build", "dist", "data", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


@dataclass
class Install:
    wheel: Path
    venv: Path
    away: Path  # a directory outside the checkout to run in

    @property
    def parley(self) -> str:
        return str(self.venv / "bin" / "parley")


def _env() -> dict[str, str]:
    """This environment without what would point Python at the checkout or Parley at a config."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "PYTHON"))}


def _run(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), input=stdin, capture_output=True, text=True, timeout=120)


def _ok(args: list[str], cwd: Path, stdin: str = "") -> str:
    done = _run(args, cwd, stdin)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _ignored(folder: str, names: list[str]) -> set[str]:
    top = _NOT_COPIED if Path(folder) == ROOT else set()
    return {n for n in names if n in top or n == "__pycache__" or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("install")
    source, dist, venv, away = base / "source", base / "dist", base / "venv", base / "away"
    shutil.copytree(ROOT, source, ignore=_ignored)
    page = source / "static" / "index.html"
    page.write_text(page.read_text() + MARKER + "\n")
    pip = [sys.executable, "-m", "pip"]
    _ok([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(source)], base)
    (wheel,) = dist.glob("parley-*.whl")
    _ok([sys.executable, "-m", "venv", "--without-pip", str(venv)], base)
    python = str(venv / "bin" / "python")
    _ok([*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", str(wheel)], base)
    site = Path(_ok([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], base).strip())
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])  # this venv's dependencies
    (site / "parley-test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    away.mkdir()
    return Install(wheel, venv, away)


def test_the_wheel_carries_what_is_read_at_run_time(install: Install) -> None:
    with zipfile.ZipFile(install.wheel) as whl:
        names = set(whl.namelist())
        entry_points = whl.read(f"parley-{VERSION}.dist-info/entry_points.txt").decode()
    served = {p.relative_to(ROOT).as_posix() for p in (ROOT / "static").rglob("*") if p.is_file()}
    migrations = {p.relative_to(ROOT).as_posix() for p in (ROOT / "store").glob("migrations*/*.sql")}
    assert served and served <= names, served - names
    assert {n for n in migrations if "migrations_pg/" in n} and migrations <= names, migrations - names
    assert {"parley.py", "server.py", "config.py", "workers.py", "handlers/page.py", "agents/sandbox.py"} <= names
    assert f"parley-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "parley = parley:main" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "bench/")) or "__pycache__" in n]


def test_imports_come_from_the_new_venv(install: Install) -> None:
    code = "import sys, server, handlers.page as p; print(server.__file__); print(p.STATIC_DIR); print(*sys.path, sep='\\n')"
    server_file, static_dir, *path = _ok([str(install.venv / "bin" / "python"), "-c", code], install.away).splitlines()
    venv = install.venv.resolve()
    assert Path(server_file).resolve().is_relative_to(venv), server_file
    assert Path(static_dir).is_relative_to(venv) and (Path(static_dir) / "index.html").is_file(), static_dir
    dependencies = {Path(sysconfig.get_path("purelib")), Path(sysconfig.get_path("platlib"))}
    leaks = [p for p in path if p and Path(p).resolve().is_relative_to(ROOT) and Path(p) not in dependencies]
    assert not leaks, f"the checkout is importable in the new venv: {leaks}"


def test_parley_serve_from_anywhere(install: Install) -> None:
    data = install.away / "data"
    server = Server(data, install.away / "serve.log", program=[install.parley, "serve"], cwd=install.away)
    try:
        page = server.request("GET", "/ui/", auth=False)
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert MARKER in page.body.decode()  # the wheel's page, not the checkout's
        script = server.request("GET", "/ui/js/app.js", auth=False)
        assert script.status == 200 and "javascript" in script.headers["content-type"]
        assert script.body == (ROOT / "static" / "js" / "app.js").read_bytes()
        health = server.request("GET", "/health", auth=False)
        assert health.status == 200 and health.json() == {"status": "ok"}
        assert server.request("GET", "/", auth=False).json()["version"] == VERSION
        assert (data / "parley.db").is_file()  # the installed migrations ran
    finally:
        server.close()


def test_parley_version_help_and_a_word_that_is_no_command(install: Install) -> None:
    assert _ok([install.parley, "--version"], install.away) == f"parley {VERSION}\n"
    helped = _ok([install.parley, "--help"], install.away)
    for command in ("parley serve [FLAGS]", "parley admin", "parley backup DEST", "parley check-config FILE"):
        assert command in helped, command
    flags = _ok([install.parley, "serve", "--help"], install.away)
    assert flags.startswith("usage: parley [-h] [--host HOST]") and "--data-dir" in flags
    wrong = _run([install.parley, "serv"], install.away)
    assert wrong.returncode == 2 and "parley: error: no command 'serv'" in wrong.stderr


def test_parley_admin(install: Install) -> None:
    data = install.away / "admin-data"
    made = _ok([install.parley, "admin", "--data-dir", str(data), "create-user", "ann@example.com", "ann", "--password-stdin"],
               install.away, stdin="correct horse\n")
    assert "correct horse" not in made
    with sqlite3.connect(data / "parley.db") as db:
        assert db.execute("SELECT username, email_confirmed_at IS NOT NULL FROM users").fetchall() == [("ann", 1)]
