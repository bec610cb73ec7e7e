"""What setup.cfg promises about the dependencies holds.

constraints.txt pins every package that the runtime and test requirements need, and nothing else.

The oldest openai that setup.cfg admits runs every test that talks to the fake OpenAI server: the bound is read from setup.cfg's install_requires, so raising it there tests the new one.
That release goes into .venv/lower-bounds/openai-X/ with `pip install --no-deps --target`,
together with those of its own requirements that .venv does not meet (openai 1.x wants httpx,
where .venv's newer openai has httpx2); the directory is kept, so a rerun needs no registry.
Those tests then run in a pytest of their own with that directory first on PYTHONPATH: the
bound's openai over .venv's, every other package .venv's.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]
CACHE = ROOT / ".venv" / "lower-bounds"


def requirements(section: str, key: str) -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [Requirement(line) for line in cfg[section][key].splitlines() if line.strip()]


def lower_bound(name: str) -> str:
    """The `>=` version of `name` in setup.cfg's install_requires."""
    for req in requirements("options", "install_requires"):
        if canonicalize_name(req.name) == name:
            return next(s.version for s in req.specifier if s.operator == ">=")
    raise LookupError(f"{name} is not in setup.cfg's install_requires")


def needed(roots: list[Requirement]) -> dict[str, str]:
    """Every package the requirements need on this interpreter, transitively, extras included: name -> version."""
    found: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(req, "") for req in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        dist = metadata.distribution(name)
        found[name] = dist.version
        for wanted in ["", *sorted(req.extras)]:
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                todo.extend((Requirement(text), wanted) for text in dist.requires or [])
    return found


def test_constraints_pin_exactly_what_the_requirements_need():
    """constraints.txt (written by `make constraints`, used by make's install step) names every runtime
    and test package with the version installed here, and no package that nothing requires."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            assert [s.operator for s in req.specifier] == ["=="], line
            pins[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    wanted = needed(requirements("options", "install_requires") + requirements("options.extras_require", "test"))
    assert sorted(set(wanted) - set(pins)) == [], "not pinned: run make constraints"
    assert sorted(set(pins) - set(wanted)) == [], "pinned but not required: run make constraints in a .venv made by make"
    assert {name: pins[name] for name in wanted if pins[name] != wanted[name]} == {}, "pinned != installed"


def unmet(target: Path) -> list[str]:
    """The requirements of the packages in `target` that neither it nor this interpreter's path meets."""
    visible: dict[str, str] = {}
    for dist in metadata.distributions(path=[str(target), *sys.path]):  # in path order: the first one imports
        visible.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    missing = []
    for dist in metadata.distributions(path=[str(target)]):
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an extra's, or another platform's
            version = visible.get(canonicalize_name(req.name))
            if version is None or not req.specifier.contains(version, prereleases=True):
                missing.append(f"{req.name}{req.specifier}")
    return sorted(set(missing))


def pip_target(target: Path, *requirements: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--target", str(target), *requirements], check=True, timeout=600)


def installed(name: str, version: str) -> Path:
    """A directory holding `name==version` and what of its requirements .venv lacks (made once)."""
    target = CACHE / f"{name}-{version}"
    if (target / ".complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=CACHE))  # a broken download is never reused
    try:
        pip_target(partial, f"{name}=={version}")
        for _ in range(10):  # a requirement's requirements, and theirs
            missing = unmet(partial)
            if not missing:
                break
            pip_target(partial, *missing)
        assert not unmet(partial), f"still unmet: {unmet(partial)}"
        (partial / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


USES_FAKE_OPENAI = re.compile(r"^from tests\.agents(?: import fake_openai|\.fake_openai import)", re.M)


def llm_test_files() -> list[str]:
    """The test modules that import the fake OpenAI server (the browser tests aside: they need Chromium)."""
    tests = ROOT / "tests"
    return sorted(str(p.relative_to(ROOT)) for p in tests.rglob("test_*.py")
                  if "e2e" not in p.parts and p != Path(__file__) and USES_FAKE_OPENAI.search(p.read_text()))


def test_the_llm_tests_pass_on_the_oldest_openai_allowed():
    version = lower_bound("openai")
    target = installed("openai", version)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PARLEY_TEST_STORES": "sqlite"}  # the client is the same whatever the store
    seen = subprocess.run([sys.executable, "-c", "import openai; print(openai.__version__)"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert seen.stdout.strip() == version, seen.stderr
    files = llm_test_files()
    assert {"tests/agents/test_react.py", "tests/handlers/agent_api/test_transcribe.py"} <= set(files)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", *files], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, f"openai=={version}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
