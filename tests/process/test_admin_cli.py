"""`python server.py admin …` through a real process."""
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server.py"


def admin(data_dir, *args, stdin=""):
    return subprocess.run([sys.executable, str(SERVER), "admin", "--data-dir", str(data_dir), *args],
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_create_and_list_users(tmp_path):
    made = admin(tmp_path, "create-user", "ann@example.com", "ann", "--password-stdin", stdin="correct horse\n")
    assert made.returncode == 0, made.stderr
    listed = admin(tmp_path, "list-users")
    assert listed.returncode == 0 and "ann@example.com" in listed.stdout and "free" in listed.stdout
    planned = admin(tmp_path, "set-plan", "ann@example.com", "pro")
    assert planned.returncode == 0, planned.stderr
    assert "pro" in admin(tmp_path, "list-users").stdout
    assert admin(tmp_path, "create-user", "ann@example.com", "ann2", "--password-stdin", stdin="another pass\n").returncode != 0
    assert "correct horse" not in made.stdout + made.stderr  # a password is never echoed
