"""The state store, ``ctx.store``: dotted paths, copies, rollback, locking, typed state."""

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field

from riverbed import (
    Context,
    DictState,
    Event,
    NestedEditStateError,
    StartEvent,
    StatePathError,
    StateValidationError,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowError,
    catch_error,
    step,
)
from riverbed.state import StateStore
from seed_state import MyRandomObject, MyState

# -- models ------------------------------------------------------------------------------


class Holder:
    """A plain object reached through an attribute segment."""

    def __init__(self, name: str = "holder") -> None:
        self.name = name
        self.tags = ["x", "y"]


class Inner(BaseModel):
    count: int = 0
    scores: dict[str, int] = Field(default_factory=dict)


class Typed(BaseModel):
    count: int = 0
    name: str = "start"
    items: list[int] = Field(default_factory=list)
    inner: Inner = Field(default_factory=Inner)
    inners: list[Inner] = Field(default_factory=list)


class Parent(BaseModel):
    base: int = 0


class Child(Parent):
    extra: str = "child"


class Unrelated(BaseModel):
    other: int = 0


def dict_store() -> StateStore[DictState]:
    return StateStore(DictState)


def typed_store() -> StateStore[Typed]:
    return StateStore(Typed)


# -- get ---------------------------------------------------------------------------------


async def test_get_walks_dict_keys_list_indices_and_attributes() -> None:
    store = dict_store()
    await store.set("user", {"name": "ana", "langs": ["py", "rs"], "obj": Holder("h1")})
    assert await store.get("user.name") == "ana"
    assert await store.get("user.langs.1") == "rs"
    assert await store.get("user.langs.-1") == "rs"
    assert await store.get("user.obj.name") == "h1"
    assert await store.get("user.obj.tags.0") == "x"


async def test_get_on_typed_state_walks_fields() -> None:
    store = typed_store()
    await store.set("items", [4, 5, 6])
    await store.set("inner.scores", {"a": 1})
    assert await store.get("count") == 0
    assert await store.get("items.2") == 6
    assert await store.get("inner.scores.a") == 1


async def test_get_missing_path_returns_default() -> None:
    store = dict_store()
    await store.set("a", {"b": [1]})
    assert await store.get("nope", default=None) is None
    assert await store.get("a.c", default=7) == 7
    assert await store.get("a.b.5", default="far") == "far"
    assert await store.get("a.b.x", default="nan") == "nan"
    assert await store.get("a.b.0.deeper", default=0) == 0
    # a falsy default is still a default, not "no default"
    assert await store.get("nope", default=0) == 0


async def test_get_missing_path_without_default_names_path_and_suggests_default() -> None:
    store = dict_store()
    await store.set("a", {"b": 1})
    with pytest.raises(StatePathError) as info:
        await store.get("a.c")
    message = str(info.value)
    assert "'a.c'" in message
    assert "default=" in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, WorkflowError)


async def test_get_missing_attribute_on_typed_state_raises_path_error() -> None:
    with pytest.raises(StatePathError, match="nope"):
        await typed_store().get("nope")


@pytest.mark.parametrize("path", ["", None, 3])
async def test_empty_or_non_string_path_is_a_path_error(path: Any) -> None:
    store = dict_store()
    with pytest.raises(StatePathError):
        await store.get(path)
    with pytest.raises(StatePathError):
        await store.set(path, 1)


async def test_overlong_path_is_rejected() -> None:
    with pytest.raises(StatePathError, match="1000"):
        await dict_store().get(".".join(["a"] * 1001), default=None)


# -- set ---------------------------------------------------------------------------------


async def test_set_creates_intermediate_dicts() -> None:
    store = dict_store()
    await store.set("a.b.c", 3)
    assert (await store.get_state()).data == {"a": {"b": {"c": 3}}}
    await store.set("a.b.d", 4)
    await store.set("a.e", 5)
    assert (await store.get_state()).data == {"a": {"b": {"c": 3, "d": 4}, "e": 5}}


async def test_set_through_list_index_and_attribute() -> None:
    store = dict_store()
    await store.set("rows", [{"v": 1}, {"v": 2}])
    await store.set("rows.1.v", 20)
    await store.set("obj", Holder())
    await store.set("obj.name", "renamed")
    assert await store.get("rows") == [{"v": 1}, {"v": 20}]
    assert await store.get("obj.name") == "renamed"


