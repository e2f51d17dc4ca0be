"""One run's scheduler: a queue per step, at most ``num_workers`` tasks per step, events
routed by a dict lookup. Nothing here copies pending work, so each event costs O(1).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from riverbed._engine.attempt import CURRENT_ATTEMPT, Attempt, Delivery
from riverbed._engine.clock import Clock, TimerHandle
from riverbed._engine.collect import CollectBuffer
from riverbed._engine.stream import EventStream
from riverbed._engine.waiters import Waiters
from riverbed.errors import (
    StepTimeoutError,
    WorkflowCancelledByUser,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
)
from riverbed.events import (
    Event,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from riverbed.step import StepSpec
from riverbed.stores.base import RunRecord, RunStatus, StepCommit, Store
from riverbed.tracing import (
    CANCELLED,
    FAILED,
    OK,
    RETRY,
    _log_attempt_failed,
    _log_run_finished,
    _log_run_started,
    _tracer_for_run,
)

if TYPE_CHECKING:
    from riverbed.context import Context
    from riverbed.workflow import Workflow

__all__ = ["Run", "StepRuntime", "no_consumer_error"]

logger = logging.getLogger("riverbed")

#: a run's trace before ``run_started`` was called (a durable run resumed from its rows)
_UNSTARTED: Any = object()

_SEED_KW: dict[type, bool] = {}


class StepRuntime:
    """A step's queue and worker count within one run."""

    __slots__ = ("active", "buffers", "in_progress", "pending", "running", "spec")

    def __init__(self, spec: StepSpec) -> None:
        self.spec = spec
        self.pending: deque[Delivery] = deque()
        #: workers alive or reserved for this step (<= num_workers)
        self.active = 0
        #: attempts executing right now
        self.running = 0
        self.buffers: dict[str | None, CollectBuffer] = {}
        #: deliveries whose attempt started and has not finished (kept if cancelled, so a
        #: paused run can be resumed from ctx.to_dict())
        self.in_progress: dict[int, Delivery] = {}


