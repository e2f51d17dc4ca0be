"""A human approval flow: a draft is published only after a person says yes.

The ``write`` step drafts a post and asks for approval with an ``InputRequiredEvent``; the
``review`` step takes the person's ``HumanResponseEvent``. "y" publishes, anything else is
taken as a note: the draft is revised and the question asked again. The "writer" is a
deterministic fake, so this runs offline.

Run it and answer at the terminal::

    python examples/human_approval.py "rivers"

``workflow`` below is the module-level object the ``riverbed`` CLI loads
(``riverbed run examples/human_approval.py:workflow``).
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from riverbed import (
    Context,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    step,
)


class Review(BaseModel):
    topic: str = ""
    draft: str = ""
    revisions: int = 0


class Topic(StartEvent):
    topic: str = "rivers"


def ask(draft: str) -> InputRequiredEvent:
    # `prefix` is the question a terminal shows; extra fields (`draft`) travel with it.
    return InputRequiredEvent(prefix=f"Draft: {draft}\nPublish it? [y/note] ", draft=draft)


class HumanApproval(Workflow):
    @step
    async def write(self, ctx: Context[Review], ev: Topic) -> InputRequiredEvent:
        draft = f"Why {ev.topic} matter: they carve valleys, carry silt and feed deltas."
        async with ctx.store.edit_state() as state:
            state.topic = ev.topic
            state.draft = draft
        return ask(draft)

    @step
    async def review(
        self, ctx: Context[Review], ev: HumanResponseEvent
    ) -> InputRequiredEvent | StopEvent:
        answer = str(ev.get("response", "")).strip()
        if answer.lower() in {"y", "yes"}:
            state = await ctx.store.get_state()
            return StopEvent(result=f"published after {state.revisions} revision(s): {state.draft}")
        async with ctx.store.edit_state() as state:
            state.revisions += 1
            state.draft = f"{state.draft} [revised: {answer or 'no note'}]"
            draft = state.draft
        return ask(draft)


workflow = HumanApproval()


async def main(topic: str) -> None:
    handler = workflow.run(topic=topic)
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            try:
                # input() blocks: run it in a thread so the run's loop keeps going.
                answer = await asyncio.to_thread(input, event.get("prefix", "> "))
            except EOFError:  # stdin closed: nobody is there to answer
                await handler.cancel_run()
                break
            await handler.send_event(HumanResponseEvent(response=answer))
    try:
        print(await handler)
    except WorkflowCancelledByUser:
        sys.exit("not published: no answer")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "rivers"))
