"""deploy/parley.service (issue 13, item 7): checked by systemd's own `systemd-analyze verify`,
its stop timeout against the drain it waits for, its flags against the server's, and its
MemoryDenyWriteExecute against a real server whose processes run under the kernel's W^X rule."""
from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from config import Config
from tests.deploy.conftest import DEPLOY, flags_of
from tests.process.test_trust_process import sign_up, upload

UNIT = DEPLOY / "parley.service"
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def unit() -> dict[str, list[tuple[str, str]]]:
    """The unit's sections, each its (key, value) lines in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


SERVICE = dict(unit()["Service"])
EXEC = shlex.split(SERVICE["ExecStart"])


def test_systemd_accepts_the_unit(tmp_path):
    """`systemd-analyze verify` in a root of its own that has the unit, systemd's units and an
    executable at ExecStart's path: any complaint (an unknown key, a bad value) fails the test."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it)")
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    binary = root / EXEC[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/parley.service")
    done = subprocess.run([analyze, "verify", "--man=no", "--generators=no", f"--root={root}",
                           "/etc/systemd/system/parley.service"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


def test_the_stop_timeout_outlasts_the_drain():
    """systemd sends SIGKILL after TimeoutStopSec: it must not cut the drain short (with some
    seconds to spare for the streams' last frames and the store's close)."""
    drain = float(flags_of(EXEC).get("--drain-timeout") or Config().drain_timeout)
    assert SERVICE["KillSignal"] == "SIGTERM"
    assert float(SERVICE["TimeoutStopSec"]) >= drain + 10, (SERVICE["TimeoutStopSec"], drain)


def test_it_serves_the_state_directory_with_flags_parley_has(server_flags):
    assert EXEC[0] == "/opt/parley/venv/bin/parley" and EXEC[1] == "serve", EXEC
    assert not set(flags_of(EXEC)) - server_flags, set(flags_of(EXEC)) - server_flags
    data_dir = "/var/lib/" + SERVICE["StateDirectory"]
    assert flags_of(EXEC)["--data-dir"] == data_dir
    assert data_dir in SERVICE["ReadWritePaths"].split()
    assert SERVICE["User"] not in ("root", "0") and "DynamicUser" not in SERVICE


def test_it_restarts_on_failure_and_is_hardened():
    assert SERVICE["Type"] == "simple" and SERVICE["Restart"] == "on-failure"
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "PrivateDevices": "yes", "SystemCallFilter": "@system-service", "MemoryDenyWriteExecute": "yes"}
    assert {k: SERVICE.get(k) for k in expected} == expected
    assert set(SERVICE["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def mdwe_launcher(tmp_path: Path) -> Path:
    """A `sitecustomize` that puts each Python process it starts in under the kernel's W^X rule
    (prctl PR_SET_MDWE, Linux 6.3+: no mapping may become writable and executable, or executable
    later) and notes its pid and whether the rule was already inherited. Inherited by children,
    so the sandbox workers run under it from their first instruction."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"""
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
_inherited = _libc.prctl({PR_GET_MDWE}, 0, 0, 0, 0)
if _libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    raise SystemExit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
with open({str(tmp_path / "mdwe.log")!r}, "a") as fh:
    fh.write("%d %d\\n" % (os.getpid(), _inherited))
""")
    return site


def mdwe_supported() -> bool:
    """The kernel knows PR_GET_MDWE (asking changes nothing in this process)."""
    return int(ctypes.CDLL(None).prctl(PR_GET_MDWE, 0, 0, 0, 0)) >= 0


def test_parley_and_its_workers_run_with_no_writable_executable_memory(start_server, tmp_path, monkeypatch):
    """What MemoryDenyWriteExecute=yes forbids, the kernel forbids here (PR_SET_MDWE, the same rule
    systemd enforces with seccomp): sign-up (Argon2 through cffi), ES256 tokens (cryptography),
    the calculator's sandbox worker and document extraction's all work, and a violation would
    fail them with EACCES."""
    if not mdwe_supported():
        pytest.skip(f"this kernel has no PR_SET_MDWE ({os.uname().release}; Linux 6.3+)")
    monkeypatch.setenv("PYTHONPATH", str(mdwe_launcher(tmp_path)))
    server = start_server()
    token = sign_up(server, "wx@example.com", "wxuser")
    task = server.start_task("t-wx", "/tool calculator 6*7")
    info = server.wait_status(task, ("completed", "failed"))
    assert info["status"] == "completed", info
    assert "42" in str(server.replay(task).chunks)
    assert upload(server, "/api/documents/upload", {"knowledge_id": "kb"}, "w.md", b"# W^X\n\nwords\n",
                  "text/markdown", token) == 201
    noted = [line.split() for line in (tmp_path / "mdwe.log").read_text().splitlines()]
    pids = {int(pid): inherited for pid, inherited in noted}
    assert pids.get(server.proc.pid) == "0", (server.proc.pid, pids)  # the server set the rule itself
    workers = {pid for pid, inherited in pids.items() if pid != server.proc.pid and inherited == "1"}
    assert len(workers) >= 2, f"the calculator's and the extractor's workers inherited the rule: {pids}"
    assert server.request("GET", "/health").status == 200
