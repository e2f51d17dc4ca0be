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

    __slots__ = ("_by_type", "_expected_ref", "_needed", "_type_cache", "_unplanned")

    def __init__(self) -> None:
        #: per expected type: (event sequence number, event), oldest first
        self._by_type: dict[type[Event], deque[tuple[int, Event]]] = {}
        self._expected_ref: Sequence[type[Event]] | None = None
        self._needed: Counter[type[Event]] = Counter()
        self._type_cache: dict[type[Event], type[Event] | None] = {}
        #: events were restored before any plan existed; file them under the plan's types
        self._unplanned = False

    def _plan(self, expected: Sequence[type[Event]]) -> Counter[type[Event]]:
        if expected is not self._expected_ref or len(expected) != sum(self._needed.values()):
            self._expected_ref = expected
            self._needed = Counter(expected)
            self._type_cache = {}
            if self._unplanned:
                self._unplanned = False
                held = sorted(pair for queue in self._by_type.values() for pair in queue)
                self._by_type = {}
                for seq, event in held:
                    slot = self._slot_for(type(event), self._needed) or type(event)
                    self._by_type.setdefault(slot, deque()).append((seq, event))
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

    def add(
        self,
        event: Event,
        expected: Sequence[type[Event]],
        seq: int = 0,
        log: list[tuple[str, int, Event]] | None = None,
    ) -> list[Event] | None:
        """Buffer ``event`` (sequence number ``seq``); when every expected event is there,
        take and return them in ``expected`` order, else return None.

        ``log`` receives ("add", seq, event) and ("take", seq, event) entries, so a failed
        attempt can be undone (:meth:`undo`) and a durable commit can record the change.
        """
        needed = self._plan(expected)
        if not needed:
            return []
        slot = self._slot_for(type(event), needed)
        if slot is None:
            return None
        queue = self._by_type.get(slot)
        if queue is None:
            queue = self._by_type[slot] = deque()
        queue.append((seq, event))
        if log is not None:
            log.append(("add", seq, event))
        for kind, count in needed.items():
            held = self._by_type.get(kind)
            if held is None or len(held) < count:
                return None
        taken = [self._by_type[kind].popleft() for kind in expected]
        if log is not None:
            log.extend(("take", s, e) for s, e in taken)
        return [e for _, e in taken]

    def restore(self, seq: int, event: Event) -> None:
        """Put back an event held before (when a run is resumed from a store)."""
        self._by_type.setdefault(type(event), deque()).append((seq, event))
        self._unplanned = True

    def undo(self, log: list[tuple[str, int, Event]]) -> None:
        """Reverse the entries of ``log`` (newest first): a failed attempt leaves the buffer
        as it found it, so its retry does not collect the same event twice."""
        for action, seq, event in reversed(log):
            slot = self._slot_for(type(event), self._needed) or type(event)
            queue = self._by_type.setdefault(slot, deque())
            if action == "take":
                queue.appendleft((seq, event))
            else:
                for index, (held_seq, held) in enumerate(queue):
                    if held_seq == seq and held is event:
                        del queue[index]
                        break

    def missing(self) -> dict[str, int]:
        """Expected events not yet collected, by type name (for error messages)."""
        return {
            kind.__name__: count - len(self._by_type.get(kind, ()))
            for kind, count in self._needed.items()
            if len(self._by_type.get(kind, ())) < count
        }

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_type.values())
