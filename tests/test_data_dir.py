"""Parley.open keeps the data dir private even in a process with a loose umask (SPEC 13)."""
import os
import stat

from server import Config, Parley


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_open_makes_the_data_dir_and_the_store_private(io_loop, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "parley.db").touch()
    (data_dir / "parley.db").chmod(0o644)  # as an older Parley left them
    old = os.umask(0o022)
    try:
        fresh = Parley(Config(data_dir=tmp_path / "fresh" / "data", demo_delay_ms=0))
        io_loop.run_sync(fresh.open)
        io_loop.run_sync(fresh.close)
        server = Parley(Config(data_dir=data_dir, demo_delay_ms=0))
        io_loop.run_sync(server.open)
        io_loop.run_sync(server.close)
    finally:
        os.umask(old)
    assert mode(tmp_path / "fresh" / "data") == 0o700
    assert mode(tmp_path / "fresh" / "data" / "parley.db") == 0o600
    assert mode(data_dir) == 0o700
    for name in ("parley.db", "parley.db-wal", "parley.db-shm"):
        if (data_dir / name).exists():
            assert mode(data_dir / name) == 0o600, name
