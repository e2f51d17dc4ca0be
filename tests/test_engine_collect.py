"""ctx.collect_events: fan-in buffers."""

import asyncio
import sys

import pytest

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")


class A(Event):
    tag: str = ""


class B(Event):
    tag: str = ""


class C(Event):
    tag: str = ""


class SubA(A):
    pass


class Done(Event):
    n: int


def _recorder() -> list[object]:
    return []


async def test_collect_returns_none_until_all_arrive_then_in_expected_order() -> None:
    calls = _recorder()

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> A | B | C | None:
            ctx.send_event(C(tag="c"))
            ctx.send_event(A(tag="a"))
            ctx.send_event(B(tag="b"))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: A | B | C) -> StopEvent | None:
            got = ctx.collect_events(ev, [A, B, C])
            calls.append(None if got is None else [e.tag for e in got])
            return None if got is None else StopEvent(result=[type(e) for e in got])

    assert await Flow().run() == [A, B, C]
    assert calls == [None, None, ["a", "b", "c"]]


async def test_collect_with_repeats() -> None:
    calls = _recorder()

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Done | None:
            for i in range(5):
                ctx.send_event(Done(n=i))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
            got = ctx.collect_events(ev, [Done] * 5)
            calls.append(got is None)
            return None if got is None else StopEvent(result=[d.n for d in got])

    assert await Flow().run() == [0, 1, 2, 3, 4]
    assert calls == [True, True, True, True, False]


async def test_collect_mixed_repeats_keep_arrival_order_within_a_type() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> A | B | None:
            ctx.send_event(A(tag="a1"))
            ctx.send_event(B(tag="b1"))
            ctx.send_event(A(tag="a2"))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: A | B) -> StopEvent | None:
            got = ctx.collect_events(ev, [B, A, A])
            return None if got is None else StopEvent(result=[e.tag for e in got])

    assert await Flow().run() == ["b1", "a1", "a2"]


async def test_collect_accepts_subclasses_of_expected_types() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> A | B | None:
            ctx.send_event(SubA(tag="sub"))
            ctx.send_event(B(tag="b"))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: A | B) -> StopEvent | None:
            got = ctx.collect_events(ev, [A, B])
            return None if got is None else StopEvent(result=[type(e).__name__ for e in got])

    assert await Flow().run() == ["SubA", "B"]


async def test_buffer_ids_keep_collections_apart() -> None:
    calls: list[tuple[str, object]] = []

    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> A | None:
            for tag in ("x1", "y1", "x2", "y2", "y3"):
                ctx.send_event(A(tag=tag))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: A) -> StopEvent | None:
            buffer = ev.tag[0]
            want = 2 if buffer == "x" else 3
            got = ctx.collect_events(ev, [A] * want, buffer_id=buffer)
            calls.append((buffer, None if got is None else [e.tag for e in got]))
            results = await ctx.store.get("done", default=[])
            if got is not None:
                results = [*results, [e.tag for e in got]]
                await ctx.store.set("done", results)
            return StopEvent(result=results) if len(results) == 2 else None

    assert await Flow().run() == [["x1", "x2"], ["y1", "y2", "y3"]]
    assert calls == [
        ("x", None),
        ("y", None),
        ("x", ["x1", "x2"]),
        ("y", None),
        ("y", ["y1", "y2", "y3"]),
    ]


async def test_empty_expected_returns_empty_list() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> StopEvent:
            return StopEvent(result=ctx.collect_events(ev, []))

    assert await Flow().run() == []


async def test_a_completed_buffer_starts_over() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Done | None:
            for i in range(4):
                ctx.send_event(Done(n=i))
            return None

        @step(num_workers=1)
        async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
            got = ctx.collect_events(ev, [Done, Done])
            if got is None:
                return None
            batches = [*await ctx.store.get("batches", default=[]), [d.n for d in got]]
            await ctx.store.set("batches", batches)
            return StopEvent(result=batches) if len(batches) == 2 else None

    assert await Flow().run() == [[0, 1], [2, 3]]


async def test_buffers_belong_to_one_step() -> None:
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> A | B | None:
            ctx.send_event(A(tag="a"))
            ctx.send_event(B(tag="b"))
            return None

        @step
        async def take_a(self, ctx: Context, ev: A) -> C | None:
            # Only A ever reaches this step, so its buffer never fills.
            got = ctx.collect_events(ev, [A, B])
            return None if got is None else C(tag="take_a")

        @step
        async def take_b(self, ctx: Context, ev: B) -> C:
            return C(tag="take_b")

        @step
        async def end(self, ev: C) -> StopEvent:
            return StopEvent(result=ev.tag)

    assert await Flow().run() == "take_b"


async def test_sync_steps_collecting_in_many_threads_lose_nothing() -> None:
    # Up to num_workers threads add to the step's buffers at once. A very short GIL switch
    # interval makes unsafe interleavings likely (before the fix about one run in four lost
    # an event and stopped making progress); with the lock every run completes.
    class Flow(Workflow):
        @step
        async def begin(self, ctx: Context, ev: StartEvent) -> Done | None:
            for i in range(200):
                ctx.send_event(Done(n=i))
            return None

        @step(num_workers=16)
        def join(self, ctx: Context, ev: Done) -> StopEvent | None:
            pair = ctx.collect_events(ev, [Done, Done], buffer_id=str(ev.n // 2))
            if pair is None:
                return None
            pairs = ctx.collect_events(Done(n=-1), [Done] * 100, buffer_id="pairs")
            return None if pairs is None else StopEvent(result=len(pairs))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(10):
            assert await asyncio.wait_for(Flow().run(), 10) == 100
    finally:
        sys.setswitchinterval(interval)


async def test_a_failed_collector_attempt_does_not_collect_twice(clock: FakeClock) -> None:
    """A collector that raises after collect_events is retried; the retry must not find
    its own event already in the buffer (the failed attempt's collect is undone)."""
    from riverbed.retry_policy import ConstantDelayRetryPolicy

    failures = {"left": 1}

    class Part(Event):
        n: int

    class Flow(Workflow):
        @step
        async def fan(self, ctx: Context, ev: StartEvent) -> Part | None:
            for n in range(3):
                ctx.send_event(Part(n=n))
            return None

        @step(num_workers=1, retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=1))
        async def gather(self, ctx: Context, ev: Part) -> StopEvent | None:
            got = ctx.collect_events(ev, [Part] * 3)
            if ev.n == 1 and failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("flaky after collecting")
            if got is None:
                return None
            return StopEvent(result=[p.n for p in got])

    assert await Flow(clock=clock).run() == [0, 2, 1]
