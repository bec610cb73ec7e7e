from __future__ import annotations

import os

import pytest

from server import Config, Parley
from store import make_store
from tests.helpers import INTERNAL_KEY, Client


@pytest.fixture
def parley_config(tmp_path):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0)


# The stores every in-process server test runs against (PARLEY_TEST_STORES=sqlite to run one).
STORES = [s for s in os.environ.get("PARLEY_TEST_STORES", "sqlite,postgresql").split(",") if s]


SERVER_FIXTURES = {"parley", "app", "http_server_client", "http_server"}


def pytest_generate_tests(metafunc):
    """Every test of an in-process server runs once per store.  (pytest-tornasync asks for `app`
    by name at run time, which pytest cannot see while collecting: hence this hook.)"""
    if "store" in metafunc.fixturenames or SERVER_FIXTURES & set(metafunc.fixturenames):
        if "store" not in metafunc.fixturenames:
            metafunc.fixturenames.append("store")
        metafunc.parametrize("store", STORES, indirect=True)


@pytest.fixture
def store(request):
    """The store of the test's server: "sqlite", or a fresh PostgreSQL database's URL."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("pg_url")
    return "sqlite"


@pytest.fixture
def open_store(io_loop, tmp_path, store):
    """A store of each kind, open for the test (SQLite in tmp_path, or a fresh PostgreSQL database)."""
    database = make_store(store, tmp_path)
    io_loop.run_sync(database.open)
    yield database
    io_loop.run_sync(database.close)


@pytest.fixture
def parley(io_loop, parley_config, store):
    if parley_config.store == "sqlite":
        parley_config.store = store
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
