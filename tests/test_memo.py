"""ctx.memo: a retried attempt reuses an expensive sub-result instead of paying twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    step,
)
from riverbed.testing import FakeClock


def _flow(calls: list[str], fail_first: bool = True) -> type[Workflow]:
    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=1))
        async def answer(self, ctx: Context, ev: StartEvent) -> StopEvent:
            async def llm() -> dict[str, Any]:
                calls.append("llm")
                return {"text": "forty-two", "attempt": ctx.attempt}

            draft = await ctx.memo("draft", llm)
            if fail_first and ctx.attempt == 1:
                raise ConnectionError("lost the connection after the LLM answered")
            return StopEvent(result=(draft, ctx.attempt))

    return Flow


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_retry_reuses_the_memo(store: str, tmp_path: Path) -> None:
    calls: list[str] = []
    url = None if store == "memory" else f"sqlite:///{tmp_path / 'runs.db'}"
    flow = _flow(calls)(clock=FakeClock(), store=url)
    draft, attempt = await flow.run()
    assert attempt == 2
    assert draft == {"text": "forty-two", "attempt": 1}  # computed once, by attempt 1
    assert calls == ["llm"]


async def test_memo_values_must_be_json(tmp_path: Path) -> None:
    class Flow(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.memo("client", object)
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match=r"ctx\.memo\('client'\) got a object"):
        await Flow().run()


async def test_memo_outside_a_step_is_refused() -> None:
    calls: list[str] = []
    flow = _flow(calls)()
    from riverbed import ContextStateError

    with pytest.raises(ContextStateError, match="memo"):
        await Context(flow).memo("x", lambda: 1)
