"""``ctx.wait_for_event``: a step suspended until a matching event arrives.

The step is not re-run (LlamaIndex replays the whole step, running the code before the wait
twice); its coroutine simply waits on a future.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from riverbed.errors import WaitForEventTimeoutError
from riverbed.events import Event

if TYPE_CHECKING:
    from riverbed._engine.run import Run

__all__ = ["Waiter", "Waiters", "answers_wait"]


class Waiter:
    __slots__ = ("event_type", "future", "requirements", "step", "waiter_id")

    def __init__(
        self,
        waiter_id: str,
        event_type: type[Event],
        requirements: dict[str, Any] | None,
        step: str,
        future: asyncio.Future[Event],
    ) -> None:
        self.waiter_id = waiter_id
        self.event_type = event_type
        self.requirements = requirements
        self.step = step
        self.future = future

    def matches(self, event: Event) -> bool:
        return answers_wait(self.event_type, self.requirements, event)


def answers_wait(
    event_type: type[Event], requirements: dict[str, Any] | None, event: Event
) -> bool:
    """Whether ``event`` answers a wait for ``event_type`` with these requirements."""
    if not isinstance(event, event_type):
        return False
    if requirements:
        for key, expected in requirements.items():
            if event.get(key, _ABSENT) != expected:
                return False
    return True


_ABSENT = object()


class Waiters:
    """The waiters of one run, and the waiter ids whose request event was sent and not yet
    answered (so a retried wait that was never answered does not ask twice)."""

    __slots__ = ("_announced", "_restored", "_run", "_waiters")

    def __init__(self, run: Run) -> None:
        # Weak: the run holds its waiters, and a cycle would keep a finished run (and its
        # whole stream) alive until the garbage collector's next full pass.
        self._run = weakref.ref(run)
        self._waiters: list[Waiter] = []
        self._announced: set[str] = set()
        #: waits a resumed durable run read from its store, whose steps are running again
        #: and have not reached their wait yet (see :meth:`restore`)
        self._restored: list[Waiter] = []

    def __bool__(self) -> bool:
        return bool(self._waiters or self._restored)

    @property
    def waiting(self) -> int:
        """How many steps are suspended in a wait in this process."""
        return len(self._waiters)

    def restore(self, waiter: Waiter) -> None:
        """Stand in for a stored wait until its step, running again after a resume, reaches
        it: an event sent meanwhile is the answer (the store records it, and the step's
        wait then returns it at once) instead of finding nobody waiting."""
        self._restored.append(waiter)

    def drop_restored(self, step: str) -> None:
        """An attempt of ``step`` ended: the stored waits it did not reach are not waited
        on any more (the step took another path this time)."""
        self._restored = [w for w in self._restored if w.step != step]

    def steps_of(self, waiter_ids: tuple[str, ...]) -> set[str]:
        """The steps of the waiters (live or restored) with these ids."""
        return {w.step for w in (*self._waiters, *self._restored) if w.waiter_id in waiter_ids}

    def resolve(self, event: Event) -> set[str]:
        """Hand ``event`` to every waiter it matches; return the steps that took it."""
        taken: set[str] = set()
        for waiter in list(self._waiters):
            if waiter.matches(event) and not waiter.future.done():
                waiter.future.set_result(event)
                self._waiters.remove(waiter)
                taken.add(waiter.step)
                # Answered: a later wait under this id (a retry of the step after the
                # answer was used) is a new question and must be announced again.
                self._announced.discard(waiter.waiter_id)
        for waiter in list(self._restored):
            if waiter.matches(event):
                # Nobody awaits this one: the store has the answer for the step's wait.
                self._restored.remove(waiter)
                taken.add(waiter.step)
        run = self._run()
        if taken and run is not None:
            run.waiting_for_input = False
        return taken

    async def wait(
        self,
        waiter_id: str,
        event_type: type[Event],
        requirements: dict[str, Any] | None,
        step: str,
        waiter_event: Event | None,
        timeout: float | None,
    ) -> Event:
        run = self._run()
        assert run is not None  # a step of the run is calling: the run is alive
        future: asyncio.Future[Event] = run.loop.create_future()
        waiter = Waiter(waiter_id, event_type, requirements, step, future)
        if self._restored:
            self._restored = [w for w in self._restored if w.waiter_id != waiter_id]
        self._waiters.append(waiter)
        question = waiter_event if waiter_id not in self._announced else None
        try:
            answered, timeout, question = await run.register_waiter(
                waiter_id, event_type, requirements, step, timeout, question
            )
        except BaseException:
            self._waiters.remove(waiter)
            raise
        if answered is not None:
            # A durable run's store had the answer: from before a restart, or from a commit
            # that was on its way when this wait began (which may have been handed to the
            # waiter already, when that commit returned).
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            return answered
        if question is not None:
            self._announced.add(waiter_id)
            run.write_stream(question)

        def expire() -> None:
            if not future.done():
                run.timer_fired("wait_timeout", waiter_id)
                future.set_exception(
                    WaitForEventTimeoutError(
                        f"Step {step!r} waited {timeout} seconds for {event_type.__name__} "
                        f"(waiter {waiter_id!r}) and none came. Pass a larger "
                        "wait_for_event(timeout=...) or None to wait without limit."
                    )
                )

        handle = run.clock.call_later(timeout, expire) if timeout is not None else None
        try:
            return await future
        finally:
            if handle is not None:
                handle.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def awaited(self, event: Event) -> list[str]:
        """Ids of the waiters waiting for ``event``'s type, whatever their requirements."""
        return [
            w.waiter_id
            for w in (*self._waiters, *self._restored)
            if isinstance(event, w.event_type) and not w.future.done()
        ]

    def matching(self, event: Event) -> tuple[str, ...]:
        """Ids of the waiters ``event`` would answer (nothing is resolved)."""
        found = tuple(
            w.waiter_id for w in self._waiters if w.matches(event) and not w.future.done()
        )
        if self._restored:
            found += tuple(w.waiter_id for w in self._restored if w.matches(event))
        return found

    def cancel_all(self) -> None:
        for waiter in self._waiters:
            waiter.future.cancel()
        self._waiters.clear()
        self._restored.clear()
