"""When the durable store fails under a run (unreachable, locked, a lost connection), the run
is not recorded as failed: it stops in this process and can be resumed, losing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    RunStatus,
    StartEvent,
    StopEvent,
    StoreLockedError,
    Workflow,
    step,
)

pytestmark = pytest.mark.usefixtures("hang_guard")


class Half(Event):
    n: int


class Halving(Workflow):
    # The first attempt fails and is retried: the retry claims its delivery on its own
    # (first attempts are claimed by the transaction before them).
    @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=0))
    async def first(self, ctx: Context, ev: StartEvent) -> Half:
        if ctx.attempt == 1:
            raise RuntimeError("flaky")
        await ctx.store.set("seen", ev.n)
        return Half(n=ev.n // 2)

    @step
    async def second(self, ev: Half) -> StopEvent:
        return StopEvent(result=ev.n)


@pytest.mark.parametrize(
    ("operation", "failing_call"),
    [("commit", 2), ("claim", 1)],  # the second step's commit; the first step's retry claim
)
async def test_a_store_failure_stops_the_run_here_and_it_resumes_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operation: str, failing_call: int
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    workflow = Halving(store=url)
    await workflow.open_store()
    store: Any = workflow.store
    real = getattr(store, operation)
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise StoreLockedError("the database is locked (simulated)")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, operation, flaky)
    handler = workflow.run(run_id="r1", n=10)
    with pytest.raises(StoreLockedError, match="simulated"):
        await handler
    record = await store.get_run("r1")
    assert record.status is RunStatus.RUNNING  # not recorded as failed
    monkeypatch.setattr(store, operation, real)

    resumed = await Halving(store=url).resume("r1")
    assert await resumed == 5
    assert (await store.get_run("r1")).status is RunStatus.COMPLETED
    await store.close()
