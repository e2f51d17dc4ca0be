"""PostgreSQL plumbing for :class:`~riverbed.stores.postgres.PostgresStore`: the asyncpg
pool, reconnection, migrations and error translation.

Every store operation is one transaction run by :meth:`PgConnections.transaction`. A
transaction that fails because the connection broke before ``COMMIT`` was sent is simply
run again on a new connection (the server rolled it back). One whose connection broke
*during* ``COMMIT`` may or may not have been applied: the operation's ``replay`` check
finds out on the new connection (a step commit looks for its own ``commits`` row, which
carries its claim token) before anything is written again.

asyncpg ships no type information; this module is the only one that imports it, and the
rest of the store sees connections through the :class:`PgConn` protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib import resources
from typing import Any, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]

from riverbed.errors import StoreCorruptError, StoreError, StoreLockedError, StoreSchemaError
from riverbed.stores._pg_listen import WorkHint, WorkListener
from riverbed.stores._pg_loop import HomeLoop, InOrder, LoopThread
from riverbed.stores._pg_settings import PgSettings

__all__ = ["PgConn", "PgConnections", "StoreUnavailableError", "load_migrations"]

T = TypeVar("T")
logger = logging.getLogger("riverbed")


class StoreUnavailableError(StoreError):
    """The PostgreSQL server cannot be reached (or went away and did not come back within
    ``connect_timeout``). Nothing committed is lost; retry when it is back."""


class PgConn(Protocol):
    """The part of an ``asyncpg.Connection`` the store uses."""

    async def execute(self, query: str, *args: Any) -> str: ...
    async def executemany(self, query: str, args: Sequence[Sequence[Any]]) -> None: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


#: the connection broke, or the server is (re)starting: the transaction did not happen
#: (unless COMMIT was under way), so it may run again on a new connection
_BROKEN = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    # an idle pooled connection whose server process was terminated: asyncpg sees the
    # server's goodbye only when the next query starts, and reports a protocol clash
    asyncpg.InternalClientError,
)
#: the server rolled the transaction back to break a deadlock or a serialization conflict
_ROLLED_BACK = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


def load_migrations() -> list[tuple[int, str, str]]:
    """The packaged PostgreSQL migrations as ``(version, name, sql)``, oldest first."""
    folder = resources.files("riverbed.stores") / "migrations" / "postgres"
    found = [
        (int(entry.name[:4]), entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    ]
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise StoreError(f"riverbed's PostgreSQL migrations are misnumbered: {versions}")
    return found


async def _close_pool(pool: Any) -> None:
    try:
        await asyncio.wait_for(pool.close(), 10.0)
    except asyncio.TimeoutError:
        pool.terminate()


async def _keep_session(conn: Any) -> None:
    # What a pooled connection gives back needs no reset query (one round trip per store
    # call): asyncpg has already rolled back any open transaction, and the store keeps no
    # session state on them (no SET, LISTEN, cursor or session advisory lock; the LISTEN
    # connection is outside the pool).
    return None


def _lock_key(schema: str) -> int:
    # One advisory lock per schema: two processes opening the same schema at once migrate
    # one after the other; different schemas do not wait for each other.
    return zlib.crc32(f"riverbed.migrate.{schema}".encode())


class PgConnections:
    """The pool, opened with bounded retries, and the transactions run on it."""

    def __init__(self, settings: PgSettings) -> None:
        self.settings = settings
        self._pool: Any = None
        #: the pool's own event loop (see _pg_loop): any caller's loop may use the store
        self._thread: LoopThread | HomeLoop | None = None
        #: keep the pool on the loop that opens the store (use_running_loop)
        self._home = False
        self._order = InOrder()
        #: the LISTEN connection, made by the first wait_for_work (workers only)
        self._listener = WorkListener(self._connect_one, settings.work_channel)

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def use_running_loop(self) -> None:
        """Keep the pool on the loop that calls :meth:`open` instead of a thread's own
        (see :class:`HomeLoop`). Before opening."""
        if self._pool is not None:
            raise StoreError("use_running_loop() must be called before the store is opened.")
        self._home = True

    async def open(self) -> None:
        """Connect (retrying for up to ``connect_timeout`` seconds) and migrate."""
        thread: LoopThread | HomeLoop = (
            HomeLoop(asyncio.get_running_loop()) if self._home else LoopThread("riverbed-postgres")
        )
        try:
            self._pool = await thread.run(self._open())
        except BaseException:
            thread.stop()
            raise
        self._thread = thread

    async def _open(self) -> Any:
        pool = await self._connect()
        try:
            await self._run(pool, self._migrate)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, _BROKEN):
                raise self.unreachable(exc, 1, "migrating the schema") from None
            if isinstance(exc, asyncpg.PostgresError):
                raise self._failed(exc, "migrating the schema") from None
            raise
        return pool

    async def close(self) -> None:
        """Close the pool (waiting up to 10 s for transactions under way) and its thread;
        safe to call twice."""
        pool, thread = self._pool, self._thread
        self._pool = self._thread = None
        if pool is None or thread is None:
            return
        try:
            await thread.run(self._listener.close())
            await thread.run(_close_pool(pool))
        finally:
            thread.stop()

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait on the store's loop for a notification of work (see WorkListener.wait).
        A closed store has nothing to listen with: it waits out ``timeout`` (its caller's
        next store call says it is closed)."""
        thread = self._thread
        if self._pool is None or thread is None:
            await asyncio.sleep(timeout)
            return False
        return await thread.run(self._listener.wait(timeout))

    def take_hints(self) -> list[WorkHint]:
        """The runs named by notifications since the last call (see WorkListener)."""
        return self._listener.take_hints()

    def put_back_hints(self, hints: list[WorkHint]) -> None:
        """Keep hints taken but not used for the next :meth:`take_hints`."""
        self._listener.put_back(hints)

    def _connect_args(self) -> dict[str, Any]:
        s = self.settings
        return {
            "host": s.host,
            "port": s.port,
            "user": s.user,
            "password": s.password,
            "database": s.database,
            "ssl": s.sslmode,
            "server_settings": {
                "search_path": s.schema,
                "application_name": s.application_name,
                "lock_timeout": f"{max(1, round(s.lock_timeout * 1000))}ms",
            },
        }

    async def _connect_one(self, timeout: float) -> Any:
        """One connection outside the pool (the LISTEN connection); no retries."""
        return await asyncpg.connect(**self._connect_args(), timeout=timeout)

    async def _connect(self) -> Any:
        s = self.settings
        deadline = time.monotonic() + s.connect_timeout
        delay, tries = 0.05, 0
        while True:
            tries += 1
            try:
                return await asyncpg.create_pool(
                    **self._connect_args(),
                    min_size=1,
                    max_size=s.pool_size,
                    timeout=max(1.0, min(5.0, s.connect_timeout)),
                    reset=_keep_session,
                )
            except _BROKEN as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.unreachable(exc, tries) from None
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)
            except asyncpg.PostgresError as exc:
                raise self._refused(exc) from None

    async def transaction(
        self,
        fn: Callable[[PgConn], Awaitable[T]],
        doing: str,
        replay: Callable[[PgConn], Awaitable[T | None]] | None = None,
        *,
        readonly: bool = False,
        run_id: str | None = None,
        single: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction, retrying on a new connection while the server
        is unreachable (for up to ``connect_timeout`` seconds). ``readonly``: a read-only
        ``REPEATABLE READ`` transaction, so that several statements read one snapshot;
        ``single``: ``fn`` is one statement, run without ``BEGIN``/``COMMIT`` (atomic by
        itself); it is run again after a broken connection, so it must be a read or a
        write that is safe to repeat.
        Transactions given a ``run_id`` are applied in the order they were called, per
        run (see :class:`~riverbed.stores._pg_loop.InOrder`).

        ``replay`` makes an ambiguous ``COMMIT`` (the connection broke while it was under
        way) safe to retry: on the new connection it returns the first try's result if
        that try was applied, or None to run ``fn`` again. Without ``replay`` an
        ambiguous commit raises :class:`StoreUnavailableError` saying so.
        """
        pool, thread = self._pool, self._thread
        if pool is None or thread is None:
            raise StoreError(
                "The PostgreSQL store is closed. Call `await store.open()` or use `async with`."
            )
        work = self._retrying(pool, fn, doing, replay, readonly, single)
        if run_id is None:
            return await thread.run(work)
        return await thread.run(self._in_order(run_id, work))

    async def _in_order(self, run_id: str, work: Coroutine[Any, Any, T]) -> T:
        async with self._order.hold(run_id):
            return await work

    async def _retrying(
        self,
        pool: Any,
        fn: Callable[[PgConn], Awaitable[T]],
        doing: str,
        replay: Callable[[PgConn], Awaitable[T | None]] | None,
        readonly: bool,
        single: bool = False,
    ) -> T:
        deadline = time.monotonic() + self.settings.connect_timeout
        delay, tries, check = 0.05, 0, None
        while True:
            tries += 1
            phase: list[str] = ["begin"]
            try:
                return await self._run(pool, fn, phase, check, readonly, single)
            except _ROLLED_BACK as exc:
                # Nothing was written; run it again at once (within the same bound).
                if time.monotonic() > deadline:
                    raise self._failed(exc, doing) from None
            except _BROKEN as exc:
                if phase[0] == "commit":
                    if replay is None:
                        raise StoreUnavailableError(
                            f"The connection to PostgreSQL at {self.settings.where} broke while "
                            f"committing ({doing}); the change may or may not have been applied. "
                            f"({type(exc).__name__}: {self.settings.scrub(str(exc))})"
                        ) from None
                    check = replay
                if self._pool is None:
                    outcome = "may or may not have been" if check else "was not"
                    raise StoreError(
                        f"The PostgreSQL store was closed while {doing}; the change "
                        f"{outcome} applied."
                    ) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    error = self.unreachable(exc, tries, doing)
                    if check is not None:
                        error.args = (
                            f"{error.args[0]} A COMMIT was under way when the connection "
                            "broke: the change may or may not have been applied.",
                        )
                    raise error from None
                logger.warning(
                    "riverbed: PostgreSQL at %s: %s while %s; retrying",
                    self.settings.where,
                    type(exc).__name__,
                    doing,
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)
            except asyncpg.PostgresError as exc:
                raise self._failed(exc, doing) from None

    @staticmethod
    async def _run(
        pool: Any,
        fn: Callable[[PgConn], Awaitable[T]],
        phase: list[str] | None = None,
        check: Callable[[PgConn], Awaitable[T | None]] | None = None,
        readonly: bool = False,
        single: bool = False,
    ) -> T:
        async with pool.acquire() as conn:
            if single:  # one statement: atomic by itself, no BEGIN/COMMIT round trips
                if phase is not None:
                    phase[0] = "commit"  # it commits as it runs: a lost reply is ambiguous
                try:
                    if check is not None:
                        applied = await check(conn)
                        if applied is not None:
                            return applied
                    return await fn(conn)
                except _BROKEN:
                    conn.terminate()
                    raise
            try:
                # A managed transaction (async with): asyncpg then rolls back cleanly even
                # when the caller is cancelled half-way.
                async with (
                    conn.transaction(isolation="repeatable_read", readonly=True)
                    if readonly
                    else conn.transaction()
                ):
                    result = None if check is None else await check(conn)
                    if result is None:
                        result = await fn(conn)
                    if phase is not None:
                        phase[0] = "commit"  # what fails from here on is the COMMIT
                return result
            except _BROKEN:
                conn.terminate()  # never hand this connection out again
                raise

    async def _migrate(self, conn: PgConn) -> None:
        schema = self.settings.schema
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema))
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        tables = {
            row[0]
            for row in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                schema,
            )
        }
        current = 0
        if "riverbed_migrations" in tables:
            current = int(
                await conn.fetchval(
                    f'SELECT coalesce(max(version), 0) FROM "{schema}".riverbed_migrations'
                )
            )
        elif tables:
            raise StoreCorruptError(
                f"The schema {schema!r} of {self.settings.where} holds tables that are not "
                f"riverbed's ({', '.join(sorted(tables)[:5])}). riverbed did not modify it; "
                "choose another schema with ?schema=... in the URL."
            )
        migrations = load_migrations()
        newest = migrations[-1][0] if migrations else 0
        if current > newest:
            raise StoreSchemaError(
                f"The schema {schema!r} of {self.settings.where} has riverbed schema version "
                f"{current}, but this riverbed knows versions up to {newest}: it was written "
                "by a newer riverbed. Upgrade riverbed (pip install -U riverbed) to use it; "
                "it was not modified."
            )
        for version, name, sql in migrations[current:]:
            await conn.execute(sql)  # several statements: the simple query protocol
            await conn.execute(
                "INSERT INTO riverbed_migrations (version, name, applied_at)"
                " VALUES ($1, $2, extract(epoch from clock_timestamp()))",
                version,
                name,
            )

    # -- errors --------------------------------------------------------------------------

    def unreachable(
        self, exc: BaseException, tries: int, doing: str = "connecting"
    ) -> StoreUnavailableError:
        s = self.settings
        reason = s.scrub(str(exc)) or type(exc).__name__
        return StoreUnavailableError(
            f"Cannot reach PostgreSQL at {s.host}:{s.port} while {doing} ({tries} tries in "
            f"{s.connect_timeout:g}s; last error: {type(exc).__name__}: {reason}). Check that "
            "the server is running and accepts TCP connections on that host and port, or "
            "raise ?connect_timeout=... in the URL. Nothing committed was lost."
        )

    def _refused(self, exc: BaseException) -> StoreError:
        s = self.settings
        text = s.scrub(str(exc))
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return StoreError(
                f"PostgreSQL at {s.host}:{s.port} has no database {s.database!r} ({text}). "
                f"Create it (createdb {s.database}) or fix the URL."
            )
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            return StoreError(
                f"PostgreSQL at {s.host}:{s.port} refused user {s.user!r} ({text}). Check the "
                "user name and password in the URL, and pg_hba.conf."
            )
        return StoreError(f"PostgreSQL at {s.host}:{s.port} refused the connection: {text}")

    def _failed(self, exc: BaseException, doing: str) -> StoreError:
        text = self.settings.scrub(str(exc))
        if isinstance(exc, asyncpg.LockNotAvailableError):
            return StoreLockedError(
                f"A row of {self.settings.where} stayed locked by another session for longer "
                f"than lock_timeout={self.settings.lock_timeout:g}s while {doing}. Find the "
                "session holding it (pg_stat_activity, pg_locks) or raise ?lock_timeout=... "
                "in the URL. Nothing was written."
            )
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return StoreError(
                f"{doing[0].upper()}{doing[1:]} conflicts with rows already in "
                f"{self.settings.where} ({text}); nothing from this operation was written."
            )
        return StoreError(f"PostgreSQL error on {self.settings.where} while {doing}: {text}")
