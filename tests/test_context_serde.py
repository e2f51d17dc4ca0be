"""ctx.to_dict() / Context.from_dict(): LlamaIndex's manual pause and resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from riverbed import (
    Context,
    ContextSerdeError,
    ContextStateError,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StateValidationError,
    StopEvent,
    Workflow,
    WorkflowRuntimeError,
    step,
)
from riverbed.serialization import JsonSerializer, PickleSerializer


class Asker(Workflow):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        self.calls.append("ask")
        await ctx.store.set("asked", ev.topic)
        return InputRequiredEvent(prefix="name?")

    @step
    async def answer(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        self.calls.append("answer")
        return StopEvent(result=f"{await ctx.store.get('asked')}: {ev.response}")


async def test_pause_at_human_input_and_resume_from_json() -> None:
    wf = Asker()
    handler = wf.run(topic="rivers")
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            break
    payload = json.loads(json.dumps(handler.ctx.to_dict(serializer=JsonSerializer())))
    await handler.cancel_run()

    ctx = Context.from_dict(wf, payload, serializer=JsonSerializer())
    resumed = wf.run(ctx=ctx)
    await resumed.send_event(HumanResponseEvent(response="ana"))
    assert await resumed == "rivers: ana"
    assert wf.calls == ["ask", "answer"]  # every step ran exactly once


async def test_a_paused_payload_does_not_start_a_new_durable_run(tmp_path: Path) -> None:
    # A durable workflow continues its runs from the store. Given a from_dict context it
    # started a NEW run from an empty StartEvent (the first step ran again and failed);
    # now it says where durable runs continue, and nothing is recorded.
    wf = Asker()
    handler = wf.run(topic="rivers")
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            break
    payload = handler.ctx.to_dict()
    await handler.cancel_run()

    class DurableAsker(Asker):
        def __init__(self) -> None:
            Workflow.__init__(self, store=f"sqlite:///{tmp_path / 'runs.db'}")
            self.calls = []

    durable = DurableAsker()
    with pytest.raises(WorkflowRuntimeError, match=r"workflow\.resume\(run_id\)"):
        durable.run(ctx=Context.from_dict(durable, payload))
    assert durable.calls == []
    await durable.open_store()
    assert durable.store is not None
    assert await durable.store.list_runs() == []
    # the same payload continues on a workflow without a store
    in_memory = Asker()
    resumed = in_memory.run(ctx=Context.from_dict(in_memory, payload))
    await resumed.send_event(HumanResponseEvent(response="ana"))
    assert await resumed == "rivers: ana"
    await durable.store.close()


class Part(Event):
    n: int


class Gate(Event):
    pass


class Slow(Workflow):
    def __init__(self) -> None:
        super().__init__()
        self.started: list[int] = []
        self.release = asyncio.Event()
        self.paused = asyncio.Event()

    @step
    async def fan(self, ctx: Context, ev: StartEvent) -> Part | None:
        for n in range(3):
            ctx.send_event(Part(n=n))
        return None

    @step(num_workers=1)
    async def work(self, ctx: Context, ev: Part) -> StopEvent | None:
        self.started.append(ev.n)
        if ev.n == 1:
            self.paused.set()
            await self.release.wait()  # paused here
        got = ctx.collect_events(ev, [Part] * 3)
        return StopEvent(result=[p.n for p in got]) if got else None


async def test_pause_mid_run_keeps_queued_in_progress_and_collected_work() -> None:
    wf = Slow()
    handler = wf.run()
    await wf.paused.wait()
    payload = handler.ctx.to_dict()
    await handler.cancel_run()
    assert payload["is_running"] is True
    assert [e["value"]["n"] for e in payload["queues"]["work"]] == [1, 2]
    assert [e["value"]["n"] for e in payload["collected"]["work"][""]] == [0]

    wf.release.set()
    resumed = wf.run(ctx=Context.from_dict(wf, json.loads(json.dumps(payload))))
    assert await resumed == [0, 1, 2]
    assert wf.started == [0, 1, 1, 2]  # the step in progress ran again; nothing else did


async def test_json_refuses_unserializable_state_pickle_accepts_it() -> None:
    wf = Asker()
    ctx = Context(wf)
    await ctx.store.set("lock", asyncio.Lock())
    with pytest.raises(StateValidationError, match="lock"):
        ctx.to_dict(serializer=JsonSerializer())
    payload = ctx.to_dict(serializer=PickleSerializer())
    restored = Context.from_dict(wf, payload, serializer=PickleSerializer())
    assert isinstance(await restored.store.get("lock"), asyncio.Lock)


@pytest.mark.parametrize(
    "payload", [{}, {"version": 99, "state": {}}, {"version": 1}, [1, 2], "context"]
)
def test_a_payload_that_is_not_a_context_is_refused(payload: object) -> None:
    with pytest.raises(ContextSerdeError, match="not a context payload"):
        Context.from_dict(Asker(), payload)  # type: ignore[arg-type]


async def test_to_dict_inside_a_step_is_refused() -> None:
    errors: list[str] = []

    class Flow(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            try:
                ctx.to_dict()
            except ContextStateError as exc:
                errors.append(str(exc))
            return StopEvent()

    await Flow().run()
    assert errors == ["to_dict is only available from handler code, not from within steps."]


async def test_state_of_a_finished_run_round_trips() -> None:
    wf = Asker()
    ctx = Context(wf)
    await ctx.store.set("a.b", [1, 2])
    restored = Context.from_dict(wf, json.loads(json.dumps(ctx.to_dict())))
    assert await restored.store.get("a.b.1") == 2
