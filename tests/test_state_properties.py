"""Property tests: random operations on the state store agree with a plain-dict model.

Each example runs its operations in a fresh event loop (``asyncio.run``), since hypothesis
and async fixtures mix poorly.
"""

import asyncio
import copy
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from riverbed.errors import StatePathError, StateValidationError
from riverbed.state import DictState, StateStore

SETTINGS = settings(max_examples=120, deadline=None)

# Keys are letters or digits so that a path can meet a dict, a list or an int. Letters are
# never attributes of an int or a list, so the model needs no getattr rules.
KEYS = st.sampled_from(["a", "b", "c", "0", "1"])
PATHS = st.lists(KEYS, min_size=1, max_size=3).map(".".join)
LEAVES = st.one_of(st.integers(-3, 3), st.lists(st.integers(0, 3), max_size=3))
VALUES = st.recursive(LEAVES, lambda inner: st.dictionaries(KEYS, inner, max_size=3), max_leaves=6)


class Missing(Exception):
    """The model's "path not there"."""


# -- the plain-dict model of DictState ----------------------------------------------------


def _child(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        raise Missing(key)
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return node[int(key)]
    raise Missing(key)


def model_get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for key in path.split("."):
        node = _child(node, key)
    return node


def model_set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """The new data, or Missing if the path cannot be set (data is left alone)."""
    new = copy.deepcopy(data)
    *walk, last = path.split(".")
    node: Any = new
    for key in walk:
        if isinstance(node, dict) and key not in node:
            node[key] = {}
        node = _child(node, key)
    if isinstance(node, dict):
        node[last] = copy.deepcopy(value)
    elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = copy.deepcopy(value)
    else:
        raise Missing(last)
    return new


@dataclass
class Set:
    path: str
    value: Any


@dataclass
class Get:
    path: str
    with_default: bool


@dataclass
class Edit:
    updates: dict[str, Any]
    fail: bool


@dataclass
class Clear:
    pass


@dataclass
class Snapshot:
    pass


DICT_OPS = st.lists(
    st.one_of(
        st.builds(Set, PATHS, VALUES),
        st.builds(Get, PATHS, st.booleans()),
        st.builds(Edit, st.dictionaries(KEYS, VALUES, max_size=3), st.booleans()),
        st.just(Clear()),
        st.just(Snapshot()),
    ),
    max_size=25,
)


async def _run_dict_ops(ops: list[Any]) -> None:
    store: StateStore[DictState] = StateStore(DictState)
    model: dict[str, Any] = {}
    for op in ops:
        if isinstance(op, Set):
            value = copy.deepcopy(op.value)
            try:
                expected = model_set(model, op.path, value)
            except Missing:
                try:
                    await store.set(op.path, value)
                except StatePathError:
                    pass
                else:
                    raise AssertionError(f"set({op.path!r}) should have failed")
            else:
                await store.set(op.path, value)
                model = expected
            if isinstance(value, (dict, list)):
                value.clear()  # changing the caller's object later must not change the state
        elif isinstance(op, Get):
            try:
                expected = model_get(model, op.path)
            except Missing:
                if op.with_default:
                    assert await store.get(op.path, default="<none>") == "<none>"
                else:
                    try:
                        await store.get(op.path)
                    except StatePathError:
                        pass
                    else:
                        raise AssertionError(f"get({op.path!r}) should have failed") from None
            else:
                assert await store.get(op.path) == expected
        elif isinstance(op, Edit):
            try:
                async with store.edit_state() as state:
                    for key, value in op.updates.items():
                        state[key] = copy.deepcopy(value)
                    for value in state.values():
                        if isinstance(value, list):
                            value.append(99)  # a nested change, rolled back with the rest
                    if op.fail:
                        raise LookupError("rollback")
            except LookupError:
                assert op.fail
            else:
                model = copy.deepcopy(model)
                model.update(copy.deepcopy(op.updates))
                for value in model.values():
                    if isinstance(value, list):
                        value.append(99)
        elif isinstance(op, Clear):
            await store.clear()
            model = {}
        else:
            state = await store.get_state()
            assert state.data == model
            for value in state.data.values():
                if isinstance(value, (list, dict)):
                    value.clear()
            state.data["scribble"] = 1
        assert (await store.get_state()).data == model


@SETTINGS
@given(DICT_OPS)
def test_dict_state_agrees_with_a_plain_dict(ops: list[Any]) -> None:
    asyncio.run(_run_dict_ops(ops))


# -- typed state ----------------------------------------------------------------------


class Typed(BaseModel):
    a: int = 0
    b: list[int] = Field(default_factory=list)
    c: dict[str, int] = Field(default_factory=dict)


def _valid_int(value: Any) -> bool:
    if isinstance(value, bool):
        return True  # pydantic's lax mode accepts bools for int
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.lstrip("-").isdigit()


# Candidate values: some valid ints, some strings pydantic cannot read as ints.
INTISH = st.one_of(st.integers(-5, 5), st.sampled_from(["7", "-2", "x", "", "1.5", "zz"]))
TYPED_PATHS = st.one_of(
    st.just("a"),
    st.builds(lambda i: f"b.{i}", st.integers(0, 3)),
    st.builds(lambda k: f"c.{k}", st.sampled_from(["p", "q"])),
)


@dataclass
class TypedSet:
    path: str
    value: Any


@dataclass
class TypedEdit:
    a: Any
    append: Any
    key: str
    value: Any
    fail: bool


TYPED_OPS = st.lists(
    st.one_of(
        st.builds(TypedSet, TYPED_PATHS, INTISH),
        st.builds(TypedSet, st.just("b"), st.lists(INTISH, max_size=3)),
        st.builds(TypedEdit, INTISH, INTISH, st.sampled_from(["p", "q"]), INTISH, st.booleans()),
        st.builds(Get, st.one_of(TYPED_PATHS, st.just("d")), st.booleans()),
        st.just(Clear()),
    ),
    max_size=25,
)


def typed_model_set(model: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """The new model, or raise Missing (bad path) / ValueError (bad value)."""
    new = copy.deepcopy(model)
    head, _, rest = path.partition(".")
    if head == "b" and not rest:
        if not all(_valid_int(v) for v in value):
            raise ValueError(value)
        new["b"] = [int(v) for v in value]
        return new
    if head == "b" and int(rest) >= len(new["b"]):
        raise Missing(rest)  # a bad path is reported before a bad value
    if not _valid_int(value):
        raise ValueError(value)
    if head == "a":
        new["a"] = int(value)
    elif head == "b":
        new["b"][int(rest)] = int(value)
    else:
        new["c"][rest] = int(value)
    return new


async def _run_typed_ops(ops: list[Any]) -> None:
    store: StateStore[Typed] = StateStore(Typed)
    model: dict[str, Any] = Typed().model_dump()
    for op in ops:
        if isinstance(op, TypedSet):
            try:
                expected = typed_model_set(model, op.path, op.value)
            except Missing:
                try:
                    await store.set(op.path, op.value)
                except StatePathError:
                    pass
                else:
                    raise AssertionError(f"set({op.path!r}) should have failed") from None
            except ValueError:
                try:
                    await store.set(op.path, op.value)
                except StateValidationError:
                    pass
                else:
                    raise AssertionError(f"set({op.path!r}, {op.value!r}) passed") from None
            else:
                await store.set(op.path, op.value)
                model = expected
        elif isinstance(op, TypedEdit):
            valid = all(_valid_int(v) for v in (op.a, op.append, op.value))
            try:
                async with store.edit_state() as state:
                    state.__dict__["a"] = op.a  # bypass pydantic: checked at exit
                    state.b.append(op.append)
                    state.c[op.key] = op.value
                    if op.fail:
                        raise LookupError("rollback")
            except LookupError:
                assert op.fail
            except StateValidationError:
                assert not op.fail
                assert not valid
            else:
                assert valid
                model = copy.deepcopy(model)
                model["a"] = int(op.a)
                model["b"].append(int(op.append))
                model["c"][op.key] = int(op.value)
        elif isinstance(op, Get):
            try:
                expected = model_get(model, op.path)
            except Missing:
                if op.with_default:
                    assert await store.get(op.path, default=None) is None
                else:
                    try:
                        await store.get(op.path)
                    except StatePathError:
                        pass
                    else:
                        raise AssertionError(f"get({op.path!r}) should have failed") from None
            else:
                assert await store.get(op.path) == expected
        else:
            await store.clear()
            model = Typed().model_dump()
        state = await store.get_state()
        assert isinstance(state, Typed)
        assert state.model_dump() == model
        assert Typed.model_validate(state.model_dump()) == state  # always valid


@SETTINGS
@given(TYPED_OPS)
def test_typed_state_agrees_with_a_plain_dict(ops: list[Any]) -> None:
    asyncio.run(_run_typed_ops(ops))


# -- concurrency ----------------------------------------------------------------------


async def _concurrent_edits(counts: list[int]) -> None:
    store: StateStore[DictState] = StateStore(DictState)

    async def worker(index: int, times: int) -> None:
        for _ in range(times):
            async with store.edit_state() as state:
                value = state.get(str(index), 0)
                await asyncio.sleep(0)
                state[str(index)] = value + 1
                state["total"] = state.get("total", 0) + 1

    await asyncio.gather(*(worker(i, n) for i, n in enumerate(counts)))
    state = await store.get_state()
    assert state.get("total", 0) == sum(counts)
    for index, times in enumerate(counts):
        assert state.get(str(index), 0) == times


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 8), max_size=12))
def test_concurrent_edit_state_blocks_never_lose_updates(counts: list[int]) -> None:
    asyncio.run(_concurrent_edits(counts))
