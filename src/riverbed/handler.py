"""``WorkflowHandler``: what ``workflow.run()`` returns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from riverbed.errors import WorkflowRuntimeError
from riverbed.events import Event, StopEvent
from riverbed.stores.base import RunStatus

if TYPE_CHECKING:
    from riverbed._engine.run import Run
    from riverbed.context import Context

__all__ = ["WorkflowHandler"]


class WorkflowHandler:
    """A running workflow. Await it for the result; stream its events; talk to it.

    ::

        handler = workflow.run(topic="rivers")
        async for ev in handler.stream_events():
            print(ev)
        result = await handler

    Cancelling a task that awaits the handler (``asyncio.wait_for(handler, 5)`` running
    out) cancels the run too, as in LlamaIndex; ``asyncio.shield(handler)`` waits without
    that effect.
    """

    __slots__ = ("_run",)

    def __init__(self, run: Run) -> None:
        self._run = run

    def __await__(self) -> Generator[Any, None, Any]:
        return self._run.result.__await__()

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._run.run_id

    @property
    def ctx(self) -> Context[Any]:
        """The run's context: its state store, and ``send_event`` from outside."""
        return self._run.ctx

    @property
    def status(self) -> RunStatus:
        """running, completed, failed, cancelled or timed_out."""
        return self._run.status

    def done(self) -> bool:
        """True once the run has finished, whatever the outcome."""
        return self._run.result.done()

    is_done = done

    def result(self) -> Any:
        """The result of a finished run (raises its error; raises ``InvalidStateError`` while
        it is still running). Prefer ``await handler``."""
        return self._run.result.result()

    def exception(self) -> BaseException | None:
        """The error a finished run ended with, or None (also None while running)."""
        future = self._run.result
        if not future.done():
            return None
        if future.cancelled():
            # The task awaiting the handler was cancelled, and the run with it (see
            # Run._on_result_done); Future.exception() would raise here instead.
            return asyncio.CancelledError()
        return future.exception()

    def cancelled(self) -> bool:
        """True once the run has ended cancelled (``cancel_run()``, ``cancel()``, or the
        task awaiting the handler cancelled)."""
        return self._run.result.cancelled() or self._run.status is RunStatus.CANCELLED

    def cancel(self) -> None:
        """Start cancelling the run without waiting (from the run's event loop);
        ``await handler.cancel_run()`` does the same and returns once the run has ended."""
        if not self._run.done:
            self._run.cancel_soon()

    async def stop_event_result(self) -> StopEvent:
        """Wait for the run and return the ``StopEvent`` that ended it (the instance, also
        for the base class, whose ``await handler`` gives only ``.result``). Raises the
        run's error if it did not complete."""
        await asyncio.shield(self._run.result)
        terminal = self._run.stream.terminal
        assert terminal is not None  # a completed run's stream ends with its StopEvent
        return terminal

    def get_stop_event(self) -> StopEvent | None:
        """The event that ended the run (a StopEvent, or the timed-out/failed/cancelled
        event), or None while it runs."""
        return self._run.stream.terminal if self._run.done else None

    async def stream_events(
        self, expose_internal: bool = False, after: int = 0
    ) -> AsyncIterator[Event]:
        """Every event written to the stream, ending with the run's terminal event.

        Any number of readers may call this, at any time; each reads the whole stream from
        position ``after`` (0 = from the start). The last event is the ``StopEvent`` or a
        ``WorkflowFailedEvent`` / ``WorkflowTimedOutEvent`` / ``WorkflowCancelledEvent``;
        await the handler to get the result or the error.
        """
        # The reading loop is inlined (not delegated to another async generator): each
        # event then costs one generator step, which matters for token streams.
        stream = self._run.stream
        events = stream.events
        position = after
        while True:
            if position < len(events):
                # Everything buffered, as one batch: a plain for loop per event, no await.
                # (A copy, because writers append while the caller handles each event.)
                batch = events[position:]
                position += len(batch)
                for event in batch:
                    yield event
                continue
            if stream.closed:
                break
            await stream.wait()
        future = self._run.result
        if future.done() and not future.cancelled():
            future.exception()  # the reader saw the outcome: no "never retrieved" warning

    async def send_event(
        self, message: Event, step: str | None = None, *, client_event_id: str | None = None
    ) -> bool:
        """Send an event into the run from outside, e.g. a human's answer.

        With a ``client_event_id``, sending the same answer again is applied once (returns
        False the second time). In a durable run the event is committed before this
        returns.
        """
        run = self._run
        ctx = run.ctx
        ctx._running("send_event()")
        if not isinstance(message, Event):
            raise WorkflowRuntimeError(
                f"send_event() takes an Event, got {type(message).__name__}."
            )
        return await run.send_external(message, ctx._target(run, message, step), client_event_id)

    async def cancel_run(self) -> None:
        """Stop the run: running steps are cancelled, ``WorkflowCancelledEvent`` ends the
        stream, and awaiting the handler raises ``WorkflowCancelledByUser``."""
        await self._run.cancel()
        future = self._run.result
        if future.done() and not future.cancelled():
            future.exception()  # asked for: no "exception never retrieved" warning

    def __repr__(self) -> str:
        return f"<WorkflowHandler run_id={self.run_id!r} status={self.status.value}>"
