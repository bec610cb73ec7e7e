"""A RunManager without HTTP: a real store on the test's temporary directory, a real event hub,
and the test-only agents of tests/runs/harness.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runs.hub import EventHub
from runs.manager import RunManager
from store import Database
from tests.runs.harness import OpenRuns, ScriptedAgents


@pytest.fixture
def scripted() -> ScriptedAgents:
    return ScriptedAgents()


@pytest.fixture
def open_runs(io_loop: Any, tmp_path: Path, scripted: ScriptedAgents) -> Any:
    """Opens a RunManager on the test's store; a second call is the same store after a restart.

    Every manager opened is drained and its store closed at the end of the test.
    """
    opened: list[RunManager] = []

    async def open_one() -> RunManager:
        db = Database(tmp_path / "parley.db")
        await db.open()
        runs = RunManager(db, EventHub(), scripted, demo_delay_ms=0)
        opened.append(runs)
        return runs

    yield open_one

    async def close_all() -> None:
        for runs in opened:
            await runs.drain(0)
            await runs.db.close()

    io_loop.run_sync(close_all)


@pytest.fixture
def runs(io_loop: Any, open_runs: OpenRuns) -> RunManager:
    manager: RunManager = io_loop.run_sync(open_runs)
    return manager
