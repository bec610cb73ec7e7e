from pathlib import Path

import pytest

from config import parse_config, redacted, store_kind


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
    for argv, message in ((["--store", url, "--workers", "0"], '--workers: expected an integer, at least 1, got 0'),
                          (["--store", url, "--lease-s", "0.5"], '--lease-s: expected a number of seconds, at least 1, got 0.5'),
                          (["--workers", "2"], "--workers: more than one needs the PostgreSQL store")):
        with pytest.raises(SystemExit) as exc:
            parse_config(argv, environ={})
        assert exc.value.code == 2 and message in capsys.readouterr().err, argv