@pytest.mark.parametrize(
    ("path", "match"),
    [("rows.5", "list of 2"), ("rows.x", "list of 2"), ("count.b", "int")],
)
async def test_set_through_a_bad_path_is_a_path_error_and_changes_nothing(
    path: str, match: str
) -> None:
    store = dict_store()
    await store.set("rows", [1, 2])
    await store.set("count", 1)
    with pytest.raises(StatePathError, match=match):
        await store.set(path, 9)
    assert (await store.get_state()).data == {"rows": [1, 2], "count": 1}


async def test_failed_set_leaves_nested_dict_state_unchanged() -> None:
    store = dict_store()
    await store.set("a", {"list": [1, 2], "n": 1})
    with pytest.raises(StatePathError):
        await store.set("a.list.9", 0)
    assert await store.get("a") == {"list": [1, 2], "n": 1}


async def test_set_does_not_keep_a_reference_the_caller_can_mutate_through_get_state() -> None:
    store = dict_store()
    await store.set("rows", [1])
    snapshot = await store.get_state()
    snapshot["rows"].append(2)
    assert await store.get("rows") == [1]


# -- get_state ---------------------------------------------------------------------------


async def test_get_state_is_a_deep_copy_for_dict_state() -> None:
    store = dict_store()
    await store.set("a", {"b": [1, 2], "c": {"d": 1}})
    copy = await store.get_state()
    copy["a"]["b"].append(3)
    copy["a"]["c"]["d"] = 99
    copy["new"] = True
    assert await store.get("a") == {"b": [1, 2], "c": {"d": 1}}
    assert await store.get("new", default=None) is None


async def test_get_state_is_a_deep_copy_for_typed_state() -> None:
    store = typed_store()
    await store.set("items", [1])
    await store.set("inner.scores", {"a": 1})
    copy = await store.get_state()
    copy.items.append(2)
    copy.inner.scores["b"] = 2
    copy.inner.count = 5
    copy.count = 9
    state = await store.get_state()
    assert state.items == [1]
    assert state.inner.scores == {"a": 1}
    assert state.inner.count == 0
    assert state.count == 0


# -- set_state / clear -------------------------------------------------------------------


async def test_set_state_replaces_and_keeps_a_copy() -> None:
    store = typed_store()
    new = Typed(count=3, items=[1])
    await store.set_state(new)
    new.items.append(2)
    new.count = 100
    state = await store.get_state()
    assert state.count == 3
    assert state.items == [1]


async def test_set_state_accepts_a_dict() -> None:
    store = typed_store()
    await store.set_state({"count": "4", "name": "x"})
    state = await store.get_state()
    assert (state.count, state.name) == (4, "x")
    dstore = dict_store()
    await dstore.set_state({"k": 1})
    assert await dstore.get("k") == 1


async def test_set_state_with_a_parent_instance_merges_parent_fields() -> None:
    store: StateStore[Child] = StateStore(Child)
    await store.set("extra", "kept")
    await store.set_state(Parent(base=7))
    state = await store.get_state()
    assert type(state) is Child
    assert (state.base, state.extra) == (7, "kept")


async def test_set_state_with_a_wrong_type_raises_and_changes_nothing() -> None:
    store: StateStore[Child] = StateStore(Child)
    await store.set("base", 1)
    with pytest.raises(StateValidationError, match="Child"):
        await store.set_state(Unrelated(other=1))
    with pytest.raises(StateValidationError):
        await store.set_state({"base": "not an int"})
    assert (await store.get_state()).base == 1


async def test_set_state_rejects_an_invalid_instance_of_the_type() -> None:
    store = typed_store()
    bad = Typed.model_construct(count="zzz")
    with pytest.raises(StateValidationError):
        await store.set_state(bad)
    assert (await store.get_state()).count == 0


async def test_clear_resets_to_defaults() -> None:
    store = typed_store()
    await store.set("count", 5)
    await store.set("items", [1])
    await store.clear()
    assert await store.get_state() == Typed()
    dstore = dict_store()
    await dstore.set("a", 1)
    await dstore.clear()
    assert (await dstore.get_state()).data == {}


# -- edit_state --------------------------------------------------------------------------


async def test_edit_state_applies_at_exit_only() -> None:
    store = dict_store()
    await store.set("n", 1)
    async with store.edit_state() as state:
        state["n"] = 2
        state["list"] = [1]
        # Readers keep seeing the last committed state until the block exits.
        assert await store.get("n") == 1
        assert await store.get("list", default=None) is None
    assert await store.get("n") == 2
    assert await store.get("list") == [1]


