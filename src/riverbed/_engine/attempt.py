"""Deliveries (an event routed to one step) and attempts (one execution of a delivery)."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from riverbed.events import Event

if TYPE_CHECKING:
    from riverbed._engine.run import Run, StepRuntime

__all__ = ["CURRENT_ATTEMPT", "Attempt", "Delivery", "RetryInfo"]


class Delivery:
    """One event routed to one step; lives until one attempt of it commits or it gives up."""

    __slots__ = (
        "attempts",
        "event",
        "first_started",
        "last_error",
        "last_failed_at",
        "lineage",
        "memos",
        "seq",
        "trace",
    )

    def __init__(self, event: Event, seq: int, lineage: int = 0) -> None:
        self.event = event
        self.seq = seq
        #: how many @catch_error recoveries the chain of events leading here went through
        self.lineage = lineage
        self.attempts = 0
        self.first_started = 0.0
        self.last_error: BaseException | None = None
        self.last_failed_at: float | None = None
        #: ctx.memo values of this delivery (in memory; durable runs keep them in the store)
        self.memos: dict[str, Any] | None = None
        #: the tracer's handle of the attempt running now, when the run has a tracer (one
        #: attempt of a delivery runs at a time; kept here because ``_retry_delay`` reports
        #: a failure and only sees the delivery)
        self.trace: Any = None


@dataclass(frozen=True)
class RetryInfo:
    """What ``ctx.retry_info()`` tells a step about earlier attempts of its delivery."""

    retry_number: int
    elapsed_seconds: float
    last_exception: BaseException | None
    last_failed_at: float | None


class Attempt:
    """One execution of a delivery's step body. Reached through ``CURRENT_ATTEMPT``."""

    __slots__ = (
        "asked_input",
        "children",
        "collect_logs",
        "delivery",
        "holds_state",
        "produced",
        "rt",
        "run",
        "started_at",
        "state_base",
        "state_version",
        "stream",
        "targets",
        "task",
        "timed_out",
        "token",
        "wait_index",
        "waited",
    )

    def __init__(self, run: Run, rt: StepRuntime, delivery: Delivery) -> None:
        self.run = run
        self.rt = rt
        self.delivery = delivery
        self.task: asyncio.Task[Any] | None = None
        self.timed_out = False
        self.wait_index = 0
        #: durable runs: ids of the waiters this attempt registered
        self.waited: set[str] | None = None
        self.produced: list[tuple[int, Event]] = []
        self.stream: list[Event] = []
        self.children: list[Run] | None = None
        self.state_version = 0
        #: this attempt streamed an InputRequiredEvent
        self.asked_input = False
        #: per collect buffer id: what this attempt added and took (undone on failure)
        self.collect_logs: dict[str | None, list[tuple[str, int, Event]]] | None = None
        #: durable runs: the attempt holds the run's state writer lease since its first edit
        self.holds_state = False
        #: durable runs: the committed state when the lease was taken (restored on failure)
        self.state_base: Any = None
        #: durable runs: the claim token fencing this attempt's commit
        self.token = ""
        #: durable runs: wall-clock start, recorded with the commit or failure
        self.started_at: float | None = None
        #: durable runs: for each produced event's seq, its explicit target and lineage
        self.targets: dict[int, tuple[Any, int]] | None = None

    @property
    def number(self) -> int:
        return self.delivery.attempts

    @property
    def invocation_id(self) -> str:
        return f"{self.run.run_id}:{self.delivery.seq}:{self.rt.spec.name}"

    def undo_collects(self) -> None:
        """Leave the step's collect buffers as this attempt found them."""
        if self.collect_logs:
            buffers = self.rt.buffers
            for buffer_id, log in self.collect_logs.items():
                buffer = buffers.get(buffer_id)
                if buffer is not None:
                    buffer.undo(log)
            self.collect_logs = None

    def expire(self) -> None:
        """The step's timeout went off: cancel the attempt (it becomes a StepTimeoutError)."""
        self.timed_out = True
        if self.task is not None:
            self.task.cancel()


CURRENT_ATTEMPT: ContextVar[Attempt | None] = ContextVar("riverbed_attempt", default=None)
