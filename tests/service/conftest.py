"""A real PostgreSQL server for the service tests, and a storage URL per storage mode.

The server is started once per session from the PostgreSQL binaries on PATH (``initdb``,
``pg_ctl``), on a free loopback port with its unix socket in a temp dir, and stopped at the end.
``initdb`` refuses to run as root, so as root the server runs as the unprivileged user ``nobody``
(owner of the data directory).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

_PG_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in _PG_DIRS:
        p = Path(d) / name
        if p.is_file():
            return str(p)
    raise RuntimeError(f"PostgreSQL binary {name!r} not found (install postgresql-15)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throw-away PostgreSQL cluster: ``url(db)`` is a SQLAlchemy URL, ``create_db()`` a new DB."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="autocomp-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.port = free_port()
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as nobody
            shutil.chown(self.root, "nobody")
            shutil.chown(self.sock, "nobody")
            self._prefix = ["runuser", "-u", "nobody", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        # fsync off: a test server loses nothing it needs on a crash of the machine.
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the whole session."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty PostgreSQL database (``postgresql://...``)."""
    return pg_server.create_db()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path) -> str:
    """Every storage mode: a SQLite file and a PostgreSQL database, each fresh."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("pg_server").create_db()