async def test_edit_state_rolls_back_everything_when_the_block_raises() -> None:
    store = dict_store()
    await store.set("a", {"list": [1, 2], "inner": {"k": "v"}})
    await store.set("n", 1)

    async def failing_edit() -> None:
        async with store.edit_state() as state:
            state["n"] = 2
            state["a"]["list"].append(3)
            state["a"]["inner"]["k"] = "changed"
            state["new"] = "x"
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await failing_edit()
    assert (await store.get_state()).data == {"a": {"list": [1, 2], "inner": {"k": "v"}}, "n": 1}


async def test_edit_state_rollback_on_typed_state_with_nested_model() -> None:
    store = typed_store()

    async def failing_edit() -> None:
        async with store.edit_state() as state:
            state.inner.count = 3
            state.inner.scores["a"] = 1
            state.items.append(1)
            raise KeyError("x")

    with pytest.raises(KeyError):
        await failing_edit()
    assert await store.get_state() == Typed()


async def test_edit_state_releases_the_lock_after_an_error() -> None:
    store = dict_store()
    with pytest.raises(ValueError, match="first"):
        async with store.edit_state():
            raise ValueError("first")
    await asyncio.wait_for(store.set("after", 1), timeout=1)
    assert await store.get("after") == 1


async def test_nested_edit_state_raises_instead_of_deadlocking() -> None:
    store = dict_store()

    async def nested() -> None:
        async with store.edit_state() as state:
            state["outer"] = 1
            async with store.edit_state():
                pass  # pragma: no cover - never entered

    with pytest.raises(NestedEditStateError, match="edit_state"):
        await asyncio.wait_for(nested(), timeout=1)
    # the outer block raised, so its edit was rolled back and the lock released
    assert await store.get("outer", default=None) is None
    await asyncio.wait_for(store.set("free", True), timeout=1)


@pytest.mark.parametrize("call", ["set", "set_state", "clear"])
async def test_writes_inside_edit_state_of_the_same_task_raise(call: str) -> None:
    store = dict_store()

    async def nested() -> None:
        async with store.edit_state():
            if call == "set":
                await store.set("x", 1)
            elif call == "set_state":
                await store.set_state({"x": 1})
            else:
                await store.clear()

    with pytest.raises(NestedEditStateError, match=call):
        await asyncio.wait_for(nested(), timeout=1)


async def test_reads_inside_edit_state_do_not_block() -> None:
    store = dict_store()
    await store.set("n", 1)

    async def read_inside() -> tuple[Any, Any]:
        async with store.edit_state() as state:
            state["n"] = 2
            return await store.get("n"), (await store.get_state())["n"]

    assert await asyncio.wait_for(read_inside(), timeout=1) == (1, 1)


async def test_another_task_waits_for_edit_state_to_finish() -> None:
    store = dict_store()
    order: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def editor() -> None:
        async with store.edit_state() as state:
            entered.set()
            await release.wait()
            state["who"] = "editor"
            order.append("editor")

    async def writer() -> None:
        await entered.wait()
        await store.set("who", "writer")
        order.append("writer")

    tasks = [asyncio.create_task(editor()), asyncio.create_task(writer())]
    await entered.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == []  # the writer is blocked by the edit
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["editor", "writer"]
    assert await store.get("who") == "writer"


# -- typed state validation --------------------------------------------------------------


async def test_typed_set_coerces_like_pydantic() -> None:
    store = typed_store()
    await store.set("count", "5")
    assert await store.get("count") == 5


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("count", "not-an-int"),
        ("items", ["a"]),
        ("items.0", "a"),
        ("inner", {"count": "bad"}),
        ("inner.count", "bad"),
        ("inner.scores", {"a": "b"}),
        ("inner.scores.a", "b"),
        ("inners", [{"count": "bad"}]),
    ],
)
async def test_typed_set_with_a_wrong_type_raises_and_leaves_state_unchanged(
    path: str, value: Any
) -> None:
    store = typed_store()
    await store.set("items", [1])
    await store.set("inners", [Inner()])
    before = await store.get_state()
    with pytest.raises(StateValidationError) as info:
        await store.set(path, value)
    assert isinstance(info.value, ValueError)
    assert await store.get_state() == before


