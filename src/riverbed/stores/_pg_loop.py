"""The event loop thread a :class:`~riverbed.stores.postgres.PostgresStore` runs on.

asyncpg connections belong to the event loop that opened them. A store is used from
whatever loop the caller has: ``Workflow.run_sync`` makes a new loop per call, tests make
one per test, and a store outlives all of them. So the store's pool lives on a loop of its
own, in a daemon thread, and callers on any loop await its work there, as the SQLite
store's callers await its writer thread. Each call costs one hop to the thread and back.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

__all__ = ["InOrder", "LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the thread's loop and await its result from the caller's loop.
        Cancelling the caller cancels the work there too."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Cancel what still runs there, stop the loop and the thread, and close the loop;
        safe to call twice. Not from the thread itself."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            # Nothing may be left pending when the loop closes: its caller would wait
            # forever on a result that never comes.
            asyncio.run_coroutine_threadsafe(_cancel_others(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self.loop.close()


async def _cancel_others() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class InOrder:
    """Serializes work per key (a run id) in the order it starts, on one event loop.

    The engine may compute an attempt's effects from those of an earlier attempt of the
    same run whose commit is still on its way (a fan-in buffer filled by a sibling step).
    The SQLite store applies a process's transactions in the order they were submitted
    (one writer thread). A connection pool does not: two commits sent one after the other
    on two connections may reach the run's row lock in either order. Holding this while a
    run's transaction runs restores submission order; commits of one run are serialized by
    its row lock anyway, so it costs no concurrency, and other runs do not wait.
    """

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Wait for the earlier holders of ``key`` (first come, first served)."""
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
