"""Fixtures of the process tests: `start_server(data_dir=None, **options)` gives a live `Server`."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.process.proc import Server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(data_dir: Path | None = None, **options: Any) -> Server:
        server = Server(data_dir or tmp_path / "data", tmp_path / f"server-{len(servers)}.log", **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
