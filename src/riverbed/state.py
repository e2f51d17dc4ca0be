"""The state a run's steps share: ``ctx.store``.

State is either a :class:`DictState` (the default, a dict you address with dotted paths) or a
pydantic model named in a step's ``Context[MyState]`` annotation. Unlike LlamaIndex, typed
state is validated on every ``set`` and on ``edit_state`` exit, ``get_state`` returns a deep
copy, and an exception inside ``edit_state`` rolls the edit back.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from riverbed.errors import NestedEditStateError, StatePathError, StateValidationError

__all__ = ["DictState", "StateStore"]

S = TypeVar("S", bound=BaseModel)

_MISSING: Any = object()
_MAX_SEGMENTS = 1000
_SCALARS: frozenset[type] = frozenset({int, float, str, bytes, bool, type(None), complex})


class DictState(BaseModel):
    """Untyped state: a dict of JSON-like values, also readable as attributes."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    @property
    def data(self) -> dict[str, Any]:
        """The underlying dict (live, not a copy)."""
        extra = self.__pydantic_extra__
        if extra is None:  # pragma: no cover - extra="allow" always sets it
            extra = {}
            object.__setattr__(self, "__pydantic_extra__", extra)
        return extra

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        """``state.get(key, default)``, as on a dict."""
        return self.data.get(key, default)

    def keys(self) -> Any:
        """The keys, as on a dict."""
        return self.data.keys()

    def values(self) -> Any:
        """The values, as on a dict."""
        return self.data.values()

    def items(self) -> Any:
        """The pairs, as on a dict."""
        return self.data.items()

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``state.setdefault(key, default)``, as on a dict."""
        return self.data.setdefault(key, default)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """``state.pop(key[, default])``, as on a dict."""
        if default is _MISSING:
            return self.data.pop(key)
        return self.data.pop(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """``state.update(...)``, as on a dict."""
        self.data.update(*args, **kwargs)


def snapshot(value: Any) -> Any:
    """A deep copy that is cheap for the common JSON-like shapes.

    Objects that cannot be deep-copied (clients, locks) are shared, not copied: an edit that
    is rolled back cannot undo changes made *inside* such an object.
    """
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {k: snapshot(v) for k, v in value.items()}
    if kind is list:
        return [snapshot(v) for v in value]
    if kind is tuple:
        return tuple(snapshot(v) for v in value)
    if isinstance(value, BaseModel):
        clone = value.__copy__()
        fields = clone.__dict__
        for name, item in fields.items():
            fields[name] = snapshot(item)
        extra = clone.__pydantic_extra__
        if extra:
            for name, item in extra.items():
                extra[name] = snapshot(item)
        return clone
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def _split(path: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise StatePathError(f"State path must be a non-empty string like 'a.b.0', got {path!r}.")
    segments = path.split(".")
    if len(segments) > _MAX_SEGMENTS:
        raise StatePathError(f"State path has more than {_MAX_SEGMENTS} segments.")
    return segments


def _step_into(node: Any, segment: str) -> Any:
    """One segment of a dotted path: a dict key, then a list index, then an attribute."""
    if isinstance(node, dict):
        return node[segment]
    if isinstance(node, (list, tuple)):
        return node[int(segment)]
    if isinstance(node, DictState):
        return node.data[segment]
    try:
        return getattr(node, segment)
    except AttributeError:
        raise KeyError(segment) from None


def _assign(node: Any, segment: str, value: Any) -> None:
    if isinstance(node, dict):
        node[segment] = value
    elif isinstance(node, list):
        # A bad index is a bad path, like on get(): StatePathError, not a bare IndexError.
        try:
            node[int(segment)] = value
        except (ValueError, IndexError):
            raise StatePathError(
                f"Cannot set item {segment!r} of a list of {len(node)} items; use an "
                "existing index, or set the whole list."
            ) from None
    elif isinstance(node, DictState):
        node.data[segment] = value
    elif isinstance(node, BaseModel):
        if segment not in type(node).model_fields:
            raise StatePathError(f"{type(node).__name__} has no field {segment!r}.")
        try:
            type(node).__pydantic_validator__.validate_assignment(node, segment, value)
        except ValidationError as exc:
            raise StateValidationError(
                f"Cannot set {type(node).__name__}.{segment} to {value!r}: {exc}"
            ) from exc
    else:
        try:
            setattr(node, segment, value)
        except (AttributeError, TypeError):
            # e.g. set("count.x", 1) where count is an int: report the path, not the int.
            raise StatePathError(
                f"Cannot set {segment!r} on a {type(node).__name__}; only dicts, lists and "
                "objects with attributes can hold a path."
            ) from None


def _revalidate(model: BaseModel) -> None:
    """Validate every field of ``model`` in place, nested models first.

    pydantic keeps a model instance as it is when it is assigned to a field (it does not
    revalidate instances), so ``state.inner.count = "x"`` would go unnoticed if only the
    top-level fields were checked.
    """
    validator = type(model).__pydantic_validator__
    for name in type(model).model_fields:
        value = model.__dict__[name]
        _revalidate_nested(value)
        validator.validate_assignment(model, name, value)


def _revalidate_nested(value: Any) -> None:
    """Revalidate the pydantic models found in ``value`` (itself, or inside containers)."""
    if isinstance(value, BaseModel):
        if not isinstance(value, DictState):
            _revalidate(value)
    elif type(value) in (list, tuple):
        for item in value:
            _revalidate_nested(item)
    elif type(value) is dict:
        for item in value.values():
            _revalidate_nested(item)


def _walk_creating(root: Any, segments: list[str]) -> Any:
    node = root
    for segment in segments:
        try:
            node = _step_into(node, segment)
        except (KeyError, IndexError, ValueError, TypeError):
            if isinstance(node, (dict, DictState)):
                child: dict[str, Any] = {}
                _assign(node, segment, child)
                node = child
            else:
                raise StatePathError(
                    f"Cannot create {segment!r} inside a {type(node).__name__}; "
                    "only dicts get missing keys created."
                ) from None
    return node


class _EditState(Generic[S]):
    """``async with store.edit_state() as state``: a locked, validated, all-or-nothing edit."""

    __slots__ = ("_store", "_work")

    def __init__(self, store: StateStore[S]) -> None:
        self._store = store

    async def __aenter__(self) -> S:
        store = self._store
        store._check_not_nested("edit_state()")
        if store.before_write is not None:
            await store.before_write()
        await store._lock.acquire()
        store._owner = asyncio.current_task()
        self._work: S = snapshot(store._state)
        return self._work

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        try:
            if exc_type is None:
                store._commit(store._validated(self._work))
        finally:
            store._owner = None
            store._lock.release()


class StateStore(Generic[S]):
    """The state of one context: read and written by steps and by code outside the run.

    Every method is safe against concurrent steps: writers take one lock per store, readers
    see the last complete write.
    """

    def __init__(self, state_type: type[S], initial: S | None = None) -> None:
        self.state_type = state_type
        self._state: S = initial if initial is not None else state_type()
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self.version = 0
        #: called with the new state after every committed change (durable stores hook here)
        self.on_change: Callable[[S], None] | None = None
        #: awaited before every write (a durable run takes its state writer lease here)
        self.before_write: Callable[[], Awaitable[None]] | None = None
        #: called with a new state before it replaces the old one; raising rejects it
        #: (a durable run checks that the state can be stored)
        self.check: Callable[[S], None] | None = None

    # -- reads ---------------------------------------------------------------------------
    async def get(self, path: str, default: Any = _MISSING) -> Any:
        """The value at dotted ``path`` (dict keys, list indices, attributes).

        Raises :class:`~riverbed.errors.StatePathError` when nothing is there and no
        ``default`` was given.
        """
        node: Any = self._state
        for segment in _split(path):
            try:
                node = _step_into(node, segment)
            except (KeyError, IndexError, ValueError, TypeError):
                if default is not _MISSING:
                    return default
                raise StatePathError(
                    f"Path {path!r} not found in state (no {segment!r}). "
                    f"Pass a default: await ctx.store.get({path!r}, default=None)."
                ) from None
        return node

    async def get_state(self) -> S:
        """A deep copy of the whole state: changing it does not change the run's state."""
        return snapshot(self._state)  # type: ignore[no-any-return]

    # -- writes --------------------------------------------------------------------------
    async def set(self, path: str, value: Any) -> None:
        """Set the value at dotted ``path``, creating missing intermediate dicts. A copy of
        ``value`` is stored (objects that cannot be copied, like clients, are shared).

        Typed state is validated: a wrong type raises
        :class:`~riverbed.errors.StateValidationError` and leaves the state unchanged.
        """
        segments = _split(path)
        self._check_not_nested("set()")
        if self.before_write is not None:
            await self.before_write()
        # Keep a copy, as set_state() does and as a durable store (which serializes) would:
        # changing the caller's list afterwards must not change the state behind the lock.
        value = snapshot(value)
        async with self._lock:
            work = self._state
            new_state: Any
            if isinstance(work, DictState):
                # Only the touched top-level value is copied, so a failure changes nothing.
                top = segments[0]
                data = dict(work.data)
                if len(segments) == 1:
                    data[top] = value
                else:
                    data[top] = snapshot(data.get(top, {}))
                    parent = _walk_creating(data, segments[:-1])
                    _assign(parent, segments[-1], value)
                new_state = work.model_construct(**data)
            else:
                new_state = work.__copy__()
                top = segments[0]
                if len(segments) == 1:
                    top_value = value
                else:
                    try:
                        current = getattr(new_state, top)
                    except AttributeError:
                        raise StatePathError(
                            f"{type(work).__name__} has no field {top!r} (path {path!r})."
                        ) from None
                    holder = {top: snapshot(current)}
                    parent = _walk_creating(holder, segments[:-1])
                    _assign(parent, segments[-1], value)
                    top_value = holder[top]
                # A change deep inside a nested model or a dict of a nested model is not
                # seen by validating the top-level field alone (pydantic keeps instances).
                try:
                    _revalidate_nested(top_value)
                except ValidationError as exc:
                    raise StateValidationError(f"Cannot set {path!r} to {value!r}: {exc}") from exc
                _assign(new_state, top, top_value)
            self._commit(new_state)

    async def set_state(self, state: S | BaseModel | dict[str, Any]) -> None:
        """Replace the whole state (a copy of ``state`` is kept).

        An instance of a parent class of the state type is merged into the current state,
        which keeps workflow subclasses with richer state working.
        """
        self._check_not_nested("set_state()")
        if self.before_write is not None:
            await self.before_write()
        async with self._lock:
            self._commit(self._coerce(state))

    async def clear(self) -> None:
        """Reset the state to its defaults."""
        self._check_not_nested("clear()")
        if self.before_write is not None:
            await self.before_write()
        async with self._lock:
            self._commit(self.state_type())

    def edit_state(self) -> _EditState[S]:
        """Edit the state atomically::

            async with ctx.store.edit_state() as state:
                state["count"] = state.get("count", 0) + 1

        Other writers wait until the block exits. The edit is applied at exit, after typed
        state is validated; if the block raises, nothing is applied.
        """
        return _EditState(self)

    # -- internals -----------------------------------------------------------------------
    def _check_not_nested(self, what: str) -> None:
        if self._owner is not None and self._owner is asyncio.current_task():
            raise NestedEditStateError(
                f"ctx.store.{what} was called inside `async with ctx.store.edit_state()` of "
                "the same task, which would wait for itself forever. Change the `state` "
                "object the block gives you instead."
            )

    def _commit(self, new_state: S) -> None:
        if self.check is not None:
            self.check(new_state)
        self._state = new_state
        self.version += 1
        if self.on_change is not None:
            self.on_change(new_state)

    def _validated(self, work: S) -> S:
        if isinstance(work, DictState):
            return work
        if not isinstance(work, self.state_type):
            raise StateValidationError(
                f"edit_state() must leave a {self.state_type.__name__}, got {type(work).__name__}."
            )
        try:
            _revalidate(work)
        except ValidationError as exc:
            raise StateValidationError(
                f"The edited state is not a valid {self.state_type.__name__}; the edit was "
                f"not applied: {exc}"
            ) from exc
        return work

    def _coerce(self, state: S | BaseModel | dict[str, Any]) -> S:
        target = self.state_type
        if isinstance(state, target):
            return self._validated(snapshot(state))
        if isinstance(state, dict):
            try:
                return target.model_validate(state)
            except ValidationError as exc:
                raise StateValidationError(
                    f"Cannot use this dict as {target.__name__}: {exc}"
                ) from exc
        if isinstance(state, BaseModel) and isinstance(self._state, type(state)):
            merged = snapshot(self._state)
            for name in type(state).model_fields:
                _assign(merged, name, snapshot(getattr(state, name)))
            return merged  # type: ignore[no-any-return]
        raise StateValidationError(
            f"set_state() expects a {target.__name__}, got {type(state).__name__}."
        )
