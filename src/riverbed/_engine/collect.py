"""Fan-in buffers for ``ctx.collect_events``, O(1) per collected event."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence

from riverbed.events import Event

__all__ = ["CollectBuffer"]


class CollectBuffer:
    """The events one step has collected so far under one ``buffer_id``.

    Events are kept per expected type. The multiset of expected types is computed once per
    ``expected`` list object (the usual code passes the same list every call), so a call
    costs O(number of distinct expected types), not O(len(expected)).
    """

    __slots__ = ("_by_type", "_expected_ref", "_needed", "_type_cache")

    def __init__(self) -> None:
        self._by_type: dict[type[Event], deque[Event]] = {}
        self._expected_ref: Sequence[type[Event]] | None = None
        self._needed: Counter[type[Event]] = Counter()
        self._type_cache: dict[type[Event], type[Event] | None] = {}

    def _plan(self, expected: Sequence[type[Event]]) -> Counter[type[Event]]:
        if expected is not self._expected_ref or len(expected) != sum(self._needed.values()):
            self._expected_ref = expected
            self._needed = Counter(expected)
            self._type_cache = {}
        return self._needed

    def _slot_for(
        self, event_type: type[Event], needed: Counter[type[Event]]
    ) -> type[Event] | None:
        cache = self._type_cache
        if event_type in cache:
            return cache[event_type]
        slot: type[Event] | None = event_type if event_type in needed else None
        if slot is None:
            for candidate in needed:
                if issubclass(event_type, candidate):
                    slot = candidate
                    break
        cache[event_type] = slot
        return slot

    def add(self, event: Event, expected: Sequence[type[Event]]) -> list[Event] | None:
        """Buffer ``event``; when every expected event is there, take and return them in
        ``expected`` order, else return None."""
        needed = self._plan(expected)
        if not needed:
            return []
        slot = self._slot_for(type(event), needed)
        if slot is None:
            return None
        queue = self._by_type.get(slot)
        if queue is None:
            queue = self._by_type[slot] = deque()
        queue.append(event)
        for kind, count in needed.items():
            held = self._by_type.get(kind)
            if held is None or len(held) < count:
                return None
        return [self._by_type[kind].popleft() for kind in expected]

    def missing(self) -> dict[str, int]:
        """Expected events not yet collected, by type name (for error messages)."""
        return {
            kind.__name__: count - len(self._by_type.get(kind, ()))
            for kind, count in self._needed.items()
            if len(self._by_type.get(kind, ())) < count
        }

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_type.values())
