"""A run's event stream: append-only, read by any number of readers, each at its own cursor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from riverbed.events import Event, StopEvent

__all__ = ["EventStream"]


class EventStream:
    """Events written with ``ctx.write_event_to_stream`` plus the run's terminal event.

    Writers never wait. A reader that has caught up awaits one shared future, which the next
    write resolves, so a burst of writes costs one wake-up per reader, not one per event.
    """

    __slots__ = ("_closed", "_events", "_signal", "terminal")

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._signal: asyncio.Future[None] | None = None
        self._closed = False
        #: the event that ended the run, once it has ended
        self.terminal: StopEvent | None = None

    def __len__(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, event: Event) -> None:
        if self._closed:
            return
        self._events.append(event)
        self._wake()

    def close(self, last: StopEvent | None = None) -> None:
        """Append the terminal event (if any) and end every reader after it."""
        if self._closed:
            return
        if last is not None:
            self._events.append(last)
            self.terminal = last
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        signal = self._signal
        if signal is not None:
            self._signal = None
            if not signal.done():
                signal.set_result(None)

    async def read(self, after: int = 0) -> AsyncIterator[Event]:
        """Every event after position ``after`` (0 = from the start), until the stream ends."""
        position = after
        events = self._events
        while True:
            while position < len(events):
                event = events[position]
                position += 1
                yield event
            if self._closed:
                return
            if self._signal is None:
                self._signal = asyncio.get_running_loop().create_future()
            await self._signal
