"""The scale-out durable store: runs in PostgreSQL, through asyncpg (``riverbed[postgres]``).

Same schema and contract as :class:`~riverbed.stores.sqlite.SqliteStore`: every operation
of :class:`~riverbed.stores.durable.DurableStore` is one transaction; a step's commit is
fenced by its claim token; a run's commits and stream are numbered under the run's row
lock, so they are totally ordered and gapless per run whatever the number of connections.
The schema (default ``riverbed``, created if missing) is migrated on :meth:`open` from
numbered ``.sql`` files under an advisory lock, so processes opening it at once are safe.
Example::

    async with PostgresStore.from_url("postgresql://app@db:5432/app") as store:
        runs = await store.list_runs(status=RunStatus.RUNNING)

or simply ``Workflow(store="postgresql://app:secret@db:5432/app?schema=riverbed")``.

An unreachable server is retried for ``connect_timeout`` seconds (10 by default) before
:class:`StoreUnavailableError` names its host and port; a connection that breaks later is
replaced and the transaction retried. The password never appears in a ``repr``, a log line
or an error message. The connection pool runs on an event loop of the store's own, in a
thread, so one store serves any caller's loop (``run_sync`` makes a new one per call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

try:
    from riverbed.stores._pg_conn import PgConn, PgConnections, StoreUnavailableError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    if getattr(exc, "name", None) != "asyncpg":
        raise
    raise ImportError(
        "The PostgreSQL store needs asyncpg: pip install 'riverbed[postgres]'"
    ) from exc
from riverbed.stores import _pg_reads as reads
from riverbed.stores import _pg_runs as runs
from riverbed.stores import _pg_writes as writes
from riverbed.stores._pg_listen import WorkHint
from riverbed.stores._pg_settings import PgSettings, parse_url
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

__all__ = ["PgSettings", "PostgresStore", "StoreUnavailableError", "postgres_store_from_url"]

T = TypeVar("T")

logger = logging.getLogger("riverbed.postgres")

#: A clock further than this from the PostgreSQL server's is reported when the store opens.
CLOCK_WARNING_SECONDS = 2.0


class PostgresStore:
    """A :class:`~riverbed.stores.durable.DurableStore` in a PostgreSQL schema.

    Build it from a URL (:meth:`from_url`) or from :class:`PgSettings` fields as keyword
    arguments. ``lease_seconds`` is how long an owner's last heartbeat keeps other
    processes from taking its run over; ``wall_clock`` gives seconds since the epoch for
    leases and timestamps (tests may pass a fake one). With ``server_clock`` (the default
    when ``wall_clock`` is not given) lease times follow the PostgreSQL server's clock:
    :meth:`open` measures how far ``wall_clock`` is from it (``clock_offset``) and adds
    that, so workers on machines whose clocks differ agree on whose lease has lapsed.
    """

    durable = True

    def __init__(
        self,
        settings: PgSettings | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        server_clock: bool | None = None,
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise TypeError("Pass either settings or keyword options, not both.")
        self.settings = settings if settings is not None else PgSettings(**options)
        self._wall_clock = wall_clock
        self._now = wall_clock
        self._server_clock = wall_clock is time.time if server_clock is None else server_clock
        #: seconds the server's clock is ahead of this machine's (measured by open())
        self.clock_offset = 0.0
        self._db = PgConnections(self.settings)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        wall_clock: Callable[[], float] = time.time,
        server_clock: bool | None = None,
    ) -> PostgresStore:
        """A store for ``postgresql://user:password@host:port/database?schema=...``."""
        return cls(parse_url(url), wall_clock=wall_clock, server_clock=server_clock)

    @property
    def lease_seconds(self) -> float:
        """How long an owner's heartbeat (and a pre-claimed delivery) stays valid."""
        return self.settings.lease_seconds

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._db.is_open

    def __repr__(self) -> str:
        return f"PostgresStore({self.settings.redacted()!r})"

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the schema if needed and apply pending migrations.

        Raises :class:`StoreUnavailableError` if the server stays unreachable for
        ``connect_timeout`` seconds, ``StoreSchemaError`` if the schema was written by a
        newer riverbed, ``StoreCorruptError`` if it holds tables that are not riverbed's,
        and :class:`~riverbed.errors.StoreError` for a refused login or a missing
        database. None of them modifies the database.
        """
        if not self._db.is_open:
            await self._db.open()
            await self._measure_clock()

    async def _measure_clock(self) -> None:
        """Leases and heartbeats compare times written by processes on different machines:
        with the default clock they are taken from the server's clock (this machine's plus
        the measured offset), so a machine whose clock is off neither takes over live runs
        nor keeps dead ones. A large offset is also reported: timers (retry backoffs, run
        and wait timeouts) still use the local clock."""
        before = self._wall_clock()
        server = await self._read(
            "reading the server's clock",
            lambda c: c.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8"),
        )
        after = self._wall_clock()
        offset = float(server) - (before + after) / 2
        self.clock_offset = offset
        if self._server_clock:
            local = self._wall_clock
            self._now = lambda: local() + offset
        if abs(offset) > CLOCK_WARNING_SECONDS:
            logger.warning(
                "this machine's clock is %.1f s %s the PostgreSQL server's; riverbed takes "
                "lease times from the server's clock, but retry backoffs and timeouts run on "
                "this one. Synchronize the clocks (NTP).",
                abs(offset),
                "behind" if offset > 0 else "ahead of",
            )

    def use_running_loop(self) -> None:
        """Keep the connections on the event loop that will call :meth:`open`, instead of
        a loop of the store's own in a thread: calls from that loop then skip a thread hop
        each way (calls from other loops hop to it, while it runs). For a process that
        serves this store from one loop, as ``riverbed worker`` does; call it before
        :meth:`open`, and close the store before that loop ends."""
        self._db.use_running_loop()

    async def close(self) -> None:
        """Close every connection."""
        await self._db.close()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _tx(
        self,
        doing: str,
        fn: Callable[[PgConn], Awaitable[T]],
        replay: Callable[[PgConn], Awaitable[T | None]] | None = None,
        run_id: str | None = None,
    ) -> Awaitable[T]:
        # With a run_id, the run's transactions from this store apply in call order.
        return self._db.transaction(fn, doing, replay, run_id=run_id)

    def _read(self, doing: str, fn: Callable[[PgConn], Awaitable[T]]) -> Awaitable[T]:
        return self._db.transaction(fn, doing, _idempotent, readonly=True)

    # -- writes ----------------------------------------------------------------------

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

        async def replay(conn: PgConn) -> None:
            # A lost COMMIT that was applied: the run is ours (retrying would say it
            # exists). None means "run it again", so "applied" is said by raising.
            if await writes.create_run_replay(conn, record, start, owner):
                raise _Applied

        try:
            await self._tx(
                f"creating run {record.run_id!r}",
                lambda c: writes.create_run(
                    c,
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
                ),
                replay,
                run_id=record.run_id,
            )
        except _Applied:
            return

    async def submit_event(
        self,
        run_id: str,
        event: EventRow,
        targets: tuple[str, ...],
        resolves: tuple[str, ...],
    ) -> tuple[int, bool]:
        """Accept an event from outside the run; see the protocol. An ``event.seq`` of 0
        or less lets the store allocate the run's next sequence number."""
        now, client_id = self._now(), event.client_event_id
        replay = None
        if client_id is not None:

            async def replay(conn: PgConn) -> tuple[int, bool] | None:
                return await writes.submit_event_replay(conn, run_id, client_id)

        channel, lease = self.settings.work_channel, self.lease_seconds
        return await self._tx(
            f"submitting an event to run {run_id!r}",
            lambda c: writes.submit_event(c, run_id, event, targets, resolves, now, channel, lease),
            replay,
            run_id=run_id,
        )

    async def claim(
        self, run_id: str, event_seq: int, step: str, token: str, lease_seconds: float
    ) -> int:
        """Start an attempt; returns its number (1, 2, ...)."""
        until = self._now() + lease_seconds
        return await self._tx(
            f"claiming ({event_seq}, {step!r}) of run {run_id!r}",
            lambda c: writes.claim(c, run_id, event_seq, step, token, until),
            lambda c: writes.claim_replay(c, run_id, event_seq, step, token),
            run_id=run_id,
        )

    async def commit(self, run_id: str, commit: CommitRow) -> int:
        """Apply an attempt's effects in one transaction; returns the commit's number.
        A commit whose ``COMMIT`` reply was lost is found by its claim token, never
        applied twice."""
        now = self._now()
        return await self._tx(
            f"committing ({commit.event_seq}, {commit.step!r}) of run {run_id!r}",
            lambda c: writes.commit(c, run_id, commit, now),
            lambda c: writes.commit_replay(c, run_id, commit),
            run_id=run_id,
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
        the delivery (a stale attempt must not reset a newer one). The failure is kept
        for :meth:`read_timeline`."""
        now = self._now()

        async def replay(conn: PgConn) -> None:
            if await writes.fail_attempt_replay(conn, run_id, event_seq, step, token, error):
                raise _Applied

        try:
            await self._tx(
                f"recording a failure of ({event_seq}, {step!r}) in run {run_id!r}",
                lambda c: writes.fail_attempt(
                    c, run_id, event_seq, step, token, error, retry_at, attempt, started_at, now
                ),
                replay,
                run_id=run_id,
            )
        except _Applied:
            return

    async def register_waiter(
        self,
        run_id: str,
        waiter: WaiterRow,
        announce: Sequence[tuple[str, str]] = (),
        sent: SentBeforeWait | None = None,
    ) -> WaiterRow:
        """Record a waiter once; returns the stored row with its answer, if any. A new
        waiter's stream events (``announce``) are appended to the durable stream with it."""
        now = self._now()
        return await self._tx(
            f"registering waiter {waiter.waiter_id!r} of run {run_id!r}",
            lambda c: runs.register_waiter(c, run_id, waiter, now, announce, sent),
            _idempotent,
            run_id=run_id,
        )

    async def record_answers(self, run_id: str, answers: Sequence[tuple[int, str]]) -> None:
        """Mark waiters answered by committed events (see the protocol)."""
        pairs = tuple(answers)
        await self._tx(
            f"recording answers to waiters of run {run_id!r}",
            lambda c: runs.record_answers(c, run_id, pairs),
            _idempotent,
            run_id=run_id,
        )

    async def finish_run(
        self, run_id: str, status: RunStatus, result: str | None, error: str | None
    ) -> None:
        """Mark the run terminal; a run that already finished keeps its outcome."""
        now = self._now()
        await self._tx(
            f"finishing run {run_id!r}",
            lambda c: runs.finish_run(c, run_id, status, result, error, now),
            _idempotent,
            run_id=run_id,
        )

    async def acquire_run(self, run_id: str, owner: str, *, claim: bool = False) -> RunSnapshot:
        """Become the run's owner and read what resuming it needs; with ``claim``, also
        claim the deliveries due now for ``owner`` (see the protocol).

        Another owner blocks this for ``lease_seconds`` after its last heartbeat, unless
        its id (``"host:pid:uuid"``) names a process of this host that no longer exists.
        """
        now, lease = self._now(), self.lease_seconds
        doing = f"acquiring run {run_id!r}"
        # One statement: it takes the run, or raises for a run that ended, is unknown or
        # has a live owner. Only an owner that is a dead process of this host, whose lease
        # has not lapsed, is replaced in a transaction (take_over).
        taken = await self._db.transaction(
            lambda c: reads.take_snapshot(c, run_id, owner, now, lease, claim),
            doing,
            _idempotent,
            run_id=run_id,
            single=True,
        )
        if taken is not None:
            return taken
        return await self._tx(
            doing,
            lambda c: runs.take_over(c, run_id, owner, now, lease, claim),
            _idempotent,
            run_id=run_id,
        )

    async def release_run(
        self, run_id: str, owner: str, unclaim: Sequence[tuple[int, str, str]] = ()
    ) -> None:
        """Give up ownership if ``owner`` holds it; ``unclaim``: see the protocol."""
        now, items = self._now(), tuple(unclaim)
        await self._tx(
            f"releasing run {run_id!r}",
            lambda c: runs.release_run(c, run_id, owner, now, self.settings.work_channel, items),
            _idempotent,
            run_id=run_id,
        )

    async def wait_for_work(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for other processes to leave work no process
        runs (``LISTEN`` on :attr:`PgSettings.work_channel`): True when told of some, or
        when the listening connection has just been (re)made and notifications may have
        been missed; False on timeout. A lost connection is never raised: it is made
        again on the next call, and the caller polls (``claimable_runs``) meanwhile, so
        this only makes workers start sooner. Worker processes call it between polls."""
        return await self._db.wait_for_work(timeout)

    def notified_runs(self, workflows: Sequence[tuple[str, str]], limit: int) -> list[str]:
        """Ids of runs that notifications (see :meth:`wait_for_work`) said need a process,
        of one of ``workflows`` (``(name, version)`` pairs), oldest first, at most
        ``limit`` (the rest are kept for the next call; runs of other workflows are
        dropped). No I/O: a worker tries these with :meth:`acquire_run` before it queries
        :meth:`claimable_runs`. A run named here may have been taken meanwhile."""
        wanted = set(workflows)
        names = {name for name, _ in workflows}
        found: list[str] = []
        rest: list[WorkHint] = []
        for hint in self._db.take_hints():
            run_id, workflow, version = hint
            if workflow not in names or run_id in found:
                continue
            if version is not None and (workflow, version) not in wanted:
                continue
            if len(found) < limit:
                found.append(run_id)
            else:
                rest.append(hint)
        if rest:
            self._db.put_back_hints(rest)
        return found

    async def heartbeat(self, run_id: str, owner: str) -> None:
        """Prove ``owner`` is alive. Raises ``RunOwnedError`` if it no longer owns the run."""
        now = self._now()
        await self._tx(
            f"heartbeating run {run_id!r}",
            lambda c: runs.heartbeat(c, run_id, owner, now),
            _idempotent,
        )

    # -- reads -----------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord:
        """The run's record; ``result`` and ``error`` are the stored JSON strings."""
        return await self._read(f"reading run {run_id!r}", lambda c: reads.get_run(c, run_id))

    async def list_runs(
        self,
        workflow: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first; ``offset`` skips that many (pagination)."""
        return await self._read(
            "listing runs", lambda c: reads.list_runs(c, workflow, status, limit, offset)
        )

    async def claimable_runs(self, workflows: Sequence[tuple[str, str]], limit: int) -> list[str]:
        """Ids of runs that need a process: unowned (or their owner's lease lapsed), of
        one of ``workflows`` (``(name, version)`` pairs), with work due. Oldest first.
        Taking one is :meth:`acquire_run`, which locks the run's row: of several workers
        that found the same run, one gets it and the others get ``RunOwnedError``."""
        now, lease = self._now(), self.lease_seconds
        return await self._db.transaction(
            lambda c: reads.claimable_runs(c, tuple(workflows), limit, now, lease),
            "looking for runs to take",
            _idempotent,
            single=True,  # workers poll this: one statement, no BEGIN/COMMIT
        )

    async def read_waiters(self, run_id: str) -> list[WaiterRow]:
        """The run's waiters, answered or not, oldest first."""
        return await self._read(
            f"reading the waiters of run {run_id!r}", lambda c: reads.read_waiters(c, run_id)
        )

    async def read_timeline(self, run_id: str) -> list[TimelineRow]:
        """The run's events, commits and failed attempts in time order."""
        return await self._read(
            f"reading the history of run {run_id!r}", lambda c: reads.read_timeline(c, run_id)
        )

    async def read_open_work(self, run_id: str) -> list[OpenWorkRow]:
        """The run's deliveries not done yet, by event then step."""
        return await self._read(
            f"reading the open work of run {run_id!r}", lambda c: reads.read_open_work(c, run_id)
        )

    async def delete_runs(self, finished_before: float) -> int:
        """Delete every run that ended before ``finished_before`` with all its rows."""
        return await self._tx(
            "deleting old runs", lambda c: runs.delete_runs(c, finished_before), _idempotent
        )

    async def read_stream(self, run_id: str, after: int = 0, limit: int = 1000) -> list[StreamRow]:
        """Durable stream rows with ``seq > after``, in order."""
        return await self._read(
            f"reading the stream of run {run_id!r}",
            lambda c: reads.read_stream(c, run_id, after, limit),
        )

    async def read_events(self, run_id: str) -> list[EventRow]:
        """Every event that entered the run, in order."""
        return await self._read(
            f"reading the events of run {run_id!r}", lambda c: reads.read_events(c, run_id)
        )

    async def read_state(self, run_id: str) -> tuple[str, str]:
        """The run's committed state JSON and its state type key."""
        return await self._read(
            f"reading the state of run {run_id!r}", lambda c: reads.read_state(c, run_id)
        )

    # -- memos -----------------------------------------------------------------------

    async def get_memo(self, run_id: str, invocation: str, name: str) -> str | None:
        """The JSON value ``ctx.memo(name, ...)`` stored for this delivery, if any."""
        return await self._read(
            f"reading memo {name!r} of run {run_id!r}",
            lambda c: reads.get_memo(c, run_id, invocation, name),
        )

    async def put_memo(self, run_id: str, invocation: str, name: str, value: str) -> str:
        """Store a memo (the first value written wins) and return the stored value."""
        now = self._now()
        return await self._tx(
            f"writing memo {name!r} of run {run_id!r}",
            lambda c: reads.put_memo(c, run_id, invocation, name, value, now),
            _idempotent,
        )


class _Applied(Exception):
    """A replay check found that a lost COMMIT had been applied (no result to return)."""


async def _idempotent(conn: PgConn) -> None:
    # Running these twice changes nothing a caller can tell apart: retry after a lost
    # COMMIT as if it had not been applied.
    return None


def postgres_store_from_url(url: str) -> PostgresStore:
    """A store for ``postgresql://`` / ``postgres://`` URLs (see :func:`parse_url` for the
    options). It still has to be opened (``async with postgres_store_from_url(url)``)."""
    return PostgresStore.from_url(url)
