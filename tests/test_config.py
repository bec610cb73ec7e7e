from pathlib import Path

import pytest

from server import parse_config


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
