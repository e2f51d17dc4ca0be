"""Waking idle workers of a :class:`~riverbed.stores.postgres.PostgresStore`: one
``LISTEN`` connection per store, on the store's own event loop.

Transactions that leave work no process runs (a run submitted or released with work due,
an event sent to a run without an owner) send ``NOTIFY`` on the schema's work channel
(:attr:`~riverbed.stores._pg_settings.PgSettings.work_channel`) in the same transaction;
step commits never do (research §4.3: a notifying commit takes a global lock). A worker
waits in :meth:`WorkListener.wait` between its looks for work. The listener never raises for
a lost connection: it reconnects on the next wait, and a fresh ``LISTEN`` answers "look
now", since notifications sent while it was away are lost. Workers also poll, so nothing
depends on a notification arriving.

A notification's payload names the run (``{"run": id, "workflow": name, "version": v}``);
the listener keeps the latest ones (:meth:`WorkListener.take_hints`) so a worker can take
that run at once instead of first querying for claimable runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["WorkHint", "WorkListener"]

#: a notified run: (run id, workflow name, workflow version or None)
WorkHint = tuple[str, str, "str | None"]

#: notified runs kept for a worker that is busy (older ones are dropped: polling finds them)
_MAX_HINTS = 10_000

logger = logging.getLogger("riverbed")

#: longest wait for the server to accept the LISTEN connection, per attempt
_CONNECT_TIMEOUT = 5.0


class WorkListener:
    """Waits for notifications on ``channel``. Every method runs on the store's loop.

    ``connect(timeout)`` opens a new connection; failing to is never raised (the caller
    polls instead).
    """

    def __init__(self, connect: Callable[[float], Awaitable[Any]], channel: str) -> None:
        self._connect = connect
        self._channel = channel
        self._conn: Any = None
        self._lock: asyncio.Lock | None = None
        self._woken: asyncio.Event | None = None
        #: notifications received (tests and logs)
        self.received = 0
        #: runs named by notifications not yet taken (appended on the store's loop, taken
        #: from any thread: deque appends and pops are atomic)
        self._hints: deque[WorkHint] = deque(maxlen=_MAX_HINTS)

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def wait(self, timeout: float) -> bool:
        """Return True when a notification arrives (or arrived since the last wait
        returned), or when the listener has just (re)connected; False after ``timeout``
        seconds without one, or when the server cannot be reached meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._woken is None or self._lock is None:
            self._woken, self._lock = asyncio.Event(), asyncio.Lock()
        woken = self._woken
        if not self.listening:
            async with self._lock:
                if not self.listening:
                    if await self._listen(max(0.05, min(timeout, _CONNECT_TIMEOUT))):
                        woken.clear()
                        return True  # notifications sent while we were away are lost
                    await asyncio.sleep(max(0.0, deadline - loop.time()))
                    return False
        try:
            await asyncio.wait_for(woken.wait(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            return False
        woken.clear()
        return True

    async def _listen(self, timeout: float) -> bool:
        await self.close()
        conn = None
        try:
            conn = await self._connect(timeout)
            await conn.add_listener(self._channel, self._notified)
            conn.add_termination_listener(self._lost)
        except Exception as exc:  # unreachable, restarting, refused: poll instead
            logger.debug("riverbed: cannot LISTEN for work (%s)", type(exc).__name__)
            if conn is not None:
                conn.terminate()
            return False
        except BaseException:  # cancelled half-way: leave no connection behind
            if conn is not None:
                conn.terminate()
            raise
        self._conn = conn
        return True

    def take_hints(self) -> list[WorkHint]:
        """The runs named by notifications since the last call, oldest first."""
        hints: list[WorkHint] = []
        with contextlib.suppress(IndexError):
            while True:
                hints.append(self._hints.popleft())
        return hints

    def put_back(self, hints: list[WorkHint]) -> None:
        """Return hints that were taken but not used (they come first next time)."""
        self._hints.extendleft(reversed(hints))

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.received += 1
        hint = _parse_hint(payload)
        if hint is not None:
            self._hints.append(hint)
        if self._woken is not None:
            self._woken.set()

    def _lost(self, conn: Any) -> None:
        # Wake the waiter: its next wait reconnects (and says "look now" once it has).
        if self._woken is not None:
            self._woken.set()

    async def close(self) -> None:
        """Close the connection, if any (safe to call twice)."""
        conn, self._conn = self._conn, None
        if self._lock is not None and not self._lock.locked():
            # A reopened store runs on a new loop: its waits need new primitives.
            self._woken = self._lock = None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), 5.0)
        except Exception:  # the connection is gone anyway
            with contextlib.suppress(Exception):
                conn.terminate()


def _parse_hint(payload: str) -> WorkHint | None:
    """The run a notification names, or None for a payload of another form (it still
    wakes the worker, which then queries for work)."""
    try:
        data = json.loads(payload)
        run, workflow, version = data["run"], data["workflow"], data.get("version")
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(run, str) or not isinstance(workflow, str):
        return None
    return run, workflow, version if isinstance(version, str) else None
