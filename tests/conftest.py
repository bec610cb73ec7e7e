from __future__ import annotations

import pytest

from server import Config, Parley
from tests.helpers import INTERNAL_KEY, Client


@pytest.fixture
def parley_config(tmp_path):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0)


@pytest.fixture
def parley(io_loop, parley_config):
    server = Parley(parley_config)
    io_loop.run_sync(server.open)
    yield server
    io_loop.run_sync(server.close)


@pytest.fixture
def app(parley):
    return parley.app


@pytest.fixture
def alice(http_server_client):
    return Client(http_server_client, "alice")


@pytest.fixture
def bob(http_server_client):
    return Client(http_server_client, "bob")


@pytest.fixture(scope="session")
def pg_cluster():
    """One PostgreSQL server for the whole session (tests/pg.py)."""
    from tests.pg import start_cluster

    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh database holding Parley's schema, for one test."""
    return pg_cluster.new_database()
