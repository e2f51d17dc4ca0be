"""A research assistant: plan sub-questions, research them in parallel, write a report.

Shows fan-out with ``ctx.send_event``, fan-in with ``ctx.collect_events``, typed state edited
atomically by parallel steps, a retry policy on a flaky step, and progress streamed to the
caller. The run is durable: each step commits to ``riverbed-demo.db`` (SQLite, no server).
The "LLM" is a deterministic fake, so this runs offline and prints the same answer every
time.

Run it: ``python examples/research_assistant.py "how do rivers shape valleys"``; continue a
run whose process was killed: ``python examples/research_assistant.py --resume RUN_ID``.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

from pydantic import BaseModel, Field

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


class FakeLLM:
    """Answers deterministically from a hash of the prompt; the first call for every other
    new prompt fails, to show retries."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def complete(self, prompt: str) -> str:
        await asyncio.sleep(0.01)  # pretend to wait for the network
        self.calls[prompt] = self.calls.get(prompt, 0) + 1
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        if self.calls[prompt] == 1 and len(self.calls) % 2 == 1:
            raise ConnectionError("the fake LLM dropped the connection")
        return f"finding {digest[:6]} about {prompt!r}"


LLM = FakeLLM()


class ResearchState(BaseModel):
    question: str = ""
    planned: int = 0
    findings: dict[str, str] = Field(default_factory=dict)
    llm_calls: int = 0


class Ask(StartEvent):
    question: str
    angles: int = 3


class SubQuestion(Event):
    text: str


class Finding(Event):
    sub_question: str
    text: str


class Progress(Event):
    message: str


class ResearchAssistant(Workflow):
    @step
    async def plan(self, ctx: Context[ResearchState], ev: Ask) -> SubQuestion | None:
        angles = ["history", "mechanism", "examples", "open problems", "sources"][: ev.angles]
        async with ctx.store.edit_state() as state:
            state.question = ev.question
            state.planned = len(angles)
        for angle in angles:
            ctx.send_event(SubQuestion(text=f"{ev.question} ({angle})"))
        ctx.write_event_to_stream(Progress(message=f"planned {len(angles)} sub-questions"))
        return None

    @step(num_workers=4, retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=0.05))
    async def research(self, ctx: Context[ResearchState], ev: SubQuestion) -> Finding:
        answer = await LLM.complete(ev.text)
        async with ctx.store.edit_state() as state:
            state.llm_calls += 1
            state.findings[ev.text] = answer
        ctx.write_event_to_stream(Progress(message=f"researched: {ev.text}"))
        return Finding(sub_question=ev.text, text=answer)

    @step
    async def report(self, ctx: Context[ResearchState], ev: Finding) -> StopEvent | None:
        state = await ctx.store.get_state()
        # Findings arrive in any order; wait until there is one per sub-question.
        found = ctx.collect_events(ev, [Finding] * state.planned)
        if found is None:
            return None
        lines = [f"Report: {state.question}"]
        for finding in sorted(found, key=lambda f: f.sub_question):
            lines.append(f"  - {finding.sub_question}: {finding.text}")
        return StopEvent(result="\n".join(lines))


async def main(question: str, db: str) -> None:
    # Durable: every step commits to the SQLite file; kill this process at any point and
    # `python examples/research_assistant.py --resume RUN_ID` continues where it stopped.
    workflow = ResearchAssistant(timeout=60, store=f"sqlite:///{db}")
    if question.startswith("--resume"):
        handler = await workflow.resume(question.split(maxsplit=1)[1])
    else:
        handler = workflow.run(question=question, angles=3)
    async for event in handler.stream_events():
        if isinstance(event, Progress):
            print(f"[progress] {event.message}")
    print(await handler)
    state_json, _ = await workflow.store.read_state(handler.run_id)
    state = ResearchState.model_validate_json(state_json)
    retried = sum(1 for calls in LLM.calls.values() if calls > 1)
    print(
        f"{state.llm_calls} findings, {retried} of them after a retry "
        f"({sum(LLM.calls.values())} LLM calls)"
    )
    record = await workflow.store.get_run(handler.run_id)
    print(f"run {record.run_id} {record.status.value}, recorded in {db}")


if __name__ == "__main__":
    args = sys.argv[1:]
    question = " ".join(args) if args else "how do rivers shape valleys"
    asyncio.run(main(question, db="riverbed-demo.db"))
