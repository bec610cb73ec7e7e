import re
from dataclasses import fields
from pathlib import Path

import pytest

from bench.procs import BENCH_CONFIG
from config import FILE, SETTINGS, TABLES, Config, check_main, parse_config, redacted, store_kind
from tests.process.test_admin_cli import plans_config
from tests.process.test_agent_ids import CONFIG as AGENT_IDS_CONFIG

ROOT = Path(__file__).resolve().parents[1]


def test_defaults():
    cfg = parse_config([], environ={})
    assert cfg.host == "127.0.0.1" and cfg.port == 8090 and cfg.data_dir == Path("./data")
    assert cfg.internal_key is None and cfg.jwks == [] and cfg.jwt_audience == "authenticated"
    assert cfg.drain_timeout == 30.0 and cfg.demo_delay_ms == 15.0


def test_flags_beat_environment_beat_file(tmp_path):
    toml = tmp_path / "parley.toml"
    toml.write_text(
        'port = 7000\ninternal_key = "from-file"\ndrain-timeout = 5\njwks = ["a.json", "b.json"]\n'
        '[llm.local]\nbase_url = "http://127.0.0.1:11434/v1"\nmodel = "llama3.2"\n'
    )
    env = {"PARLEY_INTERNAL_KEY": "from-env", "PARLEY_CORS_ORIGIN": "https://a.example, https://*.b.example"}
    cfg = parse_config(["--config", str(toml), "--port", "7001"], environ=env)
    assert cfg.port == 7001
    assert cfg.internal_key == "from-env"
    assert cfg.drain_timeout == 5.0
    assert cfg.jwks == ["a.json", "b.json"]
    assert cfg.cors_origin == ["https://a.example", "https://*.b.example"]
    assert cfg.extra["llm"]["local"]["model"] == "llama3.2"
    cfg = parse_config(["--config", str(toml)], environ={})
    assert cfg.port == 7000 and cfg.internal_key == "from-file"


