"""A run's event stream: append-only, read by any number of readers, each at its own cursor."""

from __future__ import annotations

import asyncio

from riverbed.events import Event, StopEvent

__all__ = ["EventStream"]


class EventStream:
    """Events written with ``ctx.write_event_to_stream`` plus the run's terminal event.

    Writers never wait. A reader that has caught up awaits one shared future, which the next
    write resolves, so a burst of writes costs one wake-up per reader, not one per event.
    """

    __slots__ = ("_closed", "_events", "_live", "_signal", "terminal")

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._signal: asyncio.Future[None] | None = None
        self._closed = False
        #: positions of live events: shown to readers, never stored (durable runs)
        self._live: set[int] | None = None
        #: the event that ended the run, once it has ended
        self.terminal: StopEvent | None = None

    def __len__(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def events(self) -> list[Event]:
        """The live list of events (append-only; read it, never change it)."""
        return self._events

    async def wait(self) -> None:
        """Return once something is written or the stream closes."""
        if self._closed:
            return
        if self._signal is None:
            self._signal = asyncio.get_running_loop().create_future()
        # Shielded: the future is shared, and a reader that is cancelled while waiting
        # must not cancel it under the other readers.
        await asyncio.shield(self._signal)

    def write(self, event: Event, live: bool = False) -> None:
        if self._closed:
            return
        if live:
            if self._live is None:
                self._live = set()
            self._live.add(len(self._events))
        self._events.append(event)
        if self._signal is not None:  # tested inline: most writes find no reader waiting
            self._wake()

    def is_live(self, position: int) -> bool:
        """Whether the event at ``position`` is live only: a durable run did not store it
        (``write_event_to_stream(ev, durable=False)``, or a nested run's event), so a
        reader of the store will not see it."""
        return self._live is not None and position in self._live

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
