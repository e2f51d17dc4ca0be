"""Human input across processes: the workflows and the child process of
``tests/test_durable_hitl.py``.

Run from the project root as ``python -m tests.crash.hitl MODE DBPATH RUN_ID [ARG]``:

- ``start-pair`` starts a :class:`PairFlow` run, reads its stream until the
  ``InputRequiredEvent`` and exits without answering (the run waits in the file);
- ``start-wait`` starts a :class:`WaitFlow` run (ARG: the side-effect file) and does the
  same; ``resume-wait`` resumes it; both then ``hold``: they print ``WAITING`` and sleep
  until the test kills them, unless ARG after the file is ``exit``;
- ``start-pair-live`` starts a :class:`PairFlow` run, prints ``WAITING`` once it asks, keeps
  the run (and its process) alive until the answer comes through the store, and prints the
  result;
- ``start-stream-wait`` starts a :class:`StreamWaitFlow` run and exits once it asks;
- ``start-internal`` starts an :class:`InternalAnswerFlow` run and awaits it (the tests
  run it with a crash point that kills it after the answering step's commit);
- ``start-send-wait`` starts a :class:`SendWaitFlow` run and awaits it (killed, like
  ``start-internal``, after the first commit);
- ``start-state-wait`` starts a :class:`StateWaitFlow` run and awaits it (killed after
  the first commit, too);
- ``answer`` sends ``HumanResponseEvent(response=ARG)`` with ``client_event_id="answer-1"``
  to a :class:`WaitFlow` run, then waits for the result and prints it.

The test process imports this file under the same module name, so both sides store the
events under the same type keys.
"""

from __future__ import annotations

import asyncio
import os
import sys

from pydantic import BaseModel

from riverbed import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowHandler,
    step,
)

CLIENT_EVENT_ID = "answer-1"


class Ask(StartEvent):
    topic: str
    #: where WaitFlow's step appends a line (its pid) each time the code before the wait runs
    side_file: str = ""


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class PairFlow(Workflow):
    """The event-pair pattern: one step asks and finishes, another takes the answer."""

    @step
    async def ask(self, ctx: Context, ev: Ask) -> InputRequiredEvent:
        async with ctx.store.edit_state() as state:
            state["topic"] = ev.topic
            state["asked"] = state.get("asked", 0) + 1
        return InputRequiredEvent(prefix=f"What about {ev.topic}?")

    @step
    async def answer(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state["answers"] = [*state.get("answers", []), ev.response]
            topic = state["topic"]
        return StopEvent(result=f"{topic}: {ev.response}")


class WaitFlow(Workflow):
    """One step waits for the answer with ``ctx.wait_for_event``."""

    @step
    async def ask(self, ctx: Context, ev: Ask) -> StopEvent:
        # The code before the wait: a side effect outside the run, counted in a file.
        await asyncio.to_thread(_append, ev.side_file, str(os.getpid()))
        answer = await ctx.wait_for_event(
            HumanResponseEvent,
            waiter_event=InputRequiredEvent(prefix=f"What about {ev.topic}?"),
            timeout=None,
        )
        async with ctx.store.edit_state() as state:
            state["answers"] = [*state.get("answers", []), answer.response]
        return StopEvent(result=f"{ev.topic}: {answer.response}")


class Progress(Event):
    note: str


class StreamWaitFlow(Workflow):
    """The question is streamed by hand before a plain ``wait_for_event`` (the pattern of
    LlamaIndex's older human-in-the-loop examples)."""

    @step
    async def ask(self, ctx: Context, ev: Ask) -> StopEvent:
        ctx.write_event_to_stream(Progress(note="thinking"))
        ctx.write_event_to_stream(InputRequiredEvent(prefix=f"What about {ev.topic}?"))
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=None)
        ctx.write_event_to_stream(Progress(note="thanks"))
        return StopEvent(result=f"{ev.topic}: {answer.response}")


class Reply(Event):
    value: str


class InternalAnswerFlow(Workflow):
    """One step waits for an event that another step of the run sends."""

    @step
    async def wait(self, ctx: Context, ev: Ask) -> StopEvent:
        reply = await ctx.wait_for_event(Reply, timeout=None)
        return StopEvent(result=f"{ev.topic}: {reply.value}")

    @step
    async def reply(self, ctx: Context, ev: Ask) -> None:
        await asyncio.sleep(0.2)  # the other step is waiting by then
        ctx.send_event(Reply(value="from a sibling"))


