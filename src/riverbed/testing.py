"""Tools for testing workflows: a runner that returns every event, and a fake clock.

::

    clock = FakeClock()
    wf = MyWorkflow(timeout=3600, clock=clock)      # retries, timeouts, waits: instant
    result = await WorkflowTestRunner(wf).run(topic="x")
    assert result.result == "done"
    assert result.event_types[ProgressEvent] == 3      # streamed events, by type
    assert result.all_event_types[StepEvent] == 3      # every event of the run, by type
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from riverbed.context import Context
from riverbed.events import Event, StartEvent
from riverbed.stores.memory import MemoryStore
from riverbed.workflow import Workflow

__all__ = [
    "CRASHPOINTS_ENV",
    "FakeClock",
    "WorkflowTestResult",
    "WorkflowTestRunner",
    "crashpoints_env",
]

#: the environment variable that arms crash points in a durable run's process
CRASHPOINTS_ENV = "RIVERBED_CRASHPOINTS"


def crashpoints_env(**points: float) -> dict[str, str]:
    """Environment for a child process whose durable runs SIGKILL themselves at named
    points with the given probabilities, for crash tests::

        env = {**os.environ, **crashpoints_env(after_claim=0.05, in_commit=0.02)}
        subprocess.run([sys.executable, "worker.py"], env=env)

    Points: ``before_claim``, ``after_claim`` (= before the step body), ``before_commit``,
    ``in_commit`` (inside the store's transaction, before COMMIT), ``after_commit``.
    """
    known = {
        "before_claim",
        "after_claim",
        "before_body",
        "before_commit",
        "in_commit",
        "after_commit",
    }
    unknown = sorted(set(points) - known)
    if unknown:
        raise ValueError(f"Unknown crash points {unknown}; known: {sorted(known)}.")
    return {CRASHPOINTS_ENV: ",".join(f"{name}:{p}" for name, p in points.items())}


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock whose time moves only when told to, or, with ``autojump`` (the default),
    jumps straight to the next timer whenever the event loop has nothing else to do.

    So a retry backoff of 60 s, a step timeout or ``wait_for_event(timeout=...)`` happen at
    once in a test, in the right order. Pass it as ``Workflow(clock=FakeClock())``.

    Autojump treats the loop as idle when no callback is ready to run. Work the loop cannot
    see (a sync step running in a thread, real network I/O) does not keep it busy, so use
    ``autojump=False`` and :meth:`advance` for tests of those.
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = True) -> None:
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._counter = itertools.count()
        self.autojump = autojump
        self._jumper: asyncio.Task[None] | None = None

    def now(self) -> float:
        """The fake time in seconds."""
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeTimer:
        """Run ``callback`` once the fake time has moved ``delay`` seconds on."""
        timer = _FakeTimer(self._now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._counter), timer))
        if self.autojump and (self._jumper is None or self._jumper.done()):
            self._jumper = asyncio.get_running_loop().create_task(self._autojump())
        return timer

    def advance(self, seconds: float) -> None:
        """Move time ``seconds`` on, firing every timer that falls due, in order."""
        if seconds < 0:
            raise ValueError("FakeClock.advance() cannot move time backwards.")
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
        self._now = target

    def _next_due(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    async def _autojump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await _until_idle(loop)
            due = self._next_due()
            if due is None:
                return
            self.advance(max(0.0, due - self._now))


async def _until_idle(loop: asyncio.AbstractEventLoop) -> None:
    # CPython's loop keeps ready callbacks in `_ready`; other loops: yield a good while.
    ready = getattr(loop, "_ready", None)
    quiet = 0
    for _ in range(10_000):
        await asyncio.sleep(0)
        if ready is None:
            quiet += 1
            if quiet > 50:
                return
        elif not ready:
            quiet += 1
            if quiet > 2:
                return
        else:
            quiet = 0


@dataclass
class WorkflowTestResult:
    """What a test run gives back. The first four fields are LlamaIndex's."""

    #: the stream events, in order (the terminal event included), less ``exclude_events``
    collected: list[Event]
    #: how many events of each type ``collected`` holds
    event_types: Counter[type[Event]]
    #: what awaiting the handler returned
    result: Any
    #: the run's context, to inspect the final state
    ctx: Context[Any]
    #: every event that entered the run, in order (start event, produced and sent events)
    events: list[Event] = field(default_factory=list)
    #: how many events of each type the run had: those in ``events`` and every stream
    #: event, whether streamed only or excluded from ``collected``
    all_event_types: Counter[type[Event]] = field(default_factory=Counter)


class WorkflowTestRunner:
    """Run a workflow and get back its result together with everything that happened."""

    def __init__(self, workflow: Workflow) -> None:
        self._workflow = workflow

    async def run(
        self,
        start_event: StartEvent | None = None,
        ctx: Context[Any] | None = None,
        expose_internal: bool = True,
        exclude_events: list[type[Event]] | None = None,
        **kwargs: Any,
    ) -> WorkflowTestResult:
        """Run to the end; raises what the run raises.

        Give either ``start_event`` or the keyword arguments to build it from.
        ``exclude_events`` leaves events of exactly those types (not their subclasses, as
        in LlamaIndex) out of ``collected`` and ``event_types``. ``expose_internal`` is
        accepted for LlamaIndex compatibility and changes nothing: riverbed has no
        internal events on the stream.
        """
        # A journaling store of its own, so every event of the run can be returned.
        store = MemoryStore(max_finished_runs=1, journal=True)
        handler = self._workflow.run(ctx=ctx, start_event=start_event, store=store, **kwargs)
        # Every event as it is routed (the run has not begun yet: it starts in a task). The
        # journal alone would miss events sent by a step that was still returning when the
        # run ended: its commit is never recorded.
        events: list[Event] = []
        run = handler.ctx._run
        if run is not None:
            run.observe_route = events.append
        excluded = set(exclude_events or ())
        streamed = [ev async for ev in handler.stream_events(expose_internal=expose_internal)]
        result = await handler
        collected = [ev for ev in streamed if type(ev) not in excluded]
        counts: Counter[type[Event]] = Counter(type(e) for e in events)
        routed = {id(e) for e in events}
        counts.update(type(ev) for ev in streamed if id(ev) not in routed)
        return WorkflowTestResult(
            collected=collected,
            event_types=Counter(type(ev) for ev in collected),
            result=result,
            ctx=handler.ctx,
            events=events,
            all_event_types=counts,
        )
