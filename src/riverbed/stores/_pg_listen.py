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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["WorkListener"]

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

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.received += 1
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
