"""A real PostgreSQL server for the tests: Debian's `initdb` + `pg_ctl` in a temp dir on a free port.

One cluster per test session (started on first use, as the `postgres` user when the tests run as
root, since PostgreSQL refuses to run as root), and a fresh database per test, cloned from a
template that already holds Parley's schema.  `make test` installs Debian's `postgresql` when
it is missing.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

TEMPLATE = "parley_template"


def pg_bin() -> str | None:
    """The directory of the newest installed PostgreSQL's server programs, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running PostgreSQL server: `url(db)` names one of its databases."""

    root: str
    port: int
    bindir: str
    as_postgres: bool
    _names: Any = None

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://parley@127.0.0.1:{self.port}/{dbname}"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def new_database(self) -> str:
        """A new database with Parley's schema (a copy of the template); its URL."""
        import psycopg

        if self._names is None:
            self._names = itertools.count(1)
        name = f"t{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self.run(os.path.join(self.bindir, "pg_ctl"), "-D", os.path.join(self.root, "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (make test installs Debian's postgresql)")
    root = tempfile.mkdtemp(prefix="parley-pg-")
    as_postgres = os.geteuid() == 0
    if as_postgres:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    cluster = Cluster(root, free_port(), bindir, as_postgres)
    data = os.path.join(root, "data")
    cluster.run(os.path.join(bindir, "initdb"), "-D", data, "-U", "parley", "--auth=trust", "-E", "UTF8",
                "--locale=C", "--no-sync")
    options = f"-p {cluster.port} -k {root} -h 127.0.0.1 -c max_connections=300 -c shared_buffers=64MB"
    cluster.run(os.path.join(bindir, "pg_ctl"), "-D", data, "-l", os.path.join(root, "log"), "-w", "-o", options, "start")
    _make_template(cluster)
    return cluster


def _make_template(cluster: Cluster) -> None:
    import psycopg

    from store.postgres import migrate

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(cluster.url(TEMPLATE), autocommit=True) as conn:
        migrate(conn)
