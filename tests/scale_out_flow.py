"""The workflow of the scale-out end-to-end test (``tests/test_scale_out_e2e.py``), loaded by
every process of that test as ``tests/scale_out_flow.py:workflow``."""

from __future__ import annotations

import asyncio
import os

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class Order(StartEvent):
    item: str


class Checked(Event):
    item: str


class Progress(Event):
    label: str


class Approval(InputRequiredEvent):
    item: str


class Verdict(HumanResponseEvent):
    approved: bool


class ScaleOutFlow(Workflow):
    @step
    async def check(self, ctx: Context, ev: Order) -> Checked:
        ctx.write_event_to_stream(Progress(label=f"checked {ev.item}"))
        await asyncio.sleep(float(os.environ.get("RIVERBED_E2E_CHECK_SECONDS", "1.5")))
        await ctx.store.set("item", ev.item)
        return Checked(item=ev.item)

    @step
    async def ask(self, ev: Checked) -> Approval:
        return Approval(item=ev.item, prefix=f"approve {ev.item}?")

    @step
    async def decide(self, ctx: Context, ev: Verdict) -> StopEvent:
        item = await ctx.store.get("item")
        return StopEvent(result=f"{item}: {'approved' if ev.approved else 'rejected'}")


workflow = ScaleOutFlow(workflow_name="scale-out-approval")
