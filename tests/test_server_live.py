"""Live stream events (``durable=False``) go to connected SSE clients, marked as live."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step
from riverbed.client import AsyncClient
from riverbed.server import create_app
from server_workflows.harness import serve

pytestmark = pytest.mark.usefixtures("hang_guard")


class Token(Event):
    text: str


class Note(Event):
    text: str


class Talker(Workflow):
    @step
    async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(0.4)  # the client connects meanwhile
        for word in ("one", "two", "three"):
            ctx.write_event_to_stream(Token(text=word), durable=False)
        ctx.write_event_to_stream(Note(text="kept"))
        await asyncio.sleep(0.1)
        return StopEvent(result="spoken")


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    workflow = Talker(store=f"sqlite:///{tmp_path / 'runs.db'}")
    async with serve(create_app([workflow])) as base:
        yield base
    await workflow.store.close()


async def test_live_events_are_streamed_without_an_id_and_not_replayed(base_url: str) -> None:
    name = Talker().workflow_name
    async with AsyncClient(base_url) as client:
        run_id = (await client.start(name, {}))["run_id"]
        seen = [(e.kind, e.seq, e.type, e.data) async for e in client.stream(run_id)]
        assert seen[:3] == [
            ("live", None, "Token", {"text": "one"}),
            ("live", None, "Token", {"text": "two"}),
            ("live", None, "Token", {"text": "three"}),
        ]
        assert [(k, s, t) for k, s, t, _ in seen[3:]] == [
            ("stream", 1, "Note"),
            ("end", 2, "StopEvent"),
        ]
        # Read again from the start: only what was stored comes back.
        again = [(e.kind, e.type) async for e in client.stream(run_id)]
        assert again == [("stream", "Note"), ("end", "StopEvent")]
