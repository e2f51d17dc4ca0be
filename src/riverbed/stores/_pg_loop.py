"""The event loop thread a :class:`~riverbed.stores.postgres.PostgresStore` runs on.

asyncpg connections belong to the event loop that opened them. A store is used from
whatever loop the caller has: ``Workflow.run_sync`` makes a new loop per call, tests make
one per test, and a store outlives all of them. So the store's pool lives on a loop of its
own, in a daemon thread, and callers on any loop await its work there, as the SQLite
store's callers await its writer thread. Each call costs one hop to the thread and back.

A process that does nothing but serve one store (a ``riverbed worker``) can instead keep
the pool on its own loop (:class:`HomeLoop`): its calls then make no hop at all, and calls
from other loops still hop to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

__all__ = ["HomeLoop", "InOrder", "LoopThread"]

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
        return await _run_on(self.loop, coro)

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


class HomeLoop:
    """The loop of the caller that opened the store, used as the store's own: work from
    that loop runs in place, work from other loops hops to it (while it runs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the home loop (in place when called from it)."""
        return await _run_on(self.loop, coro)

    def stop(self) -> None:
        """Nothing to stop: the loop belongs to its caller."""


async def _run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    if asyncio.get_running_loop() is loop:
        return await coro
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    return await asyncio.wrap_future(future)


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