def test_repeatable_flags_and_config_from_environment(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("demo_delay_ms = 0\n")
    cfg = parse_config(["--jwks", "x.json", "--jwks", "https://id.example/jwks"], environ={"PARLEY_CONFIG": str(toml)})
    assert cfg.jwks == ["x.json", "https://id.example/jwks"]
    assert cfg.demo_delay_ms == 0


def test_bad_values_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--port", "eighty"], environ={})
    with pytest.raises(SystemExit):
        parse_config(["--log-format", "xml"], environ={})


def test_trust_flag_defaults():
    cfg = parse_config([], environ={})
    assert cfg.dev is False and cfg.public_url is None
    assert cfg.allowed_host == [] and cfg.trusted_proxy == []
    assert cfg.max_streams_per_user == 100


def test_trust_flags_from_flags_environment_and_file(tmp_path):
    cfg = parse_config(["--dev", "--public-url", "https://Chat.Example.com/", "--allowed-host", "a.example",
                        "--allowed-host", "b.example", "--trusted-proxy", "127.0.0.1/32",
                        "--trusted-proxy", "10.0.0.0/8"], environ={})
    assert cfg.dev is True and cfg.public_url == "https://chat.example.com"
    assert cfg.allowed_host == ["a.example", "b.example"] and cfg.trusted_proxy == ["127.0.0.1/32", "10.0.0.0/8"]
    env = {"PARLEY_DEV": "1", "PARLEY_PUBLIC_URL": "http://parley.lan:8090/chat/", "PARLEY_ALLOWED_HOST": "x, y",
           "PARLEY_TRUSTED_PROXY": "::1,192.168.0.0/16"}
    cfg = parse_config([], environ=env)
    assert cfg.dev is True and cfg.public_url == "http://parley.lan:8090/chat"
    assert cfg.allowed_host == ["x", "y"] and cfg.trusted_proxy == ["::1", "192.168.0.0/16"]
    assert parse_config([], environ={"PARLEY_DEV": "false"}).dev is False
    assert parse_config(["--dev"], environ={"PARLEY_DEV": "0"}).dev is True  # the flag wins
    toml = tmp_path / "p.toml"
    toml.write_text('dev = true\npublic_url = "https://chat.example.com"\nallowed_host = ["chat.example.com"]\n')
    cfg = parse_config(["--config", str(toml)], environ={})
    assert cfg.dev is True and cfg.allowed_host == ["chat.example.com"]
    assert parse_config(["--config", str(toml)], environ={"PARLEY_DEV": "no"}).dev is False


@pytest.mark.parametrize("argv,environ", [
    (["--trusted-proxy", "not-a-network"], {}),
    (["--trusted-proxy", "10.0.0.0/33"], {}),
    ([], {"PARLEY_TRUSTED_PROXY": "127.0.0.1/8,junk"}),
    (["--public-url", "ftp://chat.example.com"], {}),
    (["--public-url", "chat.example.com"], {}),
    (["--public-url", "https://user@chat.example.com"], {}),
    (["--public-url", "https://chat.example.com:port"], {}),
    ([], {"PARLEY_DEV": "maybe"}),
])
def test_bad_trust_values_are_refused(argv, environ):
    with pytest.raises(SystemExit):
        parse_config(argv, environ=environ)


def test_help_documents_the_trust_flags(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--help"], environ={})
    out = capsys.readouterr().out
    for flag in ("--dev", "--public-url", "--allowed-host", "--trusted-proxy", "PARLEY_TRUSTED_PROXY", "PARLEY_DEV"):
        assert flag in out, flag


def test_the_store_from_flag_environment_and_the_file_s_store_table(tmp_path):
    url = "postgresql://parley:pw@db.lan:5432/parley"
    assert parse_config([], environ={}).store == "sqlite"
    assert parse_config(["--store", url], environ={}).store == url
    assert parse_config([], environ={"PARLEY_STORE": url}).store == url
    toml = tmp_path / "p.toml"
    toml.write_text(f'[store]\nurl = "{url}"\n')
    cfg = parse_config(["--config", str(toml)], environ={})
    assert cfg.store == url and "store" not in cfg.extra
    assert store_kind(url) == "postgresql" and store_kind("postgres://h/db") == "postgresql"
    assert store_kind("sqlite") == "sqlite" and store_kind("mysql://h/db") is None


def test_a_bad_store_is_refused_without_its_password(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(["--store", "mysql://root:hunter2@h/db"], environ={})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--store: expected sqlite or a postgresql:// URL, got 'mysql://root:***@h/db'" in err
    assert "hunter2" not in err
    assert redacted("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redacted("postgresql://h/d") == "postgresql://h/d"


def test_workers_and_lease(capsys):
    url = "postgresql://h/d"
    cfg = parse_config(["--store", url, "--workers", "3", "--lease-s", "3"], environ={})
    assert cfg.workers == 3 and cfg.lease_s == 3.0
    assert parse_config([], environ={"PARLEY_WORKERS": "2", "PARLEY_STORE": url}).workers == 2
    for argv, message in ((["--store", url, "--workers", "0"], '--workers: expected an integer, at least 1, got "0"'),
                          (["--store", url, "--lease-s", "0.5"], '--lease-s: expected a number of seconds, at least 1, got "0.5"'),
                          (["--workers", "2"], "--workers: more than one needs the PostgreSQL store")):
        with pytest.raises(SystemExit) as exc:
            parse_config(argv, environ={})
        assert exc.value.code == 2 and message in capsys.readouterr().err, argv


# -- the schema: every problem of the file, the environment and the flags, at once ---------------------------------

def problems(capsys, argv, environ=None):
    """The lines a start with `argv` refuses with (exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        parse_config(argv, environ=environ or {})
    assert exc.value.code == 2
    return [line.removeprefix("server.py: error: ") for line in capsys.readouterr().err.splitlines()]


def toml_file(tmp_path, text):
    path = tmp_path / "parley.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, problem", [
    ('[smpt]\nhost = "mail.example.com"\n', "[smpt]: unknown table; did you mean [smtp]?"),
    ('[smtp]\nhots = "mail.example.com"\nport = 25\n', "[smtp] hots: unknown key; did you mean host?\n"
                                                     "[smtp] host: missing (expected a non-empty string)"),
    ('[smtp]\nhost = "h"\nport = "25a"\n', '[smtp] port: expected an integer from 1 to 65535, got "25a"'),
    ('[llm.local]\nbase_url = "http://127.0.0.1:11434/v1"\nmodel = "m"\nmodle = "m"\n',
     "[llm.local] modle: unknown key; did you mean model?"),
    ('[llm.local]\nbase_url = "127.0.0.1:11434"\nmodel = "m"\n',
     '[llm.local] base_url: expected an http(s) URL such as https://host.example, got "127.0.0.1:11434"'),
    ('[[agents]]\nid = "a"\ntype = "demo"\n[[agents]]\nid = "b"\ntype = "demo"\ncolour = "red"\n',
     "[[agents]] #2 colour: unknown key (known: description, id, instructions, llm, max_steps, name, tools, type)"),
    ('[[agents]]\nid = "a"\ntools = "clock"\n', '[[agents]] #1 tools: expected an array, each a non-empty string, got "clock"'),
    ('log_level = "verbose"\n', 'log_level: expected one of debug, info, warning, error, got "verbose"'),
    ("log-level = 3\n", "log-level: expected one of debug, info, warning, error, got 3"),
    ("drain_timeout = -1\n", "drain_timeout: expected a number of seconds, at least 0, got -1"),
    ("keepalive_s = 0\n", "keepalive_s: expected a number of seconds, above 0, got 0"),
    ('public_url = "chat.example.com"\n', 'public_url: expected an http(s) URL such as https://host.example, got "chat.example.com"'),
    ('port = 8090.5\n', "port: expected an integer from 0 to 65535, got 8090.5"),
    ('dev = "yes"\n', 'dev: expected true or false, got "yes"'),
    ('jwks = "https://id.example/jwks"\n', 'jwks: expected an array, each a non-empty string, got "https://id.example/jwks"'),
    ('[store]\nurl = 5\n', "[store] url: expected a non-empty string, got 5"),
    ('[mcp_servers]\nname = "x"\n', "[mcp_servers]: expected an array of tables, got a table"),
    ('config = "other.toml"\n', "config: no longer read: a config file names no other; give it with --config or PARLEY_CONFIG"),
])
def test_a_bad_file_stops_the_start_naming_the_file_the_key_and_what_was_expected(tmp_path, capsys, text, problem):
    path = toml_file(tmp_path, text)
    expected = [f"{path}: {line}" for line in problem.splitlines()]
    assert problems(capsys, ["--config", path]) == expected
    assert problems(capsys, [], {"PARLEY_CONFIG": path}) == expected  # the file named by the environment


def test_every_problem_is_reported_not_only_the_first(tmp_path, capsys):
    path = toml_file(tmp_path, 'log_level = "loud"\nworkers = 0\n[smpt]\nhost = "h"\n[demo]\nmax_count = -1\n'
                               '[[agents]]\nid = ""\n')
    assert problems(capsys, ["--config", path, "--port", "x"], {"PARLEY_IDLE_TIMEOUT": "-5"}) == [
        f'{path}: log_level: expected one of debug, info, warning, error, got "loud"',
        f"{path}: workers: expected an integer, at least 1, got 0",
        f"{path}: [smpt]: unknown table; did you mean [smtp]?",
        f"{path}: [demo] max_count: expected an integer, at least 0, got -1",
        f'{path}: [[agents]] #1 id: expected a non-empty string, got ""',
        '--port: expected an integer from 0 to 65535, got "x"',
        "PARLEY_IDLE_TIMEOUT: expected a number of seconds, above 0, got \"-5\"",
    ]


@pytest.mark.parametrize("environ, problem", [
    ({"PARLEY_LOG_LEVEL": "verbose"}, 'PARLEY_LOG_LEVEL: expected one of debug, info, warning, error, got "verbose"'),
    ({"PARLEY_LOG_FORMAT": "xml"}, 'PARLEY_LOG_FORMAT: expected one of text, json, got "xml"'),
    ({"PARLEY_PORT": "25a"}, 'PARLEY_PORT: expected an integer from 0 to 65535, got "25a"'),
    ({"PARLEY_DRAIN_TIMEOUT": "-1"}, 'PARLEY_DRAIN_TIMEOUT: expected a number of seconds, at least 0, got "-1"'),
    ({"PARLEY_LEASE_S": "nan"}, 'PARLEY_LEASE_S: expected a number of seconds, at least 1, got "nan"'),
    ({"PARLEY_PUBLIC_URL": "ftp://x"}, 'PARLEY_PUBLIC_URL: expected an http(s) URL such as https://host.example, got "ftp://x"'),
])
def test_the_environment_is_checked_the_same_way(capsys, environ, problem):
    assert problems(capsys, [], environ) == [problem]


def test_log_levels_in_any_case_and_the_file_s_settings_typed(tmp_path):
    assert parse_config([], environ={"PARLEY_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    cfg = parse_config(["--config", toml_file(tmp_path, 'log_level = "Warning"\nkeepalive_s = 5\ndata_dir = "d"\n')], environ={})
    assert cfg.log_level == "warning" and cfg.keepalive_s == 5.0 and isinstance(cfg.keepalive_s, float)
    assert cfg.data_dir == Path("d")


def test_an_unreadable_or_broken_file_is_a_problem_too(tmp_path, capsys):
    missing = str(tmp_path / "nope.toml")
    assert problems(capsys, ["--config", missing]) == [f"{missing}: cannot be read: No such file or directory"]
    broken = toml_file(tmp_path, "port = \n")
    [problem] = problems(capsys, ["--config", broken])
    assert problem.startswith(f"{broken}: not valid TOML: ")


def test_every_setting_is_a_known_key_of_the_file():
    assert set(SETTINGS) == {f.name for f in fields(Config)} - {"extra"}
    assert FILE.fields.keys() == SETTINGS.keys() | TABLES.keys() | {"config"}


# -- parley check-config FILE --------------------------------------------------------------------------------------

def test_check_config_prints_every_problem_or_ok(tmp_path, capsys):
    bad = toml_file(tmp_path, '[smtp]\nhost = "h"\nport = "25a"\nstarttls = "yes"\n')
    assert check_main([bad]) == 2
    out = capsys.readouterr()
    assert out.err.splitlines() == [f'{bad}: [smtp] port: expected an integer from 1 to 65535, got "25a"',
                                    f'{bad}: [smtp] starttls: expected true or false, got "yes"'] and out.out == ""
    good = tmp_path / "good.toml"
    good.write_text('[smtp]\nhost = "h"\nport = 587\n')
    assert check_main([str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"


def test_check_config_reads_the_file_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PARLEY_LOG_LEVEL", "loud")  # not the file's: not its problem
    good = toml_file(tmp_path, "port = 8091\n")
    assert check_main([good]) == 0


def toml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", markdown, re.S)


def test_every_sample_config_in_the_repo_passes(tmp_path, capsys):
    samples = {f"README.md #{i + 1}": text for i, text in enumerate(toml_blocks((ROOT / "README.md").read_text()))}
    assert len(samples) >= 5
    samples["all of README.md"] = "\n".join(samples.values())  # they make one parley.toml together
    samples["bench/procs.py BENCH_CONFIG"] = BENCH_CONFIG
    samples["tests/process/test_agent_ids.py"] = AGENT_IDS_CONFIG
    samples["tests/process/test_admin_cli.py"] = Path(plans_config(tmp_path)).read_text()
    for name, text in samples.items():
        path = tmp_path / "sample.toml"
        path.write_text(text)
        assert check_main([str(path)]) == 0, (name, capsys.readouterr().err)