class Run:
    """Everything about one run while it is in memory."""

    def __init__(
        self,
        workflow: Workflow,
        ctx: Context[Any],
        *,
        run_id: str,
        store: Store,
        clock: Clock,
        timeout: float | None,
        verbose: bool,
    ) -> None:
        self.workflow = workflow
        self.ctx = ctx
        self.run_id = run_id
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self.verbose = verbose
        #: the run's tracer (verbose lines, DEBUG logs, riverbed.tracing); None: no hooks
        self.tracer = _tracer_for_run(verbose)
        self._trace: Any = _UNSTARTED
        self._started = time.perf_counter()
        self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self._specs = workflow._step_specs()
        #: step runtimes, created on a step's first delivery (most runs touch few steps)
        self.steps: dict[str, StepRuntime] = {}
        self.result: asyncio.Future[Any] = self.loop.create_future()
        self.result.add_done_callback(self._on_result_done)
        self.stream = EventStream()
        self.status = RunStatus.RUNNING
        self.done = False
        self.waiters = Waiters(self)
        self.parent: Attempt | None = CURRENT_ATTEMPT.get()
        self.children: list[Run] = []
        self.waiting_for_input = False
        #: called with every event routed in the run (``riverbed.testing`` counts them)
        self.observe_route: Callable[[Event], object] | None = None
        self._seq = 0
        self._routes: dict[type, tuple[StepRuntime, ...]] = {}
        self._ready: deque[StepRuntime] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[TimerHandle] = set()
        self._timeout_handle: TimerHandle | None = None
        self._booting = True
        self._holds_slot = False
        self._client_ids: set[str] = set()
        #: whether the store wants every step start and commit (journals, durable stores)
        self._records_steps: bool = getattr(store, "records_steps", True)
        #: stream events need no bookkeeping beyond the stream itself (see Context)
        self.plain_stream = not self._records_steps and self.parent is None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, start_event: Event) -> None:
        # Registered with the parent here, not in __init__: a run refused before it starts
        # (its Context is busy) must not be cancelled, and recorded, as a child later.
        if self.parent is not None:
            self.parent.run.children.append(self)
            if self.parent.children is None:
                self.parent.children = []
            self.parent.children.append(self)
        self._observe_start(start_event)
        self._track(self.loop.create_task(self._boot(start_event)))

    def start_resumed(
        self, queues: dict[str, list[Event]], collected: dict[str, dict[str, list[Event]]]
    ) -> None:
        """Start with the work of a paused run (``Context.from_dict``) instead of an event."""
        if self.parent is not None:
            self.parent.run.children.append(self)
        self._observe_start(None)
        self._track(self.loop.create_task(self._boot_resumed(queues, collected)))

    async def _boot_resumed(
        self, queues: dict[str, list[Event]], collected: dict[str, dict[str, list[Event]]]
    ) -> None:
        record = RunRecord(
            run_id=self.run_id,
            workflow=self.workflow.workflow_name,
            status=RunStatus.RUNNING,
            started_at=time.time(),
        )
        try:
            await self.store.run_started(record, StartEvent(), self._next_seq())
            for step_name, buffers in collected.items():
                rt = self.runtime(step_name)
                for buffer_id, held in buffers.items():
                    buffer = rt.buffers.setdefault(buffer_id or None, CollectBuffer())
                    for event in held:
                        buffer.restore(self._next_seq(), event)
            if self.timeout is not None:
                self._timeout_handle = self.clock.call_later(self.timeout, self._on_timeout)
            self._booting = False
            for step_name, events in queues.items():
                rt = self.runtime(step_name)
                for event in events:
                    self._enqueue(rt, Delivery(event, self._next_seq()), defer=False)
        except Exception as exc:
            await self._finish(RunStatus.FAILED, WorkflowFailedEvent(exception=exc), error=exc)
        finally:
            self._booting = False
        self._check_idle()

    async def _boot(self, start_event: Event) -> None:
        try:
            semaphore = self.workflow._run_semaphore()
            if semaphore is not None:
                await semaphore.acquire()
                self._holds_slot = True
            seq = self._next_seq()
            record = RunRecord(
                run_id=self.run_id,
                workflow=self.workflow.workflow_name,
                status=RunStatus.RUNNING,
                started_at=time.time(),
                parent_run_id=self.parent.run.run_id if self.parent else None,
            )
            await self._record_start(record, start_event, seq)
            if self.timeout is not None:
                self._timeout_handle = self.clock.call_later(self.timeout, self._on_timeout)
            self._booting = False
            self.route(start_event, seq=seq)
        except Exception as exc:
            await self._finish(RunStatus.FAILED, WorkflowFailedEvent(exception=exc), error=exc)
        finally:
            self._booting = False
        self._check_idle()

    async def _record_start(self, record: RunRecord, start_event: Event, seq: int) -> None:
        """Tell the store the run starts (a durable run creates its rows here)."""
        await self.store.run_started(record, start_event, seq)

    def _observe_start(self, event: Event | None) -> None:
        # Called in the code that starts the run, so a tracer sees its context (the span of
        # the parent step, for a nested run).
        _log_run_started(self.workflow, self.run_id, event)
        if self.tracer is not None:
            self._trace = self.tracer.run_started(self.workflow.workflow_name, self.run_id, event)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a store call from synchronous code, keeping a reference to its task."""
        self._track(self.loop.create_task(coro))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- routing -------------------------------------------------------------------------
    def runtime(self, name: str) -> StepRuntime:
        rt = self.steps.get(name)
        if rt is None:
            rt = self.steps[name] = StepRuntime(self._specs[name])
        return rt

    def targets(self, event_type: type[Event]) -> tuple[StepRuntime, ...]:
        found = self._routes.get(event_type)
        if found is None:
            names = self.workflow._route(event_type)
            found = self._routes[event_type] = tuple(self.runtime(n) for n in names)
        return found

    def route(
        self,
        event: Event,
        *,
        seq: int | None = None,
        lineage: int = 0,
        target: StepRuntime | None = None,
        source: Attempt | None = None,
        defer: bool = False,
    ) -> None:
        """Deliver ``event`` to the waiters and steps that take it."""
        if self.done:
            return
        if self.observe_route is not None:
            self.observe_route(event)
        if seq is None:
            seq = self._next_seq()
        if source is not None:
            source.produced.append((seq, event))
            if self.waiting_for_input:
                self._progressed(source)
        if isinstance(event, StopEvent):
            self.background(self.complete(event))
            return
        taken: set[str] = self.waiters.resolve(event) if self.waiters else set()
        is_input_request = isinstance(event, InputRequiredEvent)
        if is_input_request:
            self.write_stream(event)
        consumers = (target,) if target is not None else self.targets(type(event))
        delivered = False
        for rt in consumers:
            if rt.spec.name in taken:
                continue
            delivered = True
            self._enqueue(rt, Delivery(event, seq, lineage), defer)
        if not (delivered or taken or is_input_request):
            awaited = self.waiters.awaited(event) if self.waiters else []
            if awaited:
                # As in LlamaIndex: an event of the type a wait_for_event waits for that
                # does not meet its requirements is dropped (it is for another waiter,
                # or for none).
                logger.info(
                    "run %s: %s meets the requirements of no waiter (%s); dropped",
                    self.run_id,
                    type(event).__name__,
                    ", ".join(awaited),
                )
                return
            raise no_consumer_error(event)

    def _enqueue(self, rt: StepRuntime, delivery: Delivery, defer: bool) -> None:
        rt.pending.append(delivery)
        if rt.active < rt.spec.config.num_workers:
            rt.active += 1
            if defer:
                self._ready.append(rt)  # the finishing worker may take it over
            else:
                self._track(self.loop.create_task(self._worker(rt)))

    def _spawn_ready(self) -> None:
        while self._ready:
            self._track(self.loop.create_task(self._worker(self._ready.popleft())))

    # -- workers -------------------------------------------------------------------------
    async def _worker(self, rt: StepRuntime) -> None:
        task = asyncio.current_task()
        while not self.done:
            if rt.pending:
                await self._execute(rt, rt.pending.popleft(), task)
                if rt.pending:
                    # This worker goes on with rt's one pending delivery, so a worker
                    # reserved for it (a step that receives its own event) is not needed.
                    if self._ready and len(rt.pending) == 1 and rt in self._ready:
                        self._ready.remove(rt)
                        rt.active -= 1
                    self._spawn_ready()
                    continue
            # Nothing left for this step: give the slot back and, rather than ending the
            # task and creating a new one, carry on as a worker of a step that has work.
            rt.active -= 1
            if not self._ready:
                break
            rt = self._ready.popleft()
            self._spawn_ready()
        self._check_idle()

    async def _execute(self, rt: StepRuntime, delivery: Delivery, task: Any) -> None:
        spec = rt.spec
        delivery.attempts += 1
        if delivery.attempts == 1:
            delivery.first_started = self.clock.now()
        attempt = Attempt(self, rt, delivery)
        attempt.task = task
        attempt.state_version = self.ctx._state_store.version
        token = CURRENT_ATTEMPT.set(attempt)
        rt.running += 1
        rt.in_progress[delivery.seq] = delivery
        traced = self.tracer is not None
        try:
            if self._records_steps and not await self._begin_attempt(attempt):
                return
            if traced:
                self._trace_attempt(delivery, spec.name)
            try:
                if spec.config.timeout is None and spec.plain_async:
                    # The common case, kept to one coroutine call: no timer, no resources.
                    result = await spec.fn(*self._call_args(spec, delivery.event))
                else:
                    result = await self._call_with_timeout(spec, delivery.event, attempt)
            except asyncio.CancelledError as exc:
                error: Exception
                if attempt.timed_out and not self.done:
                    _uncancel(task)
                    error = StepTimeoutError(
                        f"Step {spec.name!r} timed out after {spec.config.timeout} seconds "
                        f"(attempt {delivery.attempts}). Raise @step(timeout=...) or make the "
                        "step faster."
                    )
                elif self.done or _is_cancelling(task):
                    raise
                else:
                    # Nobody cancelled this worker: the step's own code let a CancelledError
                    # out (it awaited a task that something else cancelled). Re-raising it
                    # would end the worker silently and leave the run hanging forever.
                    error = WorkflowRuntimeError(
                        f"Step {spec.name!r} raised CancelledError although the step was not "
                        "cancelled (it probably awaited a task or future that was cancelled)."
                    )
                    error.__cause__ = exc
                await self._on_failure(rt, delivery, attempt, error)
            except Exception as exc:
                if self._records_steps and self._lost_store(exc):
                    raise  # the store failed under the step (a wait, a memo): not its fault
                await self._on_failure(rt, delivery, attempt, exc)
            else:
                if traced:
                    self._trace_success(delivery, result)
                await self._on_success(rt, delivery, attempt, result)
            rt.in_progress.pop(delivery.seq, None)
        except Exception as exc:  # a bug in routing or in the store: the run cannot go on
            if traced:
                self._trace_end(delivery, FAILED, None, exc)
            if self._lost_store(exc):
                self._give_up(exc)
                return
            await self._finish(
                RunStatus.FAILED, WorkflowFailedEvent(step_name=spec.name, exception=exc), exc
            )
        finally:
            rt.running -= 1
            CURRENT_ATTEMPT.reset(token)
            self._end_attempt(attempt)
            if traced:
                self._trace_end(delivery, CANCELLED)  # if nothing ended it (cancelled)

    def _lost_store(self, exc: Exception) -> bool:
        """Whether ``exc`` is the durable store failing (durable runs override this)."""
        return False

    def _give_up(self, exc: Exception) -> None:
        """Stop executing the run here after the store failed (durable runs)."""

    async def _begin_attempt(self, attempt: Attempt) -> bool:
        """Tell the store an attempt starts; False if it must not run (durable fencing)."""
        delivery = attempt.delivery
        await self.store.step_started(
            self.run_id, attempt.rt.spec.name, delivery.seq, delivery.attempts
        )
        return True

    # -- tracing (only with a tracer: verbose, DEBUG logging or riverbed.tracing) ---------
    def _trace_attempt(self, delivery: Delivery, step: str) -> None:
        tracer = self.tracer
        assert tracer is not None
        if self._trace is _UNSTARTED:  # resumed from a durable store's rows
            self._trace = tracer.run_started(self.workflow.workflow_name, self.run_id, None)
        delivery.trace = tracer.attempt_started(
            self._trace, step, delivery.attempts, delivery.event
        )

    def _trace_success(self, delivery: Delivery, result: Any) -> None:
        if result is None or isinstance(result, Event):
            self._trace_end(delivery, OK, result)
        else:  # _on_success fails the run
            error = TypeError(f"the step returned {type(result).__name__}, not an Event")
            self._trace_end(delivery, FAILED, None, error)

    def _trace_end(
        self,
        delivery: Delivery,
        outcome: str,
        result: Event | None = None,
        error: BaseException | None = None,
        retry_in: float | None = None,
    ) -> None:
        span, delivery.trace = delivery.trace, None
        if span is not None and self.tracer is not None:
            self.tracer.attempt_finished(span, outcome, result, error, retry_in)

    def _end_attempt(self, attempt: Attempt) -> None:
        """Called when an attempt is over, whatever happened (durable runs free the state
        lease here)."""

    async def register_waiter(
        self,
        waiter_id: str,
        event_type: type[Event],
        requirements: dict[str, Any] | None,
        step: str,
        timeout: float | None,
        announce: Event | None,
    ) -> tuple[Event | None, float | None, Event | None]:
        """Record a ``wait_for_event``; returns an answer recorded before a restart (durable
        runs), if any, the timeout left for the wait, and the question to stream now (None
        when it was already asked)."""
        await self.store.waiter_registered(self.run_id, waiter_id, event_type.__name__, step)
        return None, timeout, announce

    async def memo(self, attempt: Attempt, name: str, compute: Callable[[], Any]) -> Any:
        """``ctx.memo``: the value ``compute`` gave for ``name`` in an earlier attempt of
        this delivery, or compute, keep and return it (JSON round-tripped either way)."""
        memos = attempt.delivery.memos
        if memos is None:
            memos = attempt.delivery.memos = {}
        if name not in memos:
            memos[name] = _memo_json(name, await _call_maybe_async(compute))
        return json.loads(memos[name])

    def timer_fired(self, kind: str, key: str) -> None:
        """Tell the store a timer went off (durable runs keep their timers as rows)."""
        self.background(self.store.timer_fired(self.run_id, kind, key))

    def accept_external(self, message: Event, target: StepRuntime | None) -> None:
        """An event sent from outside the run (``handler.ctx.send_event``)."""
        seq = self._next_seq()
        self.background(self.store.event_accepted(self.run_id, seq, message))
        self.route(message, seq=seq, target=target)

    async def send_external(
        self, message: Event, target: StepRuntime | None, client_event_id: str | None
    ) -> bool:
        """``handler.send_event``: True if applied (False: a repeated ``client_event_id``)."""
        if client_event_id is not None:
            seen = self._client_ids
            if client_event_id in seen:
                return False
            seen.add(client_event_id)
        self.accept_external(message, target)
        return True

    async def _persist_finish(
        self, status: RunStatus, value: Any, error: BaseException | None
    ) -> None:
        await self.store.run_finished(
            self.run_id,
            status,
            result=value if status is RunStatus.COMPLETED else None,
            error=None if error is None else f"{type(error).__name__}: {error}",
        )

    async def _call_with_timeout(self, spec: StepSpec, event: Event, attempt: Attempt) -> Any:
        timeout = spec.config.timeout
        handle = self.clock.call_later(timeout, attempt.expire) if timeout else None
        try:
            return await self._invoke(spec, event)
        finally:
            if handle is not None:
                handle.cancel()

    def _call_args(self, spec: StepSpec, event: Event) -> tuple[Any, ...]:
        # Positional arguments in the order the step declares them (see StepSpec.arg_order).
        if spec.arg_order == "ctx_event":
            return (self.workflow, self.ctx, event)
        if spec.arg_order == "event_ctx":
            return (self.workflow, event, self.ctx)
        return (self.workflow, event)

    async def _invoke(self, spec: StepSpec, event: Event) -> Any:
        kwargs: dict[str, Any] = {spec.event_param: event}
        if spec.ctx_param is not None:
            kwargs[spec.ctx_param] = self.ctx
        if spec.resources:
            manager = self.workflow._resource_manager
            kwargs.update(await manager.resolve_params(spec.resources))
        args = (self.workflow,) if spec.config.is_method else ()
        if spec.is_async:
            return await spec.fn(*args, **kwargs)
        call = functools.partial(contextvars.copy_context().run, spec.fn, *args, **kwargs)
        return await self.loop.run_in_executor(None, call)

    async def _on_success(
        self, rt: StepRuntime, delivery: Delivery, attempt: Attempt, result: Any
    ) -> None:
        spec = rt.spec
        if result is not None and not isinstance(result, Event):
            error = WorkflowRuntimeError(
                f"Step function {spec.name} returned {type(result).__name__} instead of an "
                "Event instance. Return an Event (e.g. StopEvent(result=...)), or None to "
                "emit nothing."
            )
            await self._finish(
                RunStatus.FAILED, WorkflowFailedEvent(step_name=spec.name, exception=error), error
            )
            return
        seq = self._next_seq() if result is not None else 0
        if result is not None:
            attempt.produced.append((seq, result))
        if self._records_steps:
            await self._record_commit(spec, delivery, attempt)
        if isinstance(result, StopEvent):
            await self.complete(result)
        elif result is not None:
            if self.waiting_for_input:
                self._progressed(attempt)
            self.route(result, seq=seq, lineage=delivery.lineage, defer=True)

    async def _record_commit(self, spec: StepSpec, delivery: Delivery, attempt: Attempt) -> None:
        state_store = self.ctx._state_store
        changed = state_store.version != attempt.state_version
        await self.store.step_committed(
            self.run_id,
            StepCommit(
                step=spec.name,
                event_seq=delivery.seq,
                attempt=delivery.attempts,
                produced=tuple(attempt.produced),
                stream=tuple(attempt.stream),
                state=state_store._state if changed else None,
            ),
        )

    def _progressed(self, attempt: Attempt) -> None:
        # Once a run has asked the outside for input (streamed an InputRequiredEvent) it is
        # "waiting", not stuck, when idle, until one of its steps produces an event on its
        # own. An event from outside does not end the wait by itself: it may be a side
        # message (feedback, a ping) handled by a step that returns None while the question
        # is still open, and the run must not then be failed as stuck.
        if not attempt.asked_input:
            self.waiting_for_input = False

    async def _on_failure(
        self, rt: StepRuntime, delivery: Delivery, attempt: Attempt, error: Exception
    ) -> None:
        spec = rt.spec
        attempt.undo_collects()
        delivery.last_error = error
        delivery.last_failed_at = time.time()
        elapsed = self.clock.now() - delivery.first_started
        delay = self._retry_delay(spec, delivery, elapsed, error)
        await self.store.step_failed(
            self.run_id, spec.name, delivery.seq, delivery.attempts, error, delay
        )
        if attempt.children:
            for child in attempt.children:
                child.cancel_soon()
        if delay is not None:
            self._schedule_retry(rt, delivery, delay)
            return
        handler = self._catch_handler(spec.name)
        if handler is not None and delivery.lineage < handler.spec.config.max_recoveries:
            failed = StepFailedEvent(
                step_name=spec.name,
                input_event=delivery.event,
                exception=error,
                attempts=delivery.attempts,
                elapsed_seconds=elapsed,
                failed_at=delivery.last_failed_at,
            )
            self.route(failed, target=handler, lineage=delivery.lineage + 1, source=attempt)
            return
        terminal = WorkflowFailedEvent(
            step_name=spec.name,
            exception=error,
            attempts=delivery.attempts,
            elapsed_seconds=elapsed,
        )
        await self._finish(RunStatus.FAILED, terminal, error)

    def _retry_delay(
        self, spec: StepSpec, delivery: Delivery, elapsed: float, error: Exception
    ) -> float | None:
        """The delay before the next attempt, or None for no retry. Both ``_on_failure``
        call it once per failed attempt before acting on the failure, which makes it the
        place to report the failure: the retry decision is known and the run has not ended
        yet (a run span must end after its step spans)."""
        delay = self._policy_delay(spec, delivery, elapsed, error)
        if not self.done:
            _log_attempt_failed(self.run_id, spec.name, delivery.attempts, error, delay)
        if delivery.trace is not None:
            self._trace_end(delivery, FAILED if delay is None else RETRY, None, error, delay)
        return delay

    def _policy_delay(
        self, spec: StepSpec, delivery: Delivery, elapsed: float, error: Exception
    ) -> float | None:
        policy = spec.config.retry_policy
        if policy is None or self.done:
            return None
        kind = type(policy)
        takes_seed = _SEED_KW.get(kind)
        if takes_seed is None:
            takes_seed = "seed" in inspect.signature(policy.next).parameters
            _SEED_KW[kind] = takes_seed
        if takes_seed:
            seed = zlib.crc32(f"{self.run_id}:{spec.name}:{delivery.attempts}".encode())
            delay = policy.next(elapsed, delivery.attempts, error, seed=seed)
        else:
            delay = policy.next(elapsed, delivery.attempts, error)
        return None if delay is None else max(0.0, float(delay))

    def _schedule_retry(self, rt: StepRuntime, delivery: Delivery, delay: float) -> None:
        handle: TimerHandle | None = None

        def fire() -> None:
            if handle is not None:
                self._timers.discard(handle)
            if not self.done:
                self.timer_fired("retry", rt.spec.name)
                self._enqueue(rt, delivery, defer=False)

        handle = self.clock.call_later(delay, fire)
        self._timers.add(handle)

    def _catch_handler(self, failed_step: str) -> StepRuntime | None:
        if self._specs[failed_step].config.catch_error:
            return None  # a handler does not cover another handler
        wildcard = None
        for spec in self._specs.values():
            config = spec.config
            if not config.catch_error:
                continue
            if config.catch_for_steps is None:
                wildcard = spec.name
            elif failed_step in config.catch_for_steps:
                return self.runtime(spec.name)
        return self.runtime(wildcard) if wildcard is not None else None

    # -- stream --------------------------------------------------------------------------
    def write_stream(
        self, event: Event, attempt: Attempt | None = None, live: bool = False
    ) -> None:
        """Publish ``event``; ``live``: for readers now only, never stored."""
        if self.done:
            return
        if isinstance(event, InputRequiredEvent):
            self.waiting_for_input = True
            if attempt is not None:
                attempt.asked_input = True
        if attempt is not None and self._records_steps:
            attempt.stream.append(event)
        self.stream.write(event, live)
        if self.parent is not None and not isinstance(event, StopEvent):
            parent = self.parent.run
            if parent.thread_id == self.thread_id:
                parent.write_stream(event, None, live)
            else:
                # A child started with run_sync() inside a sync step runs on its own loop
                # in the step's thread; the parent's stream belongs to the parent's loop.
                parent.call_threadsafe(parent.write_stream, event, None, live)

    # -- endings -------------------------------------------------------------------------
    async def complete(self, stop: StopEvent) -> None:
        value = stop if type(stop)._returns_instance else stop.result
        await self._finish(RunStatus.COMPLETED, stop, value=value)

    async def cancel(self) -> None:
        error = WorkflowCancelledByUser(f"Run {self.run_id} was cancelled by the user.")
        await self._finish(RunStatus.CANCELLED, WorkflowCancelledEvent(), error)

    def cancel_soon(self) -> None:
        if self.done:
            return
        if threading.get_ident() != self.thread_id:
            # A parent on another loop (see write_stream) cancels this child.
            self.call_threadsafe(self.cancel_soon)
            return
        self.background(self.cancel())

    def call_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Call ``callback(*args)`` on this run's loop from another thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self.loop.call_soon_threadsafe(callback, *args)

    def _on_result_done(self, future: asyncio.Future[Any]) -> None:
        # Cancelling a task that awaits the handler (``asyncio.wait_for(handler, t)`` running
        # out, a parent step being cancelled) cancels this future. Without this the run went
        # on unobserved, reporting "completed" while awaiting it raised CancelledError. As
        # with LlamaIndex, whose handler is a Future, it aborts the run;
        # ``asyncio.shield(handler)`` waits without that effect.
        if future.cancelled() and not self.done:
            self.cancel_soon()

    def _on_timeout(self) -> None:
        if self.done:
            return
        active = sorted(rt.spec.name for rt in self.steps.values() if rt.running)
        detail = f"Currently active steps: {', '.join(active)}" if active else "No steps active"
        error = WorkflowTimeoutError(
            f"Operation timed out after {self.timeout} seconds. {detail}. Pass a larger "
            "Workflow(timeout=...) or None for no limit."
        )
        terminal = WorkflowTimedOutEvent(timeout=self.timeout or 0.0, active_steps=active)
        self.timer_fired("run_timeout", self.run_id)
        self.background(self._finish(RunStatus.TIMED_OUT, terminal, error))

    def _check_idle(self) -> None:
        if self.done or self._booting or self._timers or self.waiting_for_input:
            return
        if any(rt.active for rt in self.steps.values()):
            return
        if self.workflow._disable_validation:
            return  # the user opted out of checks; events may still come from outside
        error = WorkflowRuntimeError(self._stuck_message())
        self.background(self._finish(RunStatus.FAILED, WorkflowFailedEvent(exception=error), error))

    def _stuck_message(self) -> str:
        lines = [
            f"Run {self.run_id} of {self.workflow.workflow_name} stopped making progress: no "
            "step is running, no event is pending and no StopEvent was returned."
        ]
        for rt in self.steps.values():
            for buffer_id, buffer in rt.buffers.items():
                # An empty buffer completed (and was emptied): it is not waiting for anything.
                missing = buffer.missing() if len(buffer) else None
                if missing:
                    name = f" (buffer {buffer_id!r})" if buffer_id else ""
                    lines.append(
                        f"Step {rt.spec.name!r}{name} is still collecting events; missing: "
                        + ", ".join(f"{n} x{c}" for n, c in missing.items())
                    )
        lines.append(
            "Make sure every path ends by returning a StopEvent (a step returning None emits "
            "nothing)."
        )
        return " ".join(lines)

    async def _finish(
        self,
        status: RunStatus,
        terminal: StopEvent,
        error: BaseException | None = None,
        value: Any = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        self.status = status
        # A cancelled run's context keeps it (to_dict() saves its unfinished work); any
        # other run is then held by its handler only, and freed with it.
        self.ctx._run_ended(self, keep=status is RunStatus.CANCELLED)
        self._observe_finish(status, terminal, error)
        self.stream.close(terminal)
        current = asyncio.current_task()
        for handle in (self._timeout_handle, *self._timers):
            if handle is not None:
                handle.cancel()
        self._timers.clear()
        self.waiters.cancel_all()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for child in self.children:
            child.cancel_soon()
        if self._holds_slot:
            self._holds_slot = False
            semaphore = self.workflow._run_semaphore()
            if semaphore is not None:
                semaphore.release()
        try:
            await self._persist_finish(status, value, error)
        finally:
            if not self.result.done():
                if error is None:
                    self.result.set_result(value)
                else:
                    self.result.set_exception(error)

    def _observe_finish(
        self, status: RunStatus, terminal: StopEvent, error: BaseException | None
    ) -> None:
        tracer = self.tracer
        if tracer is not None:
            # Steps still running are cancelled by this ending: their spans end first.
            for rt in self.steps.values():
                for delivery in rt.in_progress.values():
                    self._trace_end(delivery, CANCELLED)
            if self._trace is not _UNSTARTED:
                tracer.run_finished(self._trace, status.value, terminal, error)
        _log_run_finished(self.workflow, self.run_id, status, self._started, error)


async def _call_maybe_async(compute: Callable[[], Any]) -> Any:
    value = compute()
    if inspect.isawaitable(value):
        value = await value
    return value


def _memo_json(name: str, value: Any) -> str:
    try:
        return json.dumps(to_jsonable_python(value))
    except Exception as exc:
        raise WorkflowRuntimeError(
            f"ctx.memo({name!r}) got a {type(value).__name__}, which cannot be kept as JSON. "
            "Return JSON-friendly data (str, numbers, lists, dicts, pydantic models)."
        ) from exc


def _is_cancelling(task: Any) -> bool:
    # Python 3.11+ tells whether a cancel was requested for the task; 3.10 cannot, so there
    # every CancelledError is taken to be a real cancel.
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _uncancel(task: Any) -> None:
    # Python 3.11+ counts cancel requests; we handled ours, so take it back.
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


def no_consumer_error(event: Event) -> WorkflowRuntimeError:
    """The error for an event that no step takes and no wait is waiting for."""
    name = type(event).__name__
    return WorkflowRuntimeError(
        f"No step accepts {name} and no ctx.wait_for_event is waiting for it. Add a step "
        f"with a parameter `ev: {name}`, or stop sending this event."
    )
