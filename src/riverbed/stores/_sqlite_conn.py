"""SQLite plumbing for :class:`~riverbed.stores.sqlite.SqliteStore`: threads, connections,
migrations and error translation.

One writer thread (``_sqlite_writer``) owns the only writing connection, so writes are
serialized without lock-upgrade deadlocks and the event loop never blocks on disk; writes
that queue up together share one transaction (group commit). Readers use their own
connections on a small thread pool; WAL mode lets them read while the writer writes.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TypeVar

from riverbed.errors import StoreCorruptError, StoreError, StoreLockedError, StoreSchemaError
from riverbed.stores._sqlite_writer import Job, WriterThread, closed_error, run_group

__all__ = ["SqliteConnections", "load_migrations", "split_statements", "translate_error"]

T = TypeVar("T")

_READER_THREADS = 4


def load_migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as ``(version, name, sql)``, oldest first."""
    folder = resources.files("riverbed.stores") / "migrations" / "sqlite"
    found: list[tuple[int, str, str]] = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    # A gap or a duplicate would mean a broken package; fail loudly rather than skip one.
    if versions != list(range(1, len(versions) + 1)):
        raise StoreError(f"riverbed's SQLite migrations are misnumbered: {versions}")
    return found


def split_statements(script: str) -> Iterator[str]:
    """Split a SQL script into statements, respecting strings, comments and triggers."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            buffer = ""
            if statement != ";":
                yield statement


def _error_name(exc: sqlite3.Error) -> str:
    # sqlite_errorname exists from Python 3.11; on 3.10 the message is all there is.
    return str(getattr(exc, "sqlite_errorname", "") or "")


def translate_error(exc: sqlite3.Error, path: Path, doing: str, busy_timeout: float) -> StoreError:
    """A riverbed error for a sqlite3 one, saying what to do; chain the original to it."""
    name, text = _error_name(exc), str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreLockedError(
            f"The database {path} stayed locked by another connection or process for longer "
            f"than busy_timeout={busy_timeout}s while {doing}. Stop the other process (another "
            "riverbed worker, or a tool holding a transaction open) or raise busy_timeout. "
            "Nothing committed was lost."
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (
        "malformed" in text or "not a database" in text
    ):
        return StoreCorruptError(
            f"{path} is damaged, truncated or not a SQLite database ({text}). riverbed did not "
            "modify it. Restore it from a backup, or move it aside and point riverbed at a "
            "new file."
        )
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")) or (
        "unable to open" in text or "readonly" in text
    ):
        return StoreError(
            f"Cannot open or write the database {path} ({text}) while {doing}. Check that the "
            "file and its directory exist and are writable by this process (SQLite also "
            "creates -wal and -shm files beside it)."
        )
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return StoreError(
            f"The disk holding {path} is full ({text}) while {doing}; nothing from this "
            "operation was written. Free some space and retry."
        )
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(
            f"{doing[0].upper()}{doing[1:]} conflicts with rows already in {path} ({text}); "
            "nothing from this operation was written."
        )
    return StoreError(f"SQLite error on {path} while {doing}: {text}")


class SqliteConnections:
    """The writer thread and connection, the reader pool, and the schema on open."""

    def __init__(self, path: Path, synchronous: str, busy_timeout: float) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._writer: WriterThread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def open(self) -> None:
        """Check the path, connect the writer, set the pragmas and migrate."""
        _check_path(self.path)
        self._writer = WriterThread(self._run_group)
        self._readers = ThreadPoolExecutor(_READER_THREADS, "riverbed-sqlite-reader")
        try:
            await self._on_writer(self._open_writer, "opening the database")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every connection and stop the threads; safe to call twice."""
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        if readers is not None:
            await asyncio.to_thread(readers.shutdown, True)
        with self._read_lock:
            conns, self._read_conns = self._read_conns, []
        for conn in conns:
            conn.close()
        if writer is not None:
            await writer.submit(self._close_writer)
            await asyncio.to_thread(writer.stop)

    async def write(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """Run ``fn`` in a ``BEGIN IMMEDIATE`` transaction on the writer thread.

        Writes queued while the writer is busy share one transaction, each in its own
        savepoint (``_sqlite_writer``): this returns once that transaction committed. Any
        exception from ``fn`` rolls back everything ``fn`` did and nothing else. If the
        awaiting task is cancelled once the write has started, it still finishes; like a
        commit over a dropped connection, its outcome is then unknown to the caller, which
        the claim-token fencing makes safe.
        """
        if self._writer is None:
            raise closed_error()
        return await self._writer.submit_transaction(fn, doing)

    async def read(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """Run ``fn`` in one read transaction (a consistent snapshot) on a reader thread."""
        if self._readers is None:
            raise closed_error()
        return await asyncio.wrap_future(self._readers.submit(self._read_in_thread, fn, doing))

    # -- on the writer thread --------------------------------------------------------

    async def _on_writer(self, fn: Callable[[], T], doing: str) -> T:
        if self._writer is None:
            raise closed_error()
        return await self._writer.submit(functools.partial(self._translated, fn, doing))

    def _translated(self, fn: Callable[[], T], doing: str) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path, doing, self.busy_timeout) from exc

    def _run_group(self, jobs: list[Job]) -> None:
        run_group(self._write_conn, jobs, self._translate)

    def _translate(self, exc: BaseException, doing: str) -> BaseException:
        if not isinstance(exc, sqlite3.Error):
            return exc
        error = translate_error(exc, self.path, doing, self.busy_timeout)
        error.__cause__ = exc
        return error

    def _open_writer(self) -> None:
        conn = self._connect()
        try:
            mode = self._wal_mode(conn)
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite could not put {self.path} in WAL mode (it stayed {mode!r}); "
                    "use a file on a local file system."
                )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._write_conn = conn

    def _wal_mode(self, conn: sqlite3.Connection) -> str:
        """Switch ``conn``'s file to WAL. On a new file (not WAL yet) SQLite answers "database
        is locked" at once, without waiting, while another connection holds a lock (two
        processes opening the same new file together): try again until busy_timeout."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)  # on the writer thread, while opening: nothing else waits

    def _close_writer(self) -> None:
        if self._write_conn is not None:
            self._write_conn.close()
            self._write_conn = None

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module must not open transactions on its own;
        # every transaction here is explicit. timeout is SQLite's busy timeout.
        return sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrations = load_migrations()
        newest = migrations[-1][0] if migrations else 0
        # Read and apply under the write lock, so two processes opening a new file at
        # once cannot both apply the same migration.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            _check_version(conn, self.path, current, newest)
            for version, name, sql in migrations[current:]:
                for statement in split_statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO riverbed_migrations (version, name, applied_at) VALUES (?,?,?)",
                    (version, name, time.time()),
                )
                # user_version lives in the file header and is part of the transaction.
                conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- on reader threads -----------------------------------------------------------

    def _read_in_thread(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        try:
            conn = self._reader_conn()
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path, doing, self.busy_timeout) from exc

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._read_lock:
                self._read_conns.append(conn)
        return conn


def _check_path(path: Path) -> None:
    """Fail early, naming the path, when SQLite could not create or write the file."""
    parent = path.parent
    if not parent.exists():
        raise StoreError(
            f"Cannot create the database {path}: the directory {parent} does not exist. "
            "Create it first, or choose another path."
        )
    if not parent.is_dir():
        raise StoreError(f"Cannot create the database {path}: {parent} is not a directory.")
    if path.is_dir():
        raise StoreError(f"Cannot use {path} as a database: it is a directory.")
    # SQLite writes -wal and -shm files beside the database, so the directory must be
    # writable even when the file already exists.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(
            f"Cannot write the database {path}: the directory {parent} is not writable by "
            "this process (SQLite also creates -wal and -shm files there). Fix its "
            "permissions or choose another path."
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(
            f"Cannot open the database {path}: the file is not readable and writable by this "
            "process. Fix its permissions or choose another path."
        )


def _check_version(conn: sqlite3.Connection, path: Path, current: int, newest: int) -> None:
    if current > newest:
        raise StoreSchemaError(
            f"The database {path} has schema version {current}, but this riverbed knows "
            f"versions up to {newest}: it was written by a newer riverbed. Upgrade riverbed "
            "(pip install -U riverbed) to open it; it was not modified."
        )
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    ours = current > 0 and "riverbed_migrations" in tables
    if (current == 0 and tables) or (current > 0 and not ours):
        raise StoreCorruptError(
            f"{path} is a SQLite database but not a riverbed one (it has tables "
            f"{sorted(tables)[:5]} and schema version {current}). riverbed did not modify it; "
            "point riverbed at a new file."
        )
