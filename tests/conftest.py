"""Shared fixtures of the engine tests."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from riverbed.testing import FakeClock

#: No engine test takes more than a fraction of a second; one that runs this long hangs.
HANG_SECONDS = 20.0


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock that jumps to the next timer whenever the loop is idle."""
    return FakeClock()


@pytest.fixture
async def hang_guard(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail an async test that runs for ``HANG_SECONDS`` instead of letting it hang.

    A broken engine feature often shows as a run that never ends (a lost timeout, a
    recovery loop without its budget); this turns that into a failed test.
    """
    loop = asyncio.get_running_loop()
    name = request.node.originalname

    def cancel_the_test() -> None:
        for task in asyncio.all_tasks(loop):
            if getattr(task.get_coro(), "__name__", None) == name:
                task.cancel(f"{name} still running after {HANG_SECONDS} s: it hangs")

    handle = loop.call_later(HANG_SECONDS, cancel_the_test)
    try:
        yield
    finally:
        handle.cancel()
