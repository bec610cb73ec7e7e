"""`python server.py admin …` through a real process."""
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server.py"


def admin(data_dir, *args, stdin="", env=None):
    head = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return subprocess.run([sys.executable, str(SERVER), "admin", *head, *args],
                          input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def plans_config(tmp_path, text='[plans.pro]\ncredits = 500\nruns_per_day = 50\n'):
    path = tmp_path / "parley.toml"
    path.write_text(text)
    return str(path)


def test_create_and_list_users(tmp_path):
    made = admin(tmp_path, "create-user", "ann@example.com", "ann", "--password-stdin", stdin="correct horse\n")
    assert made.returncode == 0, made.stderr
    listed = admin(tmp_path, "list-users")
    assert listed.returncode == 0 and "ann@example.com" in listed.stdout and "free" in listed.stdout
    planned = admin(tmp_path, "--config", plans_config(tmp_path), "set-plan", "ann@example.com", "pro")
    assert planned.returncode == 0, planned.stderr
    assert "\tpro\t500\t" in admin(tmp_path, "--config", plans_config(tmp_path), "list-users").stdout
    assert "\tfree (pro is not in the config)\t500\t" in admin(tmp_path, "list-users").stdout
    assert admin(tmp_path, "create-user", "ann@example.com", "ann2", "--password-stdin", stdin="another pass\n").returncode != 0
    assert "correct horse" not in made.stdout + made.stderr  # a password is never echoed


def ledger(data_dir, user):
    with sqlite3.connect(data_dir / "parley.db") as db:
        return db.execute("SELECT delta, balance, reason, actor, note FROM credit_ledger WHERE user_id = ? ORDER BY id",
                          (user,)).fetchall()


def test_grant_credits_to_any_user_id_never_below_zero(tmp_path):
    granted = admin(tmp_path, "grant-credits", "kira-sub-1", "5")
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert "taken as a user id" in granted.stdout and "100 -> 105" in granted.stdout
    taken = admin(tmp_path, "grant-credits", "kira-sub-1", "-500")
    assert taken.returncode == 0 and "105 -> 0" in taken.stdout
    rows = ledger(tmp_path, "kira-sub-1")
    assert [(d, b, r, a) for d, b, r, a, _ in rows] == [
        (100, 100, "initial", "system"), (5, 105, "grant", "admin-cli"), (-105, 0, "grant", "admin-cli")]
    assert "asked -500" in rows[-1][4]
    assert admin(tmp_path, "grant-credits", "kira-sub-1", "lots").returncode == 2  # N must be a number


def test_set_plan_applies_to_any_user_and_is_checked_against_the_config(tmp_path):
    config = plans_config(tmp_path)
    unknown = admin(tmp_path, "set-plan", "kira-sub-2", "pro")  # no --config: only the built-in free plan
    assert unknown.returncode == 1 and "no plan 'pro'" in unknown.stdout and "free" in unknown.stdout
    planned = admin(tmp_path, "--config", config, "set-plan", "kira-sub-2", "pro")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "now pro (500 credits)" in planned.stdout  # a user seen for the first time starts with the plan's balance
    after = admin(tmp_path, "set-plan", "kira-sub-2", "pro", "--config", config)  # --config after the command too
    assert after.returncode == 0 and "(500 credits)" in after.stdout
    via_env = admin(tmp_path, "set-plan", "kira-sub-2", "free", env={"PARLEY_CONFIG": config})
    assert via_env.returncode == 0 and "now free (500 credits)" in via_env.stdout  # the balance stays
    with sqlite3.connect(tmp_path / "parley.db") as db:
        assert db.execute("SELECT plan, credits FROM user_plans WHERE user_id = 'kira-sub-2'").fetchone() == ("free", 500)
    assert [r[2] for r in ledger(tmp_path, "kira-sub-2")] == ["initial", "plan", "plan", "plan"]


def test_the_config_file_gives_the_data_dir_and_bad_plans_fail_clearly(tmp_path):
    data = tmp_path / "from-config"
    config = plans_config(tmp_path, f'data_dir = "{data}"\n[plans]\ndefault = "pro"\n[plans.pro]\ncredits = 7\n')
    granted = admin(None, "--config", config, "grant-credits", "u1", "1")
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert "7 -> 8" in granted.stdout and (data / "parley.db").exists()
    bad = plans_config(tmp_path, '[plans.pro]\nruns_per_dya = 3\n')
    refused = admin(tmp_path, "--config", bad, "list-users")
    assert refused.returncode == 2 and "[plans.pro] runs_per_dya: unknown key; did you mean runs_per_day?" in refused.stderr
    missing = admin(tmp_path, "--config", str(tmp_path / "nope.toml"), "list-users")
    assert missing.returncode == 2 and "nope.toml: cannot be read: No such file or directory" in missing.stderr


def test_the_server_refuses_to_start_with_a_bad_plans_config(tmp_path):
    config = plans_config(tmp_path, '[plans]\ndefault = "gold"\n')
    started = subprocess.run([sys.executable, str(SERVER), "--config", config, "--data-dir", str(tmp_path), "--port", "0"],
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert "config: [plans] default = 'gold' names no plan (plans: free)" in started.stderr
