"""The `parley` command's dispatch (parley.py), as `python server.py` runs it in the checkout.

Serving through it is what every process test does (`server.py --port 0 …`: flags alone serve);
the installed command is tests/process/test_install.py.
"""
import subprocess
import sys
from pathlib import Path

import parley
import server

ROOT = Path(__file__).resolve().parents[1]


def test_one_version(capsys):
    assert parley.main(["--version"]) == 0
    assert capsys.readouterr().out == f"parley {parley.VERSION}\n"
    assert server.VERSION is parley.VERSION
    assert "version = attr: parley.VERSION" in (ROOT / "setup.cfg").read_text()


def test_help_lists_every_command(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["parley"])
    assert parley.main(["--help"]) == 0
    out = capsys.readouterr().out
    for line in ("parley serve [FLAGS]", "parley admin …", "parley backup DEST", "parley check-config FILE",
                 "parley --version", "`parley serve --help`"):
        assert line in out, line


def test_a_word_that_is_no_command_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["parley"])
    assert parley.main(["serv", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "parley: error: no command 'serv'" in err and "parley check-config FILE" in err


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "server.py"), *args], capture_output=True, text=True, timeout=120)


def test_server_py_takes_the_commands():
    assert _script("--version").stdout == f"parley {parley.VERSION}\n"
    flags = _script("serve", "--help")
    assert flags.returncode == 0 and flags.stdout.startswith("usage: server.py [-h] [--host HOST]"), flags.stdout
    assert "--data-dir" in flags.stdout
    admin = _script("admin", "--help")
    assert admin.returncode == 0 and admin.stdout.startswith("usage: server.py admin"), admin.stdout


def test_version_and_help_load_no_server_module():
    """They answer at once: the server's modules (its LLM and MCP clients) take seconds to import."""
    code = "import sys, parley; parley.main(['--version']); parley.main(['--help']); " \
           "print(sorted({'server', 'config', 'agents', 'openai', 'mcp'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr
