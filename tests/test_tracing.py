"""OpenTelemetry spans (riverbed.otel) and the tracer hooks (riverbed.tracing)."""

import asyncio
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import riverbed.otel
from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    HumanResponseEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    WorkflowTimeoutError,
    step,
)
from riverbed.events import Event as EventType
from riverbed.testing import FakeClock
from riverbed.tracing import add_tracer, get_tracers, remove_tracer

pytestmark = pytest.mark.usefixtures("hang_guard")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


@pytest.fixture
def exporter(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    riverbed.otel.instrument(tracer_provider=provider)
    yield exporter
    riverbed.otel.uninstrument()
    assert get_tracers() == ()


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = _by_name(spans, name)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def _trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


# -- fan-out ------------------------------------------------------------------------------
class Item(Event):
    n: int


class Done(Event):
    n: int


class FanOut(Workflow):
    """Three items worked on at once; each worker waits until all three have started."""

    def __init__(self, provider: TracerProvider, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_tracer = provider.get_tracer("user")
        self.started = 0
        self.all_started = asyncio.Event()

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> Item | None:
        for n in range(3):
            ctx.send_event(Item(n=n))

    @step(num_workers=3)
    async def work(self, ev: Item) -> Done:
        self.started += 1
        if self.started == 3:
            self.all_started.set()
        await self.all_started.wait()
        with self.user_tracer.start_as_current_span(f"user {ev.n}"):
            await asyncio.sleep(0)
        return Done(n=ev.n)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        done = ctx.collect_events(ev, [Done] * 3)
        if done is None:
            return None
        return StopEvent(result=sorted(d.n for d in done))


async def test_parallel_steps_are_all_children_of_the_run_span(
    exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    workflow = FanOut(provider, workflow_name="fan")
    assert await workflow.run(run_id="fan-1") == [0, 1, 2]
    spans = exporter.get_finished_spans()
    run = _one(spans, "run fan")
    assert run.parent is None
    assert dict(run.attributes or {}) == {
        "riverbed.workflow": "fan",
        "riverbed.run_id": "fan-1",
        "riverbed.event_in": "StartEvent",
        "riverbed.status": "completed",
        "riverbed.event_out": "StopEvent",
    }
    assert run.status.status_code is StatusCode.UNSET
    steps = [s for s in spans if s.name.startswith("step ")]
    assert sorted(s.name for s in steps) == ["step join"] * 3 + ["step split"] + ["step work"] * 3
    for span in steps:
        assert _parent_id(span) == _span_id(run), span.name
        assert _trace_id(span) == _trace_id(run)
        assert run.end_time is not None
        assert span.end_time is not None
        assert span.end_time <= run.end_time
    workers = _by_name(spans, "step work")
    # The three worker attempts really overlapped: each started before any ended.
    assert max(s.start_time or 0 for s in workers) < min(s.end_time or 0 for s in workers)
    assert sorted(dict(s.attributes or {})["riverbed.event_in"] for s in workers) == ["Item"] * 3
    for span in workers:
        attributes = dict(span.attributes or {})
        assert attributes["riverbed.workflow"] == "fan"
        assert attributes["riverbed.run_id"] == "fan-1"
        assert attributes["riverbed.step"] == "work"
        assert attributes["riverbed.attempt"] == 1
        assert attributes["riverbed.event_out"] == "Done"
        assert attributes["riverbed.outcome"] == "ok"
    # A span the step's own code opens is a child of that step's span.
    worker_ids = {_span_id(s) for s in workers}
    user_spans = [s for s in spans if s.name.startswith("user ")]
    assert len(user_spans) == 3
    assert {_parent_id(s) for s in user_spans} == worker_ids
    split = _one(spans, "step split")
    assert "riverbed.event_out" not in (split.attributes or {})  # it returned None


# -- failures and retries ------------------------------------------------------------------
async def test_a_failing_run_records_the_exception_on_both_spans(
    exporter: InMemorySpanExporter,
) -> None:
    class Broken(Workflow):
        @step
        async def explode(self, ev: StartEvent) -> StopEvent:
            raise ValueError("no fuel")

    with pytest.raises(ValueError, match="no fuel"):
        await Broken(workflow_name="broken").run()
    spans = exporter.get_finished_spans()
    run, attempt = _one(spans, "run broken"), _one(spans, "step explode")
    assert _parent_id(attempt) == _span_id(run)
    for span in (run, attempt):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: no fuel"
        [event] = span.events
        assert event.name == "exception"
        assert dict(event.attributes or {})["exception.type"] == "ValueError"
        assert dict(event.attributes or {})["exception.message"] == "no fuel"
    assert dict(attempt.attributes or {})["riverbed.outcome"] == "failed"
    assert dict(run.attributes or {})["riverbed.status"] == "failed"
    assert dict(run.attributes or {})["riverbed.event_out"] == "WorkflowFailedEvent"
    # The run's span ends after its step's span.
    assert attempt.end_time is not None
    assert run.end_time is not None
    assert attempt.end_time <= run.end_time


async def test_each_retry_is_a_span_of_its_own(
    exporter: InMemorySpanExporter, clock: FakeClock
) -> None:
    class Flaky(Workflow):
        calls = 0

        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=2.0))
        async def call(self, ev: StartEvent) -> StopEvent:
            type(self).calls += 1
            if self.calls < 3:
                raise ConnectionError(f"try {self.calls}")
            return StopEvent(result="ok")

    assert await Flaky(workflow_name="flaky", clock=clock).run() == "ok"
    spans = exporter.get_finished_spans()
    run = _one(spans, "run flaky")
    attempts = sorted(
        _by_name(spans, "step call"),
        key=lambda s: dict(s.attributes or {})["riverbed.attempt"],  # type: ignore[arg-type,return-value]
    )
    assert [dict(s.attributes or {})["riverbed.attempt"] for s in attempts] == [1, 2, 3]
    assert [dict(s.attributes or {})["riverbed.outcome"] for s in attempts] == [
        "retry",
        "retry",
        "ok",
    ]
    assert [dict(s.attributes or {}).get("riverbed.retry_in_s") for s in attempts] == [
        2.0,
        2.0,
        None,
    ]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [dict(s.events[0].attributes or {})["exception.message"] for s in attempts[:2]] == [
        "try 1",
        "try 2",
    ]
    assert all(_parent_id(s) == _span_id(run) for s in attempts)
    assert run.status.status_code is StatusCode.UNSET


# -- nesting -------------------------------------------------------------------------------
class Inner(Workflow):
    @step
    async def double(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.x * 2)


class Outer(Workflow):
    @step
    async def prepare(self, ev: StartEvent) -> Item:
        return Item(n=ev.x)

    @step
    async def delegate(self, ev: Item) -> StopEvent:
        inner = await Inner(workflow_name="inner").run(x=ev.n)
        return StopEvent(result=inner + 1)


async def test_a_nested_run_is_a_child_of_the_step_that_started_it(
    exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    app = provider.get_tracer("app")
    with app.start_as_current_span("request"):
        assert await Outer(workflow_name="outer").run(x=5) == 11
    spans = exporter.get_finished_spans()
    request = _one(spans, "request")
    outer, inner = _one(spans, "run outer"), _one(spans, "run inner")
    prepare, delegate = _one(spans, "step prepare"), _one(spans, "step delegate")
    double = _one(spans, "step double")
    assert _parent_id(outer) == _span_id(request)
    assert _parent_id(prepare) == _span_id(outer)
    assert _parent_id(delegate) == _span_id(outer)
    assert _parent_id(inner) == _span_id(delegate)
    assert _parent_id(double) == _span_id(inner)
    assert len({_trace_id(s) for s in spans}) == 1


async def test_a_run_started_by_a_sync_step_in_its_thread_is_its_child(
    exporter: InMemorySpanExporter,
) -> None:
    class SyncOuter(Workflow):
        @step
        def delegate(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=Inner(workflow_name="inner").run_sync(x=ev.x))

    assert await SyncOuter(workflow_name="sync").run(x=2) == 4
    spans = exporter.get_finished_spans()
    delegate, inner = _one(spans, "step delegate"), _one(spans, "run inner")
    assert _parent_id(inner) == _span_id(delegate)
    assert _parent_id(_one(spans, "step double")) == _span_id(inner)


async def test_runs_started_side_by_side_get_separate_trees(
    exporter: InMemorySpanExporter,
) -> None:
    results = await asyncio.gather(*(Outer(workflow_name="outer").run(x=n) for n in range(3)))
    assert results == [1, 3, 5]
    spans = exporter.get_finished_spans()
    outers = _by_name(spans, "run outer")
    assert len(outers) == 3
    assert all(s.parent is None for s in outers)
    assert len({_trace_id(s) for s in outers}) == 3
    by_run = {dict(s.attributes or {})["riverbed.run_id"]: s for s in outers}
    for delegate in _by_name(spans, "step delegate"):
        run_id = dict(delegate.attributes or {})["riverbed.run_id"]
        assert _parent_id(delegate) == _span_id(by_run[run_id])
    for inner in _by_name(spans, "run inner"):
        parent = next(s for s in spans if _span_id(s) == _parent_id(inner))
        assert parent.name == "step delegate"


# -- endings while steps run ---------------------------------------------------------------
async def test_a_cancelled_run_ends_its_running_steps_first(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    class Slow(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            started.set()
            await asyncio.sleep(60)
            return StopEvent()

    handler = Slow(workflow_name="slow").run()
    await started.wait()
    with caplog.at_level(logging.ERROR, logger="opentelemetry"):
        await handler.cancel_run()
        with pytest.raises(WorkflowCancelledByUser):
            await handler
        await asyncio.sleep(0)
    assert [r for r in caplog.records if r.name.startswith("opentelemetry")] == []
    spans = exporter.get_finished_spans()
    run, attempt = _one(spans, "run slow"), _one(spans, "step wait")
    assert dict(attempt.attributes or {})["riverbed.outcome"] == "cancelled"
    assert attempt.status.status_code is StatusCode.UNSET
    assert dict(run.attributes or {})["riverbed.status"] == "cancelled"
    assert run.status.status_code is StatusCode.UNSET
    assert attempt.end_time is not None
    assert run.end_time is not None
    assert attempt.end_time <= run.end_time


async def test_a_timed_out_run_is_an_error(
    exporter: InMemorySpanExporter, clock: FakeClock
) -> None:
    class Stuck(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            await asyncio.Event().wait()
            return StopEvent()

    with pytest.raises(WorkflowTimeoutError):
        await Stuck(workflow_name="stuck", timeout=5, clock=clock).run()
    spans = exporter.get_finished_spans()
    run = _one(spans, "run stuck")
    assert dict(run.attributes or {})["riverbed.status"] == "timed_out"
    assert run.status.status_code is StatusCode.ERROR
    assert dict(_one(spans, "step wait").attributes or {})["riverbed.outcome"] == "cancelled"


# -- durable runs --------------------------------------------------------------------------
class Twice(Workflow):
    @step
    async def first(self, ev: StartEvent) -> Item:
        return Item(n=ev.x)

    @step
    async def second(self, ev: Item) -> StopEvent:
        return StopEvent(result=ev.n * 2)


async def test_a_durable_run_has_the_same_span_tree(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    workflow = Twice(workflow_name="twice", store=f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        assert await workflow.run(x=4, run_id="durable-1") == 8
    finally:
        await workflow.store.close()
    spans = exporter.get_finished_spans()
    run = _one(spans, "run twice")
    first, second = _one(spans, "step first"), _one(spans, "step second")
    assert _parent_id(first) == _parent_id(second) == _span_id(run)
    assert dict(first.attributes or {})["riverbed.event_out"] == "Item"
    assert dict(second.attributes or {})["riverbed.run_id"] == "durable-1"
    assert dict(run.attributes or {})["riverbed.status"] == "completed"


def _hitl_module() -> ModuleType:
    # The child runs ``python -m tests.crash.hitl``; load the same file under the same name
    # (as test_durable_hitl does), so both processes agree on the events' type keys.
    name = "tests.crash.hitl"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "crash" / "hitl.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _hitl_child(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tests.crash.hitl ARGS``: here, a process that leaves a run waiting."""
    return subprocess.run(
        [sys.executable, "-m", "tests.crash.hitl", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_durable_run_continued_in_another_process_gets_a_run_span(
    exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    hitl = _hitl_module()
    db = tmp_path / "hitl.db"
    first = _hitl_child("start-pair", str(db), "pair-1")
    assert first.stdout.strip() == "WAITING", first.stderr
    workflow = hitl.PairFlow(store=hitl.url(db))
    try:
        handler = await workflow.send_event("pair-1", HumanResponseEvent(response="yes"))
        assert handler is not None
        assert await handler == "rivers: yes"
    finally:
        await workflow.store.close()
    spans = exporter.get_finished_spans()
    [run] = [s for s in spans if s.name.startswith("run ")]
    answer = _one(spans, "step answer")
    assert _parent_id(answer) == _span_id(run)
    assert dict(answer.attributes or {})["riverbed.event_in"] == "HumanResponseEvent"
    attributes = dict(run.attributes or {})
    assert attributes["riverbed.run_id"] == "pair-1"
    assert attributes["riverbed.status"] == "completed"
    assert "riverbed.event_in" not in attributes  # resumed: its start event ran elsewhere


# -- the hooks themselves ------------------------------------------------------------------
class Recorder:
    """A tracer that writes down every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def run_started(self, workflow: str, run_id: str, event: EventType | None) -> Any:
        self.calls.append(("run_started", run_id, type(event).__name__))
        return run_id

    def run_finished(
        self, run: Any, status: str, result: EventType, error: BaseException | None
    ) -> None:
        self.calls.append(("run_finished", run, status, type(result).__name__))

    def attempt_started(self, run: Any, step: str, attempt: int, event: EventType) -> Any:
        self.calls.append(("attempt_started", run, step, attempt, type(event).__name__))
        return (run, step)

    def attempt_finished(
        self,
        span: Any,
        outcome: str,
        result: EventType | None,
        error: BaseException | None,
        retry_in: float | None,
    ) -> None:
        name = type(result).__name__ if result is not None else None
        self.calls.append(("attempt_finished", span, outcome, name, repr(error), retry_in))


async def test_a_registered_tracer_hears_every_run_and_attempt(
    exporter: InMemorySpanExporter,
) -> None:
    recorder = Recorder()
    add_tracer(recorder)
    add_tracer(recorder)  # no effect
    try:
        assert get_tracers().count(recorder) == 1
        # verbose, OpenTelemetry and the recorder side by side
        assert await Twice(verbose=True).run(x=1, run_id="r") == 2
    finally:
        remove_tracer(recorder)
    assert recorder not in get_tracers()
    assert recorder.calls == [
        ("run_started", "r", "StartEvent"),
        ("attempt_started", "r", "first", 1, "StartEvent"),
        ("attempt_finished", ("r", "first"), "ok", "Item", "None", None),
        ("attempt_started", "r", "second", 1, "Item"),
        ("attempt_finished", ("r", "second"), "ok", "StopEvent", "None", None),
        ("run_finished", "r", "completed", "StopEvent"),
    ]
    assert len(exporter.get_finished_spans()) == 3


async def test_instrument_is_idempotent(provider: TracerProvider) -> None:
    first = riverbed.otel.instrument(tracer_provider=provider)
    try:
        assert riverbed.otel.instrument() is first
        assert riverbed.otel.instrument(tracer_provider=provider) is first
        assert get_tracers() == (first,)
        other = TracerProvider()
        replaced = riverbed.otel.instrument(tracer_provider=other)
        assert replaced is not first
        assert get_tracers() == (replaced,)
        other.shutdown()
    finally:
        riverbed.otel.uninstrument()
        riverbed.otel.uninstrument()  # no effect
    assert get_tracers() == ()


async def test_an_unobserved_run_has_no_tracer() -> None:
    assert get_tracers() == ()
    handler = Twice().run(x=1)
    assert await handler == 2
    assert handler._run.tracer is None


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_core_does_not_import_opentelemetry() -> None:
    done = _python(
        "import sys, riverbed\n"
        "class W(riverbed.Workflow):\n"
        "    @riverbed.step\n"
        "    async def go(self, ev: riverbed.StartEvent) -> riverbed.StopEvent:\n"
        "        return riverbed.StopEvent(result=1)\n"
        "assert W(verbose=True).run_sync() == 1\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_without_the_extra_riverbed_otel_says_what_to_install() -> None:
    done = _python(
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import riverbed.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "riverbed.otel needs OpenTelemetry: pip install 'riverbed[otel]'"
