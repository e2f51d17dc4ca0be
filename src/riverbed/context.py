"""``Context``: the door from a step (or from outside a run) to the run and its state.

The same ``Context`` is used before a run (to seed state), inside steps, and after the run
(to read state, or to start another run with the state intact). Methods that only make
sense inside a step (``collect_events``, ``wait_for_event``...) raise
:class:`~riverbed.errors.ContextStateError` elsewhere, with the reason.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from riverbed._engine.attempt import CURRENT_ATTEMPT, Attempt, RetryInfo
from riverbed.errors import ContextStateError, WorkflowRuntimeError
from riverbed.events import Event
from riverbed.serialization import BaseSerializer, JsonSerializer, PickleSerializer
from riverbed.state import DictState, StateStore

if TYPE_CHECKING:
    from riverbed._engine.run import Run
    from riverbed._engine.stream import EventStream
    from riverbed.workflow import Workflow

# The serializers are importable from here too, as from LlamaIndex's ``workflows.context``.
__all__ = ["BaseSerializer", "Context", "JsonSerializer", "PickleSerializer", "RetryInfo"]

S = TypeVar("S", bound=BaseModel)
E = TypeVar("E", bound=Event)

#: Serialises ``collect_events`` calls made from sync steps' worker threads.
_COLLECT_LOCK = threading.Lock()
_get_ident = threading.get_ident  # bound once: write_event_to_stream is a per-token path


def _attempt_of(run: Run) -> Attempt | None:
    """The step attempt of ``run`` that the caller is running in, if any."""
    attempt = CURRENT_ATTEMPT.get()
    return attempt if attempt is not None and attempt.run is run else None


class Context(Generic[S]):
    """Shared state and event helpers of a run. ``Context[MyState]`` types the state.

    ::

        ctx = Context(workflow)
        await ctx.store.set("user", "ana")       # seed state before the run
        result = await workflow.run(ctx=ctx)
        await ctx.store.get_state()               # read it after
    """

    def __init__(
        self,
        workflow: Workflow,
        previous_context: dict[str, Any] | None = None,
        serializer: Any = None,
    ) -> None:
        self._workflow = workflow
        state_type: type[Any] = workflow._state_type()
        self._state_store: StateStore[Any] = StateStore(state_type)
        #: the current or last run: held strongly until it ends (and after, if it was
        #: cancelled: to_dict() saves its unfinished work), then weakly, so a finished run
        #: and this context hold no cycle and the run is freed as soon as its handler is
        self._run_strong: Run | None = None
        self._run_weak: weakref.ReferenceType[Run] | None = None
        self._last_run_id: str | None = None
        #: write_event_to_stream's fast path, set by its first call in a run whose stream
        #: needs no bookkeeping (no journal, no parent) and cleared when that run ends:
        #: the stream's list, the stream, and the run's loop thread
        self._fast_events: list[Event] | None = None
        self._fast_stream: EventStream | None = None
        self._fast_thread = 0
        #: work of a paused run to continue with (set by Context.from_dict)
        self._resume_work: Any = None
        if previous_context is not None:
            from riverbed._engine.snapshot import context_from_dict

            restored = context_from_dict(workflow, previous_context, serializer)
            self._state_store = restored._state_store
            self._resume_work = restored._resume_work

    def to_dict(self, serializer: BaseSerializer | None = None) -> dict[str, Any]:
        """A JSON-friendly payload of this context: its state and, for a run that has not
        finished (or was cancelled to pause it), the events it still had to process.

        ``Context.from_dict(workflow, payload)`` continues from it; steps that were in
        progress run again from the top. Works from handler code, not inside a step.
        """
        if CURRENT_ATTEMPT.get() is not None:
            raise ContextStateError(
                "to_dict is only available from handler code, not from within steps."
            )
        from riverbed._engine.snapshot import context_to_dict

        return context_to_dict(self, serializer)

    @classmethod
    def from_dict(
        cls,
        workflow: Workflow,
        data: dict[str, Any],
        serializer: BaseSerializer | None = None,
    ) -> Context[Any]:
        """Rebuild a context from :meth:`to_dict`'s payload; ``workflow.run(ctx=ctx)`` then
        continues the paused run (no new StartEvent). Raises ``ContextSerdeError`` for a
        payload that is not a context."""
        return cls(workflow, previous_context=data, serializer=serializer)

    # -- state ---------------------------------------------------------------------------
    @property
    def store(self) -> StateStore[S]:
        """The run's state: ``get``, ``set``, ``edit_state``, ``get_state``, ``set_state``,
        ``clear``."""
        return self._state_store

    # -- about the run -------------------------------------------------------------------
    @property
    def _run(self) -> Run | None:
        if self._run_strong is not None:
            return self._run_strong
        return self._run_weak() if self._run_weak is not None else None

    def _run_ended(self, run: Run, keep: bool) -> None:
        """Called by ``run`` when it ends: unless ``keep``, hold it weakly from now on."""
        if self._fast_stream is run.stream:
            self._fast_events = self._fast_stream = None
        if self._run_strong is run and not keep:
            self._run_strong = None

    @property
    def run_id(self) -> str | None:
        """The id of the current (or last) run with this context, None before any run."""
        return self._last_run_id

    @property
    def is_running(self) -> bool:
        """True while a run with this context has not finished."""
        return self._run is not None and not self._run.done

    @property
    def attempt(self) -> int:
        """Inside a step: 1 for the first attempt of this delivery, 2 for the first retry..."""
        return self._attempt("attempt").delivery.attempts

    @property
    def invocation_id(self) -> str:
        """Inside a step: ``run_id:event_seq:step``, the same for every attempt of one
        delivery. Use it as an idempotency key for external side effects."""
        return self._attempt("invocation_id").invocation_id

    def retry_info(self) -> RetryInfo:
        """Inside a step: how many attempts failed before this one, and the last error."""
        attempt = self._attempt("retry_info()")
        delivery = attempt.delivery
        return RetryInfo(
            retry_number=delivery.attempts - 1,
            elapsed_seconds=attempt.run.clock.now() - delivery.first_started,
            last_exception=delivery.last_error,
            last_failed_at=delivery.last_failed_at,
        )

    async def memo(self, name: str, compute: Callable[[], Any]) -> Any:
        """Inside a step: keep an expensive sub-result (an LLM answer) for this delivery.

        The first attempt calls ``compute()`` (sync or async) and keeps its value under
        ``name``; a retried attempt of the same delivery gets the kept value without calling
        it again. In a durable run the value is committed at once, so it survives a crash.
        Values are kept as JSON and returned as decoded JSON (a pydantic model comes back as
        a dict)::

            answer = await ctx.memo("draft", lambda: llm.complete(prompt))
        """
        attempt = self._attempt("memo()")
        return await attempt.run.memo(attempt, name, compute)

    @staticmethod
    def get_step_context() -> Context[Any]:
        """The context of the step running now, for decorators and helpers around a step
        that does not take ``ctx`` itself. Raises ``WorkflowRuntimeError`` outside a step."""
        attempt = CURRENT_ATTEMPT.get()
        if attempt is None:
            raise WorkflowRuntimeError(
                "Context.get_step_context() only works inside a step (or in code a step "
                "calls). Outside a run, use handler.ctx."
            )
        return attempt.run.ctx

    async def running_steps(self) -> list[str]:
        """Names of the steps with an attempt in progress (from outside the run)."""
        run = self._running("running_steps()")
        return sorted(name for name, rt in run.steps.items() if rt.running)

    def stream_events(self) -> AsyncIterator[Event]:
        """The run's stream, as ``handler.stream_events()`` reads it (from outside the run;
        a step writes with ``write_event_to_stream``)."""
        if CURRENT_ATTEMPT.get() is not None:
            raise ContextStateError(
                "ctx.stream_events() reads the stream from outside the run; inside a step, "
                "write to it with ctx.write_event_to_stream()."
            )
        run = self._run
        if run is None:
            raise ContextStateError(
                "stream_events() called before the workflow started. Call workflow.run() "
                "first, or read handler.stream_events()."
            )
        from riverbed.handler import WorkflowHandler

        return WorkflowHandler(run).stream_events()

    def get_result(self) -> Any:
        """The finished run's result, as ``await handler`` gives it (LlamaIndex keeps this
        for older code; prefer awaiting the handler). Raises the run's error if it failed."""
        run = self._run
        if run is None:
            raise ContextStateError(
                "get_result() needs a finished run of this context: await the handler that "
                "workflow.run(ctx=ctx) returned."
            )
        if not run.result.done():
            raise ContextStateError(
                f"get_result() called while run {run.run_id} is still running; await its "
                "handler instead."
            )
        return run.result.result()

    # -- events --------------------------------------------------------------------------
    def send_event(self, message: Event, step: str | None = None) -> None:
        """Route ``message`` to every step that accepts it, or only to ``step``.

        Works inside steps (also sync ``def`` steps, which run in a thread) and from outside
        the run through ``handler.ctx``.
        """
        run = self._running("send_event()")
        if not isinstance(message, Event):
            raise WorkflowRuntimeError(
                f"send_event() takes an Event, got {type(message).__name__}. Wrap the data in "
                "an Event subclass."
            )
        attempt = CURRENT_ATTEMPT.get()
        if attempt is not None and attempt.run is not run:
            attempt = None
        if threading.get_ident() != run.thread_id:
            self._send_from_thread(run, message, step, attempt)
        else:
            self._deliver(run, message, self._target(run, message, step), attempt)

    def _send_from_thread(
        self, run: Run, message: Event, step: str | None, attempt: Attempt | None
    ) -> None:
        # A sync step runs in a worker thread. Routing happens on the run's loop (it reads
        # and creates step runtimes), and the thread waits for it, so a sync step gets the
        # same errors as an async one ("does not exist", "No step accepts ...") instead of
        # them going to the loop's exception handler while the run hangs.
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def deliver() -> None:
            try:
                self._deliver(run, message, self._target(run, message, step), attempt)
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        run.loop.call_soon_threadsafe(deliver)
        while True:
            try:
                return done.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                # Never block a thread for good on a loop that has stopped.
                if run.loop.is_closed() or not run.loop.is_running():
                    raise WorkflowRuntimeError(
                        f"send_event(): the event loop of run {run.run_id} stopped before "
                        "the event could be delivered."
                    ) from None

    @staticmethod
    def _deliver(run: Run, message: Event, target: Any, attempt: Attempt | None) -> None:
        if attempt is not None:
            run.route(message, target=target, lineage=attempt.delivery.lineage, source=attempt)
            return
        run.accept_external(message, target)

    @staticmethod
    def _target(run: Run, message: Event, step: str | None) -> Any:
        if step is None:
            return None
        if step not in run._specs:
            raise WorkflowRuntimeError(
                f"Step {step} does not exist in {run.workflow.workflow_name}. "
                f"Known steps: {', '.join(sorted(run._specs))}."
            )
        rt = run.runtime(step)
        if not rt.spec.accepts(type(message)):
            raise WorkflowRuntimeError(
                f"Step {step} does not accept event of type {type(message).__name__}; it "
                f"takes {' | '.join(t.__name__ for t in rt.spec.accepted)}."
            )
        return rt

    def write_event_to_stream(self, ev: Event | None, *, durable: bool = True) -> None:
        """Publish ``ev`` to the run's stream (``handler.stream_events()``); None is ignored.

        In a durable run, stream events commit with their step (readers see them once the
        step's commit is done, and can read them again later). ``durable=False`` sends
        ``ev`` to readers at once and never stores it: for tokens and progress that are
        worth showing live but not keeping. The HTTP server marks such events as live.
        """
        events = self._fast_events
        if events is not None and _get_ident() == self._fast_thread:
            try:
                asks = ev._asks_for_input  # type: ignore[union-attr]
            except AttributeError:
                asks = True  # None, or not an event: the general path below says which
            if not asks:
                # The common case, inlined: it runs per token. The run is not done (ending
                # it clears _fast_events first), so its stream is open.
                events.append(ev)  # type: ignore[arg-type]
                stream = self._fast_stream
                if stream._signal is not None:  # type: ignore[union-attr]
                    stream._wake()  # type: ignore[union-attr]
                return
        if ev is None:
            return
        run = self._run_strong  # set from the run's start to its end
        if run is None or run.done:
            run = self._running("write_event_to_stream()")  # raises the right error
        if not isinstance(ev, Event):
            raise WorkflowRuntimeError(
                f"write_event_to_stream() takes an Event, got {type(ev).__name__}. "
                "Wrap the value in an Event subclass (or Event(value=...))."
            )
        if _get_ident() == run.thread_id:
            if run.plain_stream and not ev._asks_for_input:
                self._fast_events = run.stream._events
                self._fast_stream = run.stream
                self._fast_thread = run.thread_id
                run.stream.write(ev)
            else:
                run.write_stream(ev, _attempt_of(run), not durable)
        else:
            run.loop.call_soon_threadsafe(run.write_stream, ev, _attempt_of(run), not durable)

    def collect_events(
        self, ev: Event, expected: Sequence[type[Event]], buffer_id: str | None = None
    ) -> list[Event] | None:
        """Buffer ``ev``; once an event of every type in ``expected`` has arrived (with
        repeats, e.g. ``[Done] * 10``), return them in ``expected`` order, else None."""
        attempt = self._attempt("collect_events()")
        if threading.get_ident() != attempt.run.thread_id:
            # Sync steps run in worker threads, up to num_workers of one step at once, and
            # share the step's buffers: without the lock two threads could each create the
            # same buffer (losing an event) or both take a completed one.
            with _COLLECT_LOCK:
                return self._collect(attempt, ev, expected, buffer_id)
        return self._collect(attempt, ev, expected, buffer_id)

    @staticmethod
    def _collect(
        attempt: Attempt, ev: Event, expected: Sequence[type[Event]], buffer_id: str | None
    ) -> list[Event] | None:
        buffers = attempt.rt.buffers
        buffer = buffers.get(buffer_id)
        if buffer is None:
            from riverbed._engine.collect import CollectBuffer

            buffer = buffers[buffer_id] = CollectBuffer()
        seq = attempt.delivery.seq if ev is attempt.delivery.event else 0
        if attempt.rt.spec.config.retry_policy is None and not attempt.run._records_steps:
            # Nothing can retry this delivery and nothing records the change: no undo log
            # (this is the fan-in hot path).
            return buffer.add(ev, expected, seq)
        logs = attempt.collect_logs
        if logs is None:
            logs = attempt.collect_logs = {}
        log = logs.get(buffer_id)
        if log is None:
            log = logs[buffer_id] = []
        return buffer.add(ev, expected, seq, log)

    async def wait_for_event(
        self,
        event_type: type[E],
        waiter_event: Event | None = None,
        waiter_id: str | None = None,
        requirements: dict[str, Any] | None = None,
        timeout: float | None = 2000.0,
    ) -> E:
        """Suspend the step until an ``event_type`` event (matching ``requirements``,
        attribute -> value) is sent to the run, and return it.

        ``waiter_event`` (e.g. an ``InputRequiredEvent``) is written to the stream once per
        ``waiter_id``. The code before the wait is not run again. On ``timeout`` seconds
        :class:`~riverbed.errors.WaitForEventTimeoutError` is raised in the step.
        """
        attempt = self._attempt("wait_for_event()")
        if waiter_id is None:
            waiter_id = f"{attempt.invocation_id}:wait{attempt.wait_index}"
        attempt.wait_index += 1
        event = await attempt.run.waiters.wait(
            waiter_id, event_type, requirements, attempt.rt.spec.name, waiter_event, timeout
        )
        return event  # type: ignore[return-value]

    # -- internals -----------------------------------------------------------------------
    def _attempt(self, what: str) -> Attempt:
        attempt = CURRENT_ATTEMPT.get()
        if attempt is None or attempt.run.ctx is not self:
            raise ContextStateError(
                f"ctx.{what} only works inside a step of a run using this context."
            )
        return attempt

    def _running(self, what: str) -> Run:
        run = self._run
        if run is None:
            raise ContextStateError(
                f"{what} called before the workflow started. Call workflow.run() first."
            )
        if run.done:
            raise ContextStateError(
                f"{what} called after run {run.run_id} finished ({run.status.value})."
            )
        return run

    def _begin(self, run: Run) -> None:
        if self._run is not None and not self._run.done:
            raise ContextStateError(
                f"This context is already used by run {self._run.run_id}, which has not "
                "finished. Use a new Context(workflow) for a concurrent run."
            )
        self._run_strong = run
        self._run_weak = weakref.ref(run)
        self._fast_events = self._fast_stream = None
        self._last_run_id = run.run_id


DictContext = Context[DictState]
