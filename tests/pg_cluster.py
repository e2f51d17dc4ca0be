"""A PostgreSQL server for the tests, and a fresh schema per test.

- ``RIVERBED_TEST_PG_URL`` set (``postgresql://user@host:port/db``): tests use that server.
- Otherwise, if PostgreSQL's binaries are installed (Debian: ``apt-get install
  postgresql``), a private cluster is started with ``scripts/pg-test-cluster`` in a
  temporary directory on a free loopback port, once per test session, and stopped at the
  end.
- Otherwise the PostgreSQL tests are skipped, saying why.

Tests that crash the server itself use ``pg_control``: the session's private cluster (its
data directory and port, to stop and start it), or None with the reason when the server is
an external one, which a test must not stop.

Test modules import the fixtures they use (``from pg_cluster import pg_server, pg_url``):
the tests have no ``conftest`` plugin for them. ``pg_url`` is the server's URL with a
``?schema=`` of its own, dropped after the test, so tests never see each other's rows.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ENV = "RIVERBED_TEST_PG_URL"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pg-test-cluster"

__all__ = [
    "ENV",
    "binaries",
    "cluster",
    "ServerControl",
    "drop_schema",
    "pg_control",
    "pg_server",
    "pg_url",
    "private_cluster",
    "with_schema",
]


class _Cluster:
    """The private cluster, shared by every module that uses the fixture."""

    def __init__(self) -> None:
        self.users = 0
        self.url: str | None = None
        self.directory: str | None = None
        self.port: int | None = None

    def acquire(self) -> str:
        if self.url is None:
            self.url = self._start()
        self.users += 1
        return self.url

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.stop()

    def _start(self) -> str:
        if importlib.util.find_spec("asyncpg") is None:
            pytest.skip("PostgreSQL tests need asyncpg: pip install 'riverbed[postgres]'")
        given = os.environ.get(ENV)
        if given:
            return given
        if not binaries():
            pytest.skip(
                f"PostgreSQL tests need a server: set {ENV}=postgresql://user@host:port/db, "
                "or install PostgreSQL's binaries (apt-get install postgresql) so that the "
                "tests start a private cluster"
            )
        self.directory = new_directory()
        self.port = _free_port()
        atexit.register(self.stop)
        try:
            return cluster("start", self.directory, str(self.port))
        except RuntimeError as exc:
            self.stop()
            pytest.fail(str(exc))

    def stop(self) -> None:
        directory, self.directory = self.directory, None
        self.url = self.port = None
        if directory is None:
            return
        subprocess.run([str(SCRIPT), "stop", directory], capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def new_directory() -> str:
    """A directory for a cluster, that the ``postgres`` user may enter when we are root."""
    directory = tempfile.mkdtemp(prefix="riverbed-pg-")
    os.chmod(directory, 0o755)
    return directory


def cluster(*args: str) -> str:
    """Run ``scripts/pg-test-cluster`` with ``args``; its last line of output (the URL)."""
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/pg-test-cluster {args[0]} failed:\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


@contextlib.contextmanager
def private_cluster() -> Iterator[tuple[str, str, int]]:
    """A cluster of the test's own (one the test may crash or restart): ``(url,
    directory, port)``. Skips when PostgreSQL's binaries are not installed."""
    if not binaries():
        pytest.skip("needs PostgreSQL's binaries (apt-get install postgresql)")
    directory, port = new_directory(), _free_port()
    try:
        yield cluster("start", directory, str(port)), directory, port
    finally:
        subprocess.run([str(SCRIPT), "stop", directory, "immediate"], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


_CLUSTER = _Cluster()


class ServerControl:
    """Stops and starts the session's private cluster (same directory, same port)."""

    def __init__(self, directory: str, port: int) -> None:
        self.directory = directory
        self.port = port

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m MODE``: ``immediate`` is a crash (the next start recovers)."""
        cluster("stop", self.directory, mode)

    def start(self) -> None:
        cluster("start", self.directory, str(self.port))


@pytest.fixture
def pg_control(pg_server: str) -> ServerControl | str:
    """A :class:`ServerControl` of the private cluster, or, for an external server
    (``RIVERBED_TEST_PG_URL``), a string saying why the server may not be stopped."""
    if _CLUSTER.directory is None or _CLUSTER.port is None:
        return (
            f"{ENV} points to an external server ({pg_server.rsplit('@', 1)[-1]}); "
            "the tests do not stop a server they did not start"
        )
    return ServerControl(_CLUSTER.directory, _CLUSTER.port)


def binaries() -> bool:
    if os.environ.get("PG_BINDIR"):
        return True
    if glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        return True
    return shutil.which("pg_config") is not None and shutil.which("initdb") is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema=...`` added to its query string."""
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema and everything in it."""
    import asyncpg

    conn = await asyncpg.connect(url.split("?", 1)[0])
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of the test server (no schema); skips when there is none."""
    url = _CLUSTER.acquire()
    try:
        yield url
    finally:
        _CLUSTER.release()


@pytest.fixture
async def pg_url(pg_server: str) -> AsyncIterator[str]:
    """A URL whose schema is this test's own; the schema is dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield with_schema(pg_server, schema)
    finally:
        await drop_schema(pg_server, schema)
