"""See one run's steps start, finish and fail, through the engine's tracer hooks
(:mod:`riverbed.tracing`), for in-memory and durable runs alike::

    with watching(run_id, display):
        handler = workflow.run(run_id=run_id, ...)

Only the run with the given id is reported (nested runs and other runs of the process are
not).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from riverbed import tracing
from riverbed.events import Event

__all__ = ["RunWatcher", "StepListener", "watching"]


class StepListener(Protocol):
    """Told of every step attempt of the watched run."""

    def step_started(self, step: str, attempt: int) -> None: ...

    def step_committed(self, step: str, produced: str | None) -> None:
        """``produced`` is the class name of the event the attempt returned, if any."""
        ...

    def step_failed(self, step: str, attempt: int, error: str, retrying: bool) -> None: ...


class RunWatcher:
    """A :class:`riverbed.tracing.Tracer` passing one run's attempts to a listener."""

    def __init__(self, run_id: str, listener: StepListener) -> None:
        self.run_id = run_id
        self.listener = listener

    def run_started(self, workflow: str, run_id: str, event: Event | None) -> Any:
        return run_id == self.run_id  # the handle: is it ours?

    def run_finished(
        self, run: Any, status: str, result: Event, error: BaseException | None
    ) -> None:
        return None

    def attempt_started(self, run: Any, step: str, attempt: int, event: Event) -> Any:
        if not run:
            return None
        self.listener.step_started(step, attempt)
        return (step, attempt)

    def attempt_finished(
        self,
        span: Any,
        outcome: str,
        result: Event | None,
        error: BaseException | None,
        retry_in: float | None,
    ) -> None:
        if span is None:
            return
        step, attempt = span
        if outcome == tracing.OK:
            self.listener.step_committed(step, None if result is None else type(result).__name__)
        elif outcome in (tracing.RETRY, tracing.FAILED):
            message = f"{type(error).__name__}: {error}" if error is not None else outcome
            self.listener.step_failed(step, attempt, message, outcome == tracing.RETRY)


@contextmanager
def watching(run_id: str, listener: StepListener) -> Iterator[RunWatcher]:
    """Report run ``run_id``'s attempts to ``listener`` while inside the block; start (or
    resume) the run inside it."""
    watcher = RunWatcher(run_id, listener)
    tracing.add_tracer(watcher)
    try:
        yield watcher
    finally:
        tracing.remove_tracer(watcher)