async def test_typed_set_inside_list_of_models_is_validated() -> None:
    store = typed_store()
    await store.set("inners", [{"count": 1}])
    await store.set("inners.0.count", "2")
    assert (await store.get_state()).inners[0].count == 2
    with pytest.raises(StateValidationError):
        await store.set("inners.0.scores.x", "y")
    assert (await store.get_state()).inners[0] == Inner(count=2)


async def test_typed_set_of_an_unknown_field_is_a_path_error() -> None:
    store = typed_store()
    with pytest.raises(StatePathError, match="nope"):
        await store.set("nope", 1)
    with pytest.raises(StatePathError, match="nope"):
        await store.set("nope.deeper", 1)
    with pytest.raises(StatePathError, match="nope"):
        await store.set("inner.nope", 1)
    assert await store.get_state() == Typed()


async def test_typed_set_of_an_invalid_model_instance_is_rejected() -> None:
    store = typed_store()
    with pytest.raises(StateValidationError):
        await store.set("inner", Inner.model_construct(count="bad"))
    assert (await store.get_state()).inner == Inner()


async def test_edit_state_exit_validates_typed_state() -> None:
    store = typed_store()

    async def invalid_edit() -> None:
        async with store.edit_state() as state:
            state.count = 1  # valid, but rolled back with the rest
            state.items.append("x")  # type: ignore[arg-type]

    with pytest.raises(StateValidationError, match="not applied"):
        await invalid_edit()
    assert await store.get_state() == Typed()


async def test_edit_state_exit_validates_nested_models() -> None:
    store = typed_store()
    with pytest.raises(StateValidationError):
        async with store.edit_state() as state:
            state.inner.count = "bad"  # type: ignore[assignment]
    with pytest.raises(StateValidationError):
        async with store.edit_state() as state:
            state.inner.scores["k"] = "bad"  # type: ignore[assignment]
    with pytest.raises(StateValidationError):
        async with store.edit_state() as state:
            state.inners.append(Inner.model_construct(count="bad"))
    assert await store.get_state() == Typed()


async def test_edit_state_exit_coerces_valid_values() -> None:
    store = typed_store()
    async with store.edit_state() as state:
        state.inner.scores["k"] = "3"  # type: ignore[assignment]
    assert (await store.get_state()).inner.scores == {"k": 3}


# -- through a workflow ------------------------------------------------------------------