class Ping(Event):
    pass


class SendWaitFlow(Workflow):
    """A step sends an event and waits, in the same step, for the reply another step makes
    from it."""

    @step
    async def ask(self, ctx: Context, ev: Ask) -> Ping | StopEvent:
        ctx.send_event(Ping())
        reply = await ctx.wait_for_event(Reply, timeout=None)
        return StopEvent(result=f"{ev.topic}: {reply.value}")

    @step
    async def answer(self, ctx: Context, ev: Ping) -> None:
        ctx.send_event(Reply(value="pong"))


class Tally(BaseModel):
    asks: int = 0
    answers: int = 0


class StateWaitFlow(Workflow):
    """Like :class:`SendWaitFlow`, and both steps change the state (the asking step before
    its wait)."""

    @step
    async def ask(self, ctx: Context[Tally], ev: Ask) -> Ping | StopEvent:
        async with ctx.store.edit_state() as tally:
            tally.asks += 1
        ctx.send_event(Ping())
        reply = await ctx.wait_for_event(Reply, timeout=None)
        tally = await ctx.store.get_state()
        return StopEvent(
            result=f"{ev.topic}: {reply.value}, asks={tally.asks}, answers={tally.answers}"
        )

    @step
    async def answer(self, ctx: Context[Tally], ev: Ping) -> None:
        async with ctx.store.edit_state() as tally:
            tally.answers += 1
        ctx.send_event(Reply(value="pong"))


def url(db_path: str) -> str:
    return f"sqlite:///{db_path}"


async def until_asked(handler: WorkflowHandler) -> None:
    """Read the stream until the question; the run must not have ended."""
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            return
        assert not isinstance(ev, StopEvent), f"the run ended: {ev!r}"


async def hold_or_exit(wf: Workflow, then: str) -> int:
    print("WAITING", flush=True)
    if then == "exit":
        await wf.store.close()
        return 0
    await asyncio.sleep(3600)  # the test SIGKILLs this process
    return 1


async def main(mode: str, db_path: str, run_id: str, *args: str) -> int:
    if mode == "start-pair-live":
        # Stays alive holding the run; another process answers it through the store.
        pair = PairFlow(store=url(db_path))
        handler = pair.run(run_id=run_id, start_event=Ask(topic="rivers"))
        await until_asked(handler)
        print("WAITING", flush=True)
        print(await handler, flush=True)
        await pair.store.close()
        return 0
    if mode in ("start-internal", "start-send-wait", "start-state-wait"):
        flows = {
            "start-internal": InternalAnswerFlow,
            "start-send-wait": SendWaitFlow,
            "start-state-wait": StateWaitFlow,
        }
        flow = flows[mode](store=url(db_path))
        print(await flow.run(run_id=run_id, start_event=Ask(topic="rivers")), flush=True)
        await flow.store.close()
        return 0
    if mode == "start-stream-wait":
        flow = StreamWaitFlow(store=url(db_path))
        await until_asked(flow.run(run_id=run_id, start_event=Ask(topic="rivers")))
        return await hold_or_exit(flow, "exit")
    if mode == "start-pair":
        pair = PairFlow(store=url(db_path))
        await until_asked(pair.run(run_id=run_id, start_event=Ask(topic="rivers")))
        return await hold_or_exit(pair, "exit")
    wf = WaitFlow(store=url(db_path))
    if mode == "start-wait":
        side_file, then = args[0], args[1] if len(args) > 1 else "hold"
        handler = wf.run(run_id=run_id, start_event=Ask(topic="rivers", side_file=side_file))
        await until_asked(handler)
        return await hold_or_exit(wf, then)
    if mode == "resume-wait":
        await until_asked(await wf.resume(run_id))
        return await hold_or_exit(wf, args[0] if args else "hold")
    if mode == "answer":
        answer = HumanResponseEvent(response=args[0])
        handler = await wf.send_event(run_id, answer, client_event_id=CLIENT_EVENT_ID)
        print(await handler, flush=True)
        await wf.store.close()
        return 0
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    # Run the module's own copy, not __main__'s: event types are stored under their module's
    # name, and the test process loads this file as tests.crash.hitl.
    from tests.crash.hitl import main as _main

    sys.exit(asyncio.run(_main(*sys.argv[1:])))
