"""Time as the engine sees it: ``now()`` and ``call_later()``.

Every timer of a run (run timeout, step timeout, retry backoff, wait timeout) goes through a
:class:`Clock`, so :class:`riverbed.testing.FakeClock` can make them instant in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "TimerHandle", "sleep"]


class TimerHandle(Protocol):
    """What ``call_later`` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """A source of time for the engine."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences matter)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Call ``callback`` on the running event loop after ``delay`` seconds."""
        ...


class SystemClock:
    """The event loop's own clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


async def sleep(clock: Clock, delay: float) -> None:
    """``asyncio.sleep`` on ``clock``."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    handle = clock.call_later(delay, wake)
    try:
        await future
    finally:
        handle.cancel()