class CounterFlow(Workflow):
    """200 concurrent tasks, 50 increments each."""

    locked: bool = True

    @step
    async def count(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.store.set("n", 0)

        async def locked_worker() -> None:
            for _ in range(50):
                async with ctx.store.edit_state() as state:
                    value = state["n"]
                    await asyncio.sleep(0)
                    state["n"] = value + 1

        async def unlocked_worker() -> None:
            for _ in range(50):
                value = await ctx.store.get("n")
                await asyncio.sleep(0)
                await ctx.store.set("n", value + 1)

        worker = locked_worker if ev.locked else unlocked_worker
        await asyncio.gather(*(worker() for _ in range(200)))
        return StopEvent(result=await ctx.store.get("n"))


async def test_no_lost_updates_with_edit_state() -> None:
    assert await CounterFlow().run(locked=True) == 10_000


async def test_control_without_the_lock_loses_updates() -> None:
    # Proves the test above can fail: the same work without edit_state loses increments.
    assert await CounterFlow().run(locked=False) < 10_000


class Tick(Event):
    pass


class FanOutFlow(Workflow):
    """200 events to a step with 200 workers, each doing 50 locked increments."""

    @step
    async def fan_out(self, ctx: Context, ev: StartEvent) -> Tick | None:
        await ctx.store.set("n", 0)
        for _ in range(200):
            ctx.send_event(Tick())
        return None

    @step(num_workers=200)
    async def work(self, ctx: Context, ev: Tick) -> StopEvent | None:
        for _ in range(50):
            async with ctx.store.edit_state() as state:
                value = state["n"]
                await asyncio.sleep(0)
                state["n"] = value + 1
        async with ctx.store.edit_state() as state:
            state["done"] = state.get("done", 0) + 1
            finished = state["done"] == 200
        return StopEvent(result=await ctx.store.get("n")) if finished else None


async def test_no_lost_updates_across_200_workers_of_one_step() -> None:
    assert await FanOutFlow().run() == 10_000


class NestedEditFlow(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state["a"] = 1
            if ev.get("use_set"):
                await ctx.store.set("b", 2)
            else:
                async with ctx.store.edit_state():
                    pass  # pragma: no cover - never entered
        return StopEvent(result="unreachable")  # pragma: no cover


@pytest.mark.parametrize("use_set", [False, True])
async def test_nested_edit_in_a_step_fails_the_run_quickly(use_set: bool) -> None:
    workflow = NestedEditFlow()
    ctx = Context(workflow)
    handler = workflow.run(ctx=ctx, use_set=use_set)
    with pytest.raises(NestedEditStateError):
        await asyncio.wait_for(handler, timeout=2)
    assert await ctx.store.get("a", default=None) is None  # the outer edit rolled back


class Seeded(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state["runs"] = state.get("runs", 0) + 1
        return StopEvent(result=await ctx.store.get("seed.value"))


async def test_state_seeded_before_the_run_and_kept_across_runs() -> None:
    workflow = Seeded()
    ctx = Context(workflow)
    await ctx.store.set("seed.value", "planted")
    assert await workflow.run(ctx=ctx) == "planted"
    assert await workflow.run(ctx=ctx) == "planted"
    assert await ctx.store.get("runs") == 2


class TypedFlow(Workflow):
    @step
    async def start(self, ctx: Context[Typed], ev: StartEvent) -> StopEvent:
        await ctx.store.set("count", ev.get("count", 1))
        async with ctx.store.edit_state() as state:
            state.items.append(state.count)
        return StopEvent(result=await ctx.store.get_state())


async def test_typed_state_in_a_workflow() -> None:
    workflow = TypedFlow()
    ctx = Context(workflow)
    assert isinstance(await ctx.store.get_state(), Typed)
    result = await workflow.run(ctx=ctx, count="3")
    assert result == Typed(count=3, items=[3])


async def test_typed_state_wrong_type_in_a_workflow_fails_the_run() -> None:
    workflow = TypedFlow()
    ctx = Context(workflow)
    with pytest.raises(StateValidationError, match="count"):
        await workflow.run(ctx=ctx, count="many")
    assert await ctx.store.get_state() == Typed()


# -- the seed page's typed state ---------------------------------------------------------


class MyStatefulFlow(Workflow):
    @step
    async def start(self, ctx: Context[MyState], ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state.my_obj.name = "new_name"
        name = await ctx.store.get("my_obj.name")
        return StopEvent(result=name)


async def test_seed_typed_state_edit_then_dotted_get() -> None:
    workflow = MyStatefulFlow(timeout=10, verbose=False)
    ctx = Context(workflow)
    assert await workflow.run(ctx=ctx) == "new_name"
    state = await ctx.store.get_state()
    assert isinstance(state, MyState)
    assert state.my_obj.name == "new_name"
    assert state.model_dump() == {"my_obj": "new_name", "some_key": "some_value"}
    assert "some_key='some_value'" in str(state)
    # the custom validator turns the dumped form back into the object
    again = MyState.model_validate(state.model_dump())
    assert again.my_obj.name == "new_name"


async def test_seed_typed_state_set_state_and_set_through_the_validator() -> None:
    store: StateStore[MyState] = StateStore(MyState)
    await store.set("my_obj", "from_string")
    obj = await store.get("my_obj")
    assert isinstance(obj, MyRandomObject)
    assert obj.name == "from_string"
    with pytest.raises(StateValidationError, match="my_obj"):
        await store.set("my_obj", 42)
    assert (await store.get("my_obj.name")) == "from_string"
    await store.set_state({"my_obj": "via_dict", "some_key": "k"})
    assert await store.get("my_obj.name") == "via_dict"


class TimesOutInsideEdit(Workflow):
    @step(timeout=0.02)
    async def slow(self, ctx: Context, ev: StartEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:
            state["half_done"] = True
            await asyncio.sleep(10)
        return StopEvent(result="unreachable")  # pragma: no cover

    @catch_error
    async def recover(self, ctx: Context, ev: StepFailedEvent) -> StopEvent:
        async with ctx.store.edit_state() as state:  # the lock must be free again
            state["recovered"] = type(ev.exception).__name__
        return StopEvent(result=await ctx.store.get_state())


async def test_a_step_cancelled_inside_edit_state_rolls_back_and_frees_the_lock() -> None:
    state = await asyncio.wait_for(TimesOutInsideEdit().run(), timeout=2)
    assert state.data == {"recovered": "StepTimeoutError"}
