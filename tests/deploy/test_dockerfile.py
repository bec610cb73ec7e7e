"""The Dockerfile (issue 13, item 7): what it promises is read from the file itself, and its
HEALTHCHECK command is run as it is against a real Parley process.

No image is built here (this machine has no Docker daemon, and the base image is not reachable);
the wheel that its `pip install .` builds is built here from the same build context."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.deploy.conftest import flags_of
from tests.pg import free_port
from tests.process.proc import ROOT, wait_until


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return [(word.upper(), rest.strip()) for word, _, rest in (s.partition(" ") for s in logical)]


DOCKERFILE = instructions((ROOT / "Dockerfile").read_text())


def final_stage() -> list[tuple[str, str]]:
    starts = [n for n, (word, _) in enumerate(DOCKERFILE) if word == "FROM"]
    return DOCKERFILE[starts[-1]:]


def the(word: str) -> str:
    """The arguments of the final stage's last `word` instruction (the one that counts)."""
    found = [args for w, args in final_stage() if w == word]
    assert found, f"the final stage has no {word}"
    return found[-1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's command, its options (--interval=…) set aside."""
    words = the("HEALTHCHECK")
    options, _, command = words.partition("CMD ")
    assert all(o.startswith("--") for o in shlex.split(options)), options
    return exec_form(command)


def test_every_stage_is_a_slim_official_python_image():
    bases = [args.split()[0] for word, args in DOCKERFILE if word == "FROM"]
    assert bases and all(b in ("python:3.12-slim", "python:3.13-slim") for b in bases), bases


def test_the_server_runs_as_an_unprivileged_user_on_a_data_volume():
    user = the("USER").split(":")[0]
    assert user not in ("root", "0", ""), user
    volume = the("VOLUME")
    assert (json.loads(volume) if volume.startswith("[") else volume.split()) == ["/data"], volume
    assert the("EXPOSE").split() == ["8090"]
    # the user and the volume's owner are made before USER, in the final stage
    stage = final_stage()
    made = [args for word, args in stage[:stage.index(("USER", the("USER")))] if word == "RUN"]
    assert any("useradd" in r and user in r and "chown" in r and "/data" in r for r in made), made


def test_a_stop_is_the_drain_signal_and_the_command_serves_every_address_on_the_volume(server_flags):
    assert the("STOPSIGNAL") == "SIGTERM"
    command = exec_form(the("CMD"))
    assert command[:2] == ["parley", "serve"], command
    flags = flags_of(command)
    assert flags["--host"] == "0.0.0.0" and flags["--data-dir"] == "/data", flags
    assert not set(flags) - server_flags, set(flags) - server_flags


def test_the_build_context_leaves_out_what_is_local():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "node_modules", "data", ".git"} <= ignored, ignored
    # what `pip install .` reads stays in
    assert not ignored & {"setup.cfg", "pyproject.toml", "README.md", "static", "store", "server.py"}


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command as it stands, with this interpreter as the image's `python`
    and PARLEY_PORT set as a container started with `-e PARLEY_PORT=…` would have it."""
    command = healthcheck_command()
    assert command[0] == "python", command
    env = {**os.environ, "PARLEY_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)


def test_the_healthcheck_passes_on_a_healthy_server_and_fails_on_a_dead_port_or_a_draining_one(start_server):
    server = start_server(drain_timeout=2)
    ok = run_healthcheck(server.port)
    assert ok.returncode == 0, ok.stderr

    dead = run_healthcheck(free_port())  # bound and closed: nothing listens there
    assert dead.returncode != 0 and "Connection refused" in dead.stderr, dead.stderr

    # draining (SIGTERM with a run in flight): /health answers 503, so the container is unhealthy
    task = server.start_task("t-drain", "/sleep 30")  # outlasts the drain: ended at its timeout
    server.wait_status(task, ("running",))
    server.signal(signal.SIGTERM)
    wait_until(lambda: server.request("GET", "/health", auth=False).status == 503, 5, "/health → 503")
    draining = run_healthcheck(server.port)
    assert draining.returncode != 0 and "503" in draining.stderr, draining.stderr
    assert server.wait_exit(15) == 0


def ignored_by_docker(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out (.dockerignore: patterns from the context's
    root, `*` within a name, `**` across names; a left-out directory leaves out all it holds)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pattern in patterns:
        regex = "".join(".*" if tok == "**/" or tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?"
                        else re.escape(tok) for tok in re.findall(r"\*\*/?|\*|\?|[^*?]+", pattern.strip("/")))
        if any(re.fullmatch(regex, p) for p in prefixes):
            return True
    return False


def build_wheels(sources: list[Path]) -> list[set[str]]:
    """The files of the wheel built from each source by the build backend that pyproject.toml
    names (the hook `pip install .` calls; this venv's setuptools, nothing downloaded), side by side."""
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["build-backend"]
    hook = f"import sys; from {backend} import build_wheel; build_wheel(sys.argv[1])"
    builds = [subprocess.Popen([sys.executable, "-c", hook, str(src) + "-wheel"], cwd=src,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for src in sources]
    found: list[set[str]] = []
    for src, build in zip(sources, builds, strict=True):
        _, err = build.communicate(timeout=300)
        assert build.returncode == 0, err.decode(errors="replace")[-3000:]
        (wheel,) = Path(str(src) + "-wheel").glob("parley-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            found.append({n for n in zf.namelist() if ".dist-info/" not in n})
    return found


def test_the_wheel_built_from_the_build_context_is_the_checkouts(tmp_path):
    """`pip install .` in the image sees only what .dockerignore lets through: built from that
    context, the wheel holds every file the wheel of the whole checkout holds."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "no exceptions: the matcher here has none"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    assert ignored_by_docker("node_modules/x/y.js", patterns) and ignored_by_docker("store/__pycache__/a.pyc", patterns)
    for name, keep in (("checkout", lambda p: True), ("context", lambda p: not ignored_by_docker(p, patterns))):
        for path in filter(keep, tracked):
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, tmp_path / name / path)
    whole, context = build_wheels([tmp_path / "checkout", tmp_path / "context"])
    assert "server.py" in whole and any(n.startswith("store/migrations/") for n in whole), sorted(whole)
    assert context == whole, (whole - context, context - whole)
