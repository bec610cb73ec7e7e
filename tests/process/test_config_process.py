"""A bad config file stops `python server.py` before anything starts; `server.py check-config` says the same."""
import subprocess
import sys

from tests.process.proc import ROOT, server_env

SERVER = ROOT / "server.py"


def run(*args):
    return subprocess.run([sys.executable, str(SERVER), *args], capture_output=True, text=True, timeout=60,
                          env=server_env())


def test_a_bad_config_stops_the_start_with_every_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('log_level = "verbose"\n[smpt]\nhost = "mail.example.com"\n')
    started = run("--config", str(bad), "--data-dir", str(tmp_path / "data"), "--port", "0")
    assert started.returncode == 2, started.stdout + started.stderr
    assert started.stderr.splitlines() == [
        f'server.py: error: {bad}: log_level: expected one of debug, info, warning, error, got "verbose"',
        f"server.py: error: {bad}: [smpt]: unknown table; did you mean [smtp]?",
    ]
    assert started.stdout == "" and not (tmp_path / "data").exists()
    checked = run("check-config", str(bad))
    assert checked.returncode == 2 and checked.stderr.splitlines() == [line.removeprefix("server.py: error: ")
                                                                         for line in started.stderr.splitlines()]
    bad.write_text('log_level = "warning"\n[smtp]\nhost = "mail.example.com"\n')
    checked = run("check-config", str(bad))
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, f"{bad}: ok\n", "")
