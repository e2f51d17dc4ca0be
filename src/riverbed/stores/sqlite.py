"""The embedded durable store: one SQLite file in WAL mode, stdlib ``sqlite3`` only.

Every write is one ``BEGIN IMMEDIATE`` transaction on a dedicated writer thread, so the
event loop never waits on the disk and writes never deadlock on a lock upgrade; reads use
their own connections and see the last committed state. The schema is created and upgraded
on :meth:`SqliteStore.open` from numbered ``.sql`` files shipped in
``riverbed/stores/migrations/sqlite``. Example::

    async with SqliteStore("runs.db") as store:
        runs = await store.list_runs(status=RunStatus.RUNNING)

``synchronous="NORMAL"`` (the default) keeps every commit through a crash or ``kill -9``
of the process; the last commits may roll back on power loss. ``"FULL"`` survives power
loss where the disk honours flushes, at a higher cost per commit.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Concatenate, Literal, ParamSpec, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from riverbed.errors import StoreError
from riverbed.stores import _sqlite_memos as memos
from riverbed.stores import _sqlite_reads as reads
from riverbed.stores import _sqlite_writes as writes
from riverbed.stores._sqlite_conn import SqliteConnections
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import (
    CommitRow,
    EventRow,
    OpenWorkRow,
    RunSnapshot,
    SentBeforeWait,
    StreamRow,
    TimelineRow,
    WaiterRow,
)

__all__ = ["SqliteStore", "sqlite_store_from_url"]

Synchronous = Literal["NORMAL", "FULL"]
P = ParamSpec("P")
T = TypeVar("T")


class SqliteStore:
    """A :class:`~riverbed.stores.durable.DurableStore` in one SQLite file.

    ``busy_timeout`` is how long (seconds) to wait for a lock held by another process
    before raising :class:`~riverbed.errors.StoreLockedError`. ``lease_seconds`` is how
    long an owner's last heartbeat keeps other processes from taking its run over.
    ``wall_clock`` gives seconds since the epoch for leases and timestamps; tests may pass
    a fake one.
    """

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
        lease_seconds: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        text = os.fspath(path)
        if text in ("", ":memory:") or text.startswith("file::memory:"):
            raise StoreError(
                "SqliteStore needs a file: durable runs must outlive the process. Pass a "
                "path such as 'runs.db', or use MemoryStore for runs that need not survive."
            )
        sync = str(synchronous).upper()
        if sync not in ("NORMAL", "FULL"):
            raise StoreError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}.")
        if busy_timeout < 0 or lease_seconds <= 0:
            raise StoreError("busy_timeout must be >= 0 and lease_seconds > 0.")
        self.path = Path(text).expanduser().absolute()
        self.lease_seconds = lease_seconds
        self._now = wall_clock
        self._db = SqliteConnections(self.path, sync, busy_timeout)

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._db.is_open

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Create or open the file, switch it to WAL mode and apply pending migrations.

        Raises :class:`~riverbed.errors.StoreError` for a path that cannot be written,
        ``StoreCorruptError`` for a damaged or foreign file, ``StoreSchemaError`` for a
        file written by a newer riverbed and ``StoreLockedError`` when another process
        holds the lock beyond ``busy_timeout``. None of them modifies the file.
        """
        if not self._db.is_open:
            await self._db.open()

    async def close(self) -> None:
        """Close every connection and stop the store's threads."""
        await self._db.close()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- writes ----------------------------------------------------------------------

    async def _write(
        self,
        doing: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._db.write(lambda conn: fn(conn, *args, **kwargs), doing)

    async def create_run(
        self,
        record: RunRecord,
        start: EventRow,
        targets: tuple[str, ...],
        state: str,
        state_type: str,
        owner: str,
        deadline: float | None,
        claims: tuple[str, ...] = (),
    ) -> None:
        """Insert a run owned by ``owner``, its start event and the event's deliveries
        (claimed for ``owner`` when ``claims`` has their tokens)."""
        now = self._now()
        await self._write(
            f"creating run {record.run_id!r}",
            writes.create_run,
            record,
            start,
            targets,
            state,
            state_type,
            owner,
            deadline,
            now,
            claims,
            now + self.lease_seconds,
        )

    async def submit_event(
        self,
        run_id: str,
        event: EventRow,
        targets: tuple[str, ...],
        resolves: tuple[str, ...],
    ) -> tuple[int, bool]:
        """Accept an event from outside the run; see the protocol. An ``event.seq`` of 0
        or less lets the store allocate the run's next sequence number."""
        return await self._write(
            f"submitting an event to run {run_id!r}",
            writes.submit_event,
            run_id,
            event,
            targets,
            resolves,
            self._now(),
        )

    async def claim(
        self, run_id: str, event_seq: int, step: str, token: str, lease_seconds: float
    ) -> int:
        """Start an attempt; returns its number (1, 2, ...)."""
        return await self._write(
            f"claiming ({event_seq}, {step!r}) of run {run_id!r}",
            writes.claim,
            run_id,
            event_seq,
            step,
            token,
            self._now() + lease_seconds,
        )

    async def commit(self, run_id: str, commit: CommitRow) -> int:
        """Apply an attempt's effects in one transaction; returns the commit's number."""
        return await self._write(
            f"committing ({commit.event_seq}, {commit.step!r}) of run {run_id!r}",
            writes.commit,
            run_id,
            commit,
            self._now(),
        )

    async def fail_attempt(
        self,
        run_id: str,
        event_seq: int,
        step: str,
        token: str,
        error: str,
        retry_at: float | None,
        attempt: int = 0,
        started_at: float | None = None,
    ) -> None:
        """Record a failed attempt. Raises ``FencedError`` if ``token`` no longer holds
        the delivery (a stale attempt must not reset a newer one)."""
        await self._write(
            f"recording a failure of ({event_seq}, {step!r}) in run {run_id!r}",
            writes.fail_attempt,
            run_id,
            event_seq,
            step,
            token,
            error,
            retry_at,
            attempt,
            started_at,
            self._now(),
        )

    async def register_waiter(
        self,
        run_id: str,
        waiter: WaiterRow,
        announce: Sequence[tuple[str, str]] = (),
        sent: SentBeforeWait | None = None,
    ) -> WaiterRow:
        """Record a waiter once; returns the stored row with its answer, if any. A new
        waiter's stream events (``announce``) are appended to the durable stream with it."""
        return await self._write(
            f"registering waiter {waiter.waiter_id!r} of run {run_id!r}",
            writes.register_waiter,
            run_id,
            waiter,
            self._now(),
            announce,
            sent,
        )

    async def record_answers(self, run_id: str, answers: Sequence[tuple[int, str]]) -> None:
        """Mark waiters answered by committed events (see the protocol)."""
        await self._write(
            f"recording answers to waiters of run {run_id!r}",
            writes.record_answers,
            run_id,
            tuple(answers),
        )

    async def finish_run(
        self, run_id: str, status: RunStatus, result: str | None, error: str | None
    ) -> None:
        """Mark the run terminal; a run that already finished keeps its outcome."""
        await self._write(
            f"finishing run {run_id!r}",
            writes.finish_run,
            run_id,
            status,
            result,
            error,
            self._now(),
        )

    async def acquire_run(self, run_id: str, owner: str, *, claim: bool = False) -> RunSnapshot:
        """Become the run's owner and read what resuming it needs; with ``claim``, also
        claim the deliveries due now for ``owner`` (see the protocol).

        Another owner blocks this for ``lease_seconds`` after its last heartbeat, unless
        its id (``"host:pid:uuid"``) names a process of this host that no longer exists.
        """
        return await self._write(
            f"acquiring run {run_id!r}",
            writes.acquire_run,
            run_id,
            owner,
            self._now(),
            self.lease_seconds,
            claim,
        )

    async def release_run(
        self, run_id: str, owner: str, unclaim: Sequence[tuple[int, str, str]] = ()
    ) -> None:
        """Give up ownership if ``owner`` holds it; ``unclaim``: see the protocol."""
        await self._write(
            f"releasing run {run_id!r}",
            writes.release_run,
            run_id,
            owner,
            self._now(),
            tuple(unclaim),
        )

    async def heartbeat(self, run_id: str, owner: str) -> None:
        """Prove ``owner`` is alive. Raises ``RunOwnedError`` if it no longer owns the run."""
        await self._write(
            f"heartbeating run {run_id!r}", writes.heartbeat, run_id, owner, self._now()
        )

    # -- reads -----------------------------------------------------------------------

    async def _read(
        self,
        doing: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._db.read(lambda conn: fn(conn, *args, **kwargs), doing)

    async def get_run(self, run_id: str) -> RunRecord:
        """The run's record; ``result`` and ``error`` are the stored JSON strings."""
        return await self._read(f"reading run {run_id!r}", reads.get_run, run_id)

    async def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first; ``offset`` skips that many (pagination)."""
        return await self._read("listing runs", reads.list_runs, workflow, status, limit, offset)

    async def claimable_runs(self, workflows: Sequence[tuple[str, str]], limit: int) -> list[str]:
        """Ids of runs that need a process: unowned (or their owner's lease lapsed), of
        one of ``workflows`` (``(name, version)`` pairs), with work due. Oldest first."""
        return await self._read(
            "looking for runs to take",
            reads.claimable_runs,
            tuple(workflows),
            limit,
            self._now(),
            self.lease_seconds,
        )

    async def read_waiters(self, run_id: str) -> list[WaiterRow]:
        """The run's waiters, answered or not, oldest first."""
        return await self._read(
            f"reading the waiters of run {run_id!r}", reads.read_waiters, run_id
        )

    async def read_timeline(self, run_id: str) -> list[TimelineRow]:
        """The run's events, commits and failed attempts in time order."""
        return await self._read(
            f"reading the history of run {run_id!r}", reads.read_timeline, run_id
        )

    async def read_open_work(self, run_id: str) -> list[OpenWorkRow]:
        """The run's deliveries not done yet, by event then step."""
        return await self._read(
            f"reading the open work of run {run_id!r}", reads.read_open_work, run_id
        )

    async def delete_runs(self, finished_before: float) -> int:
        """Delete every run that ended before ``finished_before`` with all its rows."""
        return await self._write("deleting old runs", writes.delete_runs, finished_before)

    async def read_stream(self, run_id: str, after: int = 0, limit: int = 1000) -> list[StreamRow]:
        """Durable stream rows with ``seq > after``, in order."""
        return await self._read(
            f"reading the stream of run {run_id!r}", reads.read_stream, run_id, after, limit
        )

    async def read_events(self, run_id: str) -> list[EventRow]:
        """Every event that entered the run, in order."""
        return await self._read(f"reading the events of run {run_id!r}", reads.read_events, run_id)

    async def read_state(self, run_id: str) -> tuple[str, str]:
        """The run's committed state JSON and its state type key."""
        return await self._read(f"reading the state of run {run_id!r}", reads.read_state, run_id)

    # -- memos -----------------------------------------------------------------------

    async def get_memo(self, run_id: str, invocation: str, name: str) -> str | None:
        """The JSON value ``ctx.memo(name, ...)`` stored for this delivery, if any."""
        return await self._read(
            f"reading memo {name!r} of run {run_id!r}", memos.get_memo, run_id, invocation, name
        )

    async def put_memo(self, run_id: str, invocation: str, name: str, value: str) -> str:
        """Store a memo (the first value written wins) and return the stored value."""
        return await self._write(
            f"writing memo {name!r} of run {run_id!r}",
            memos.put_memo,
            run_id,
            invocation,
            name,
            value,
            self._now(),
        )


def sqlite_store_from_url(url: str) -> SqliteStore:
    """A store for ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

    Query options: ``synchronous`` (``NORMAL`` or ``FULL``), ``busy_timeout`` and
    ``lease_seconds`` (seconds), e.g. ``sqlite:///runs.db?synchronous=FULL``. The store
    still has to be opened (``async with sqlite_store_from_url(url) as store``).
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise StoreError(
            f"Not a SQLite URL: {url!r}. Write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (three slashes, then the path)."
        )
    # urlsplit leaves the path as "/relative.db" or "//absolute.db": drop one slash.
    path = unquote(parts.path[1:])
    if path in ("", ":memory:"):
        raise StoreError(
            f"{url!r} has no file: durable runs must outlive the process, so SQLite needs a "
            "file path (sqlite:///runs.db). Use MemoryStore for runs that need not survive."
        )
    known = {"synchronous", "busy_timeout", "lease_seconds"}
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(query) - known)
    if unknown:
        raise StoreError(f"Unknown option(s) {unknown} in {url!r}; known: {sorted(known)}.")
    options = {key: values[-1] for key, values in query.items()}
    try:
        busy = float(options.get("busy_timeout", 5.0))
        lease = float(options.get("lease_seconds", 30.0))
    except ValueError as exc:
        raise StoreError(f"busy_timeout and lease_seconds in {url!r} must be numbers.") from exc
    sync = options.get("synchronous", "NORMAL").upper()
    if sync not in ("NORMAL", "FULL"):
        raise StoreError(f"synchronous in {url!r} must be NORMAL or FULL, not {sync!r}.")
    return SqliteStore(
        path,
        synchronous="FULL" if sync == "FULL" else "NORMAL",
        busy_timeout=busy,
        lease_seconds=lease,
    )
