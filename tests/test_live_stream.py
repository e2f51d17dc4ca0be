"""Live stream events: shown to readers at once, never stored by durable runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step

pytestmark = pytest.mark.usefixtures("hang_guard")


class Tokens(Workflow):
    @step
    async def speak(self, ctx: Context, ev: StartEvent) -> StopEvent:
        for word in ("hello", "world"):
            ctx.write_event_to_stream(Event(token=word), durable=False)
        ctx.write_event_to_stream(Event(msg="kept"))
        await asyncio.sleep(0.2)  # the live tokens are out while the step still runs
        return StopEvent(result="said")


async def test_live_stream_events_reach_readers_at_once_and_are_never_stored(
    tmp_path: Path,
) -> None:
    workflow = Tokens(store=f"sqlite:///{tmp_path / 'runs.db'}")
    handler = workflow.run(run_id="t")
    seen = []
    async for ev in handler.stream_events():
        seen.append((ev.get("token") or ev.get("msg") or type(ev).__name__, handler.done()))
    assert seen[:2] == [("hello", False), ("world", False)]
    assert [name for name, _ in seen] == ["hello", "world", "kept", "StopEvent"]
    stream = handler.ctx._run.stream  # type: ignore[union-attr]
    assert [stream.is_live(i) for i in range(4)] == [True, True, False, False]
    rows = await workflow.store.read_stream("t")
    assert [json.loads(r.payload) for r in rows] == [{"msg": "kept"}]
