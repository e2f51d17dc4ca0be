"""WorkflowTestRunner: LlamaIndex's signature and result, plus riverbed's extra counts."""

from collections import Counter

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step
from riverbed.testing import WorkflowTestResult, WorkflowTestRunner


class Hop(Event):
    n: int


class Note(Event):
    text: str


class LoudNote(Note):
    pass


class Hopper(Workflow):
    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Hop | None:
        for n in range(ev.get("hops", 3)):
            ctx.send_event(Hop(n=n))
        ctx.write_event_to_stream(LoudNote(text="sent"))
        return None

    @step
    async def land(self, ctx: Context, ev: Hop) -> StopEvent | None:
        ctx.write_event_to_stream(Note(text=f"hop {ev.n}"))
        hops = ctx.collect_events(ev, [Hop] * 3)
        return StopEvent(result=[h.n for h in hops]) if hops else None


async def test_the_llamaindex_call_runs() -> None:
    # The signature of llama-index-workflows' runner, positionally and by keyword.
    runner = WorkflowTestRunner(Hopper())
    by_keyword = await runner.run(start_event=StartEvent(hops=3), expose_internal=False)
    assert by_keyword.result == [0, 1, 2]
    positional = await runner.run(StartEvent(), None, True, [Note])
    assert positional.result == [0, 1, 2]
    assert isinstance(by_keyword, WorkflowTestResult)


async def test_keyword_arguments_still_build_the_start_event() -> None:
    result = await WorkflowTestRunner(Hopper()).run(hops=3, expose_internal=False)
    assert result.result == [0, 1, 2]
    assert result.events[0].get("hops") == 3


async def test_event_types_counts_the_collected_events() -> None:
    result = await WorkflowTestRunner(Hopper()).run()
    assert result.event_types == Counter({Note: 3, LoudNote: 1, StopEvent: 1})
    assert result.event_types == Counter(type(ev) for ev in result.collected)
    assert Hop not in result.event_types  # routed between steps, never streamed


async def test_all_event_types_counts_every_event_of_the_run() -> None:
    result = await WorkflowTestRunner(Hopper()).run(exclude_events=[Note])
    assert result.all_event_types == Counter(
        {StartEvent: 1, Hop: 3, Note: 3, LoudNote: 1, StopEvent: 1}
    )


async def test_exclude_events_matches_the_exact_type() -> None:
    # As in LlamaIndex: excluding Note keeps its subclass LoudNote.
    result = await WorkflowTestRunner(Hopper()).run(exclude_events=[Note])
    assert [type(ev) for ev in result.collected] == [LoudNote, StopEvent]
    assert result.event_types == Counter({LoudNote: 1, StopEvent: 1})


async def test_expose_internal_changes_nothing() -> None:
    # riverbed streams no internal events, so both settings give the same stream.
    shown = await WorkflowTestRunner(Hopper()).run(expose_internal=True)
    hidden = await WorkflowTestRunner(Hopper()).run(expose_internal=False)
    assert [type(ev) for ev in shown.collected] == [type(ev) for ev in hidden.collected]
