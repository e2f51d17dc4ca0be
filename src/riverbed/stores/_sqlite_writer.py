"""The SQLite store's writer thread, and group commit.

One thread owns the only writing connection and runs what it is handed in submission
order. A write is a queue put; its result comes back through one ``call_soon_threadsafe``
straight into an asyncio future. (``ThreadPoolExecutor`` + ``wrap_future`` did the same
through a ``concurrent.futures.Future``, its lock and condition and two chained callbacks,
which kept the GIL busier while the writer needed it: about 8% of a durable step.)

**Group commit.** Transactions that queue up while the writer is busy (steps of concurrent
runs, or fan-out siblings of one run, finishing together) run in ONE SQLite transaction,
each inside its own savepoint, and are answered once it commits:

- each keeps its own atomicity: one that raises is rolled back to its savepoint and gets
  its error, the others still commit;
- none is answered before the shared ``COMMIT`` succeeded, so "the commit returned" still
  means "it is in the file" (and with ``synchronous=FULL``, on disk): one fsync, or one
  WAL append, covers them all;
- order is submission order, as without grouping; a later transaction sees the earlier
  ones' rows, as it would have after their commits.

Nothing waits to fill a group: the writer takes what is already queued, so a lone write
(one run's chain) is one plain transaction with no added latency.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import queue
import sqlite3
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from riverbed.errors import StoreError

__all__ = ["MAX_GROUP", "Job", "WriterThread", "closed_error", "reply", "run_group"]

T = TypeVar("T")

#: At most this many queued transactions share one SQLite transaction.
MAX_GROUP = 64

#: What a grouped transaction's error is made into for its caller: (error, what it was
#: doing) -> the exception to raise (the store's own error type for SQLite errors).
Translate = Callable[[BaseException, str], BaseException]


class Job:
    """One thing for the writer: ``fn()`` to call, or ``tx(conn)`` to run in a transaction."""

    __slots__ = ("doing", "fn", "future", "loop", "tx")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        fn: Callable[[], Any] | None = None,
        tx: Callable[[sqlite3.Connection], Any] | None = None,
        doing: str = "",
    ) -> None:
        self.fn = fn
        self.tx = tx
        self.doing = doing
        self.loop = loop
        self.future = future


class _Stop:
    """Queued by stop(): the thread ends once everything before it has run."""


_STOP = _Stop()


class WriterThread:
    """One thread running writes one at a time, in the order they were submitted.

    ``transactions(conn_jobs)`` is given the transactions (``Job.tx``) that were queued
    together, in order, and answers each one; plain calls (``Job.fn``: opening and closing
    the connection) run alone.
    """

    def __init__(self, transactions: Callable[[list[Job]], None] | None = None) -> None:
        self._queue: queue.SimpleQueue[Job | _Stop] = queue.SimpleQueue()
        self._transactions = transactions
        self._stopped = False
        self._thread = threading.Thread(
            target=self._serve, name="riverbed-sqlite-writer", daemon=True
        )
        self._thread.start()
        _LIVE_WRITERS.add(self)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn()`` on the writer thread; the future is the running loop's."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(Job(loop, future, fn=fn))
        return future

    def submit_transaction(
        self, tx: Callable[[sqlite3.Connection], T], doing: str
    ) -> asyncio.Future[T]:
        """Run ``tx(conn)`` in a transaction (maybe shared, see the module's docstring)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(Job(loop, future, tx=tx, doing=doing))
        return future

    def _put(self, job: Job) -> None:
        self._queue.put(job)
        if self._stopped:
            self._refuse_queued()

    def stop(self) -> None:
        """Let the thread finish what was handed over, then end; waits for it."""
        _LIVE_WRITERS.discard(self)
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _serve(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        held: Job | _Stop | None = None
        while True:
            job = held if held is not None else get()
            held = None
            if isinstance(job, _Stop):
                break
            # Cancelled before it started: skipped, as a queued executor task would be. (The
            # flag is read off the loop's thread; a cancel that races with this line makes
            # the write run with its outcome unknown to the caller, which the store's
            # write() docstring allows.)
            if job.future.cancelled():
                continue
            if job.tx is None or self._transactions is None:
                _run(job)
                continue
            group = [job]
            while len(group) < MAX_GROUP:
                try:
                    more = get_nowait()
                except queue.Empty:
                    break
                if isinstance(more, _Stop) or more.tx is None:
                    held = more  # runs after the group, in order
                    break
                if not more.future.cancelled():
                    group.append(more)
            self._transactions(group)
            del job, group
        self._stopped = True
        self._refuse_queued()

    def _refuse_queued(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if not isinstance(job, _Stop):
                reply(job, None, closed_error())


def run_group(conn: sqlite3.Connection | None, jobs: list[Job], translate: Translate) -> None:
    """Run ``jobs`` (transactions queued together) on ``conn`` and answer each of them.

    One job: one plain ``BEGIN IMMEDIATE`` transaction. Several: one transaction with a
    savepoint per job. If SQLite itself ends the transaction under a job (it does after
    some I/O errors), that job gets the error and the jobs before it, which it undid, run
    again in a new transaction.
    """
    if conn is None:
        for job in jobs:
            reply(job, None, closed_error())
        return
    pending = jobs
    while pending:
        pending = _one_transaction(conn, pending, translate)


def _one_transaction(conn: sqlite3.Connection, jobs: list[Job], translate: Translate) -> list[Job]:
    """Run ``jobs`` in one transaction; returns the jobs to run again in a new one."""
    grouped = len(jobs) > 1
    done: list[tuple[Job, Any, BaseException | None]] = []
    again: list[Job] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        for job in jobs:
            reply(job, None, translate(exc, job.doing))
        return []
    try:
        for i, job in enumerate(jobs):
            assert job.tx is not None
            if grouped:
                conn.execute("SAVEPOINT riverbed_write")
            try:
                value = job.tx(conn)
            except BaseException as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back: what ran before is undone.
                    reply(job, None, translate(exc, job.doing))
                    again = [earlier for earlier, _, error in done if error is None]
                    again += jobs[i + 1 :]
                    for earlier, _, error in done:
                        if error is not None:
                            reply(earlier, None, error)
                    return again
                if grouped:
                    conn.execute("ROLLBACK TO riverbed_write")
                    conn.execute("RELEASE riverbed_write")
                else:
                    conn.execute("ROLLBACK")
                done.append((job, None, translate(exc, job.doing)))
                continue
            if grouped:
                conn.execute("RELEASE riverbed_write")
            done.append((job, value, None))
        if conn.in_transaction:
            conn.execute("COMMIT")
    except BaseException as exc:
        # The transaction itself failed (COMMIT on a full disk, a savepoint statement):
        # nothing in it was written; everyone not yet answered hears why.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        answered = {id(job) for job, _, _ in done}
        for job, _, error in done:
            reply(job, None, error if error is not None else translate(exc, job.doing))
        for job in jobs:
            if id(job) not in answered:
                reply(job, None, translate(exc, job.doing))
        return []
    for job, value, error in done:
        reply(job, value, error)
    return again


def _run(job: Job) -> None:
    assert job.fn is not None
    try:
        result = job.fn()
    except BaseException as exc:  # handed to the awaiting task
        reply(job, None, exc)
    else:
        reply(job, result, None)


def reply(job: Job, result: Any, error: BaseException | None) -> None:
    """Settle ``job``'s future on its loop (from the writer thread)."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def closed_error() -> StoreError:
    return StoreError("The SQLite store is closed. Call `await store.open()` or use `async with`.")


_LIVE_WRITERS: weakref.WeakSet[WriterThread] = weakref.WeakSet()


@atexit.register
def _stop_writers() -> None:
    # A store left open at exit still finishes the writes it was given (the writer is a
    # daemon thread so that an open store cannot keep the process alive).
    for writer in list(_LIVE_WRITERS):
        writer.stop()
