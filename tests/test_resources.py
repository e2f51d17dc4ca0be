"""Unit tests of riverbed.resource: descriptors, the manager, discovery and validation."""

import asyncio
import functools
import json
import types
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel

import riverbed.resource as resource_mod
from riverbed.errors import WorkflowValidationError
from riverbed.resource import (
    Resource,
    ResourceConfig,
    ResourceManager,
    ResourceParam,
    find_resource_params,
    validate_resources,
)


class Memory:
    def __init__(self) -> None:
        self.items: list[str] = []


class LLM:
    def __init__(self, model: str = "small") -> None:
        self.model = model


class Client:
    def __init__(self, llm: LLM) -> None:
        self.llm = llm


class Settings(BaseModel):
    name: str
    retries: int = 3


def get_memory(*args: Any, **kwargs: Any) -> Memory:
    return Memory()


async def get_llm(model: str = "default-model") -> LLM:
    await asyncio.sleep(0)
    return LLM(model)


def get_client(llm: Annotated[LLM, Resource(get_llm)]) -> Client:
    return Client(llm)


# String annotations let the two factories refer to each other.
def cyc_a(b: "Annotated[object, Resource(cyc_b)]") -> object:
    raise AssertionError("a factory in a cycle must never run")


def cyc_b(a: "Annotated[object, Resource(cyc_a)]") -> object:
    raise AssertionError("a factory in a cycle must never run")


def cyc_self(me: "Annotated[object, Resource(cyc_self)]") -> object:
    raise AssertionError("a factory in a cycle must never run")


class Counter:
    """A factory that counts its calls and returns a new object each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return object()


def write_json(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


# --- factories, caching and scopes --------------------------------------------------------


async def test_sync_and_async_factories_are_injected() -> None:
    async def step(
        self: object,
        ev: object,
        memory: Annotated[Memory, Resource(get_memory)],
        llm: Annotated[LLM, Resource(get_llm)],
    ) -> None: ...

    values = await ResourceManager().resolve_params(find_resource_params(step))
    assert set(values) == {"memory", "llm"}
    assert isinstance(values["memory"], Memory)
    assert isinstance(values["llm"], LLM)
    assert values["llm"].model == "default-model"  # non-resource parameters keep defaults


async def test_cached_resource_is_shared_across_steps_and_calls() -> None:
    counter = Counter()

    def step_one(ev: object, thing: Annotated[object, Resource(counter)]) -> None: ...
    def step_two(ev: object, thing: Annotated[object, Resource(counter)]) -> None: ...

    manager = ResourceManager()
    first = await manager.resolve_params(find_resource_params(step_one))
    second = await manager.resolve_params(find_resource_params(step_two))
    third = await manager.resolve_params(find_resource_params(step_one))
    assert first["thing"] is second["thing"] is third["thing"]
    assert counter.calls == 1
    # A different manager (another workflow instance) gets its own instance.
    other = await ResourceManager().resolve_params(find_resource_params(step_one))
    assert other["thing"] is not first["thing"]
    assert counter.calls == 2


async def test_cache_is_keyed_by_factory_object_not_name() -> None:
    def make_factory(tag: str) -> Any:
        def factory() -> str:
            return tag

        return factory

    one, two = make_factory("one"), make_factory("two")
    assert one.__qualname__ == two.__qualname__
    manager = ResourceManager()
    assert await manager.resolve(Resource(one)) == "one"
    assert await manager.resolve(Resource(two)) == "two"


async def test_uncached_is_fresh_per_resolution_but_single_within_one() -> None:
    counter = Counter()

    def holder(dep: Annotated[object, Resource(counter, cache=False)]) -> tuple[str, object]:
        return ("holder", dep)

    def step(
        ev: object,
        direct: Annotated[object, Resource(counter, cache=False)],
        again: Annotated[object, Resource(counter, cache=False)],
        nested: Annotated[tuple[str, object], Resource(holder, cache=False)],
    ) -> None: ...

    params = find_resource_params(step)
    manager = ResourceManager()
    first = await manager.resolve_params(params)
    assert first["direct"] is first["again"] is first["nested"][1]
    assert counter.calls == 1
    second = await manager.resolve_params(params)
    assert second["direct"] is not first["direct"]
    assert second["nested"] is not first["nested"]
    assert counter.calls == 2


async def test_nested_dependencies_resolve_and_share_the_cache() -> None:
    def step(
        ev: object,
        client: Annotated[Client, Resource(get_client)],
        llm: Annotated[LLM, Resource(get_llm)],
    ) -> None: ...

    values = await ResourceManager().resolve_params(find_resource_params(step))
    assert isinstance(values["client"], Client)
    assert values["client"].llm is values["llm"]


async def test_concurrent_resolutions_create_a_cached_resource_once() -> None:
    calls = 0

    async def slow() -> object:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return object()

    manager = ResourceManager()
    res = Resource(slow)
    results = await asyncio.gather(*(manager.resolve(res) for _ in range(5)))
    assert calls == 1
    assert all(r is results[0] for r in results)
    assert manager._flights == {}  # no lock is kept once creation is over


async def test_all_cached_fast_path_does_no_introspection(monkeypatch: pytest.MonkeyPatch) -> None:
    def step(
        ev: object,
        memory: Annotated[Memory, Resource(get_memory)],
        client: Annotated[Client, Resource(get_client)],
    ) -> None: ...

    params = find_resource_params(step)
    manager = ResourceManager()
    warm = await manager.resolve_params(params)
    monkeypatch.setattr(resource_mod, "inspect", None)
    monkeypatch.setattr(resource_mod, "get_type_hints", None)
    monkeypatch.setattr(resource_mod, "_check_acyclic", None)
    assert await manager.resolve_params(params) == warm


async def test_factory_exception_propagates_unchanged_and_is_not_cached() -> None:
    attempts = 0
    error = ConnectionError("llm down")

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise error
        return "up"

    manager = ResourceManager()
    res = Resource(flaky)
    with pytest.raises(ConnectionError) as caught:
        await manager.resolve(res)
    assert caught.value is error
    assert await manager.resolve(res) == "up"  # the failure was not cached; next try runs
    assert attempts == 2


# --- declaration errors -------------------------------------------------------------------


async def test_cycle_is_detected_before_any_factory_runs() -> None:
    with pytest.raises(
        WorkflowValidationError,
        match=r"^Circular resource dependency detected: cyc_a -> cyc_b -> cyc_a\.",
    ):
        await ResourceManager().resolve(Resource(cyc_a))
    with pytest.raises(WorkflowValidationError, match=r"cyc_self -> cyc_self\."):
        await ResourceManager().resolve(Resource(cyc_self, cache=False))


async def test_factory_with_unfillable_parameter_is_rejected() -> None:
    def needs_url(url: str) -> object:
        return object()

    with pytest.raises(WorkflowValidationError, match=r"needs_url has a required parameter 'url'"):
        await ResourceManager().resolve(Resource(needs_url))


def test_non_callable_factory_is_rejected() -> None:
    with pytest.raises(
        WorkflowValidationError, match=r"Resource\(get_llm\), not Resource\(get_llm\(\)\)"
    ):
        Resource(LLM())  # type: ignore[call-overload]


def test_bad_path_selector_is_rejected() -> None:
    with pytest.raises(WorkflowValidationError, match="empty segment"):
        ResourceConfig("cfg.json", path_selector="a..b")


# --- ResourceConfig -----------------------------------------------------------------------


async def test_resource_config_loads_whole_file(tmp_path: Path) -> None:
    file = write_json(tmp_path / "cfg.json", {"name": "prod", "retries": 5})

    def step(ev: object, cfg: Annotated[Settings, ResourceConfig(file)]) -> None: ...

    values = await ResourceManager().resolve_params(find_resource_params(step))
    assert values["cfg"] == Settings(name="prod", retries=5)


async def test_resource_config_path_selector_and_caching(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    file = write_json(path, {"services": {"llm": [{"name": "first"}, {"name": "second"}]}})
    desc = ResourceConfig(file, path_selector="services.llm.1", label="llm settings")
    manager = ResourceManager()
    loaded = await manager.resolve(desc, Settings)
    assert loaded == Settings(name="second")
    write_json(path, {"services": {"llm": [{"name": "x"}, {"name": "changed"}]}})
    assert await manager.resolve(desc, Settings) is loaded  # cached per manager
    assert manager.get_all() == {"llm settings": loaded}
    assert (await ResourceManager().resolve(desc, Settings)).name == "changed"


@pytest.mark.parametrize(
    ("content", "selector", "message"),
    [
        (None, None, r"cfg\.json' was not found \(looked at .*cfg\.json\)"),
        ("{not json", None, r"cfg\.json' is not valid JSON: .* line 1, column 2"),
        (
            '{"a": {"b": 1}}',
            "a.c",
            r"at path_selector 'a\.c': no key 'c' \(keys: \['b'\]\)\.$",
        ),
        ('{"a": [1]}', "a.5", r"cannot select '5' from a JSON list\.$"),
        ('{"a": 1}', "a.b", r"cannot select 'b' from a JSON int\.$"),
        (
            '{"name": 7}',
            None,
            r"cfg\.json' does not match Settings: name: Input should be a valid string\.$",
        ),
    ],
    ids=["missing-file", "bad-json", "missing-key", "bad-index", "scalar", "invalid-model"],
)
async def test_resource_config_errors_name_file_and_problem(
    tmp_path: Path, content: str | None, selector: str | None, message: str
) -> None:
    path = tmp_path / "cfg.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(WorkflowValidationError, match=message):
        await ResourceManager().resolve(ResourceConfig(str(path), path_selector=selector), Settings)


def test_resource_config_on_non_model_type_is_rejected() -> None:
    def step(ev: object, cfg: Annotated[dict[str, Any], ResourceConfig("cfg.json")]) -> None: ...

    with pytest.raises(WorkflowValidationError, match="is not a pydantic model"):
        find_resource_params(step)


async def test_resolving_config_without_model_type_is_rejected() -> None:
    with pytest.raises(WorkflowValidationError, match="None, which is not a pydantic model"):
        await ResourceManager().resolve(ResourceConfig("cfg.json"))


# --- find_resource_params -----------------------------------------------------------------

FUTURE_MODULE = """
from __future__ import annotations
from typing import Annotated
from pydantic import BaseModel
from riverbed.resource import Resource, ResourceConfig

async def step(
    self,
    ev: StartEvent,
    thing: Annotated[Thing, Resource(make_thing)],
    cfg: Annotated[Cfg, ResourceConfig("cfg.json", path_selector="a")],
    other: Annotated[int, "not a resource"] = 0,
    plain: int = 0,
) -> None: ...

def make_thing() -> Thing:
    return Thing()

class Thing: ...
class StartEvent: ...
class Cfg(BaseModel):
    x: int
"""


def test_find_resource_params_with_future_annotations() -> None:
    module = types.ModuleType("future_annotations_steps")
    exec(compile(FUTURE_MODULE, "future_annotations_steps", "exec"), module.__dict__)
    params = find_resource_params(module.step)
    assert list(params) == ["thing", "cfg"]
    thing_desc, thing_type = params["thing"]
    assert isinstance(thing_desc, Resource)
    assert thing_desc.factory is module.make_thing
    assert thing_type is module.Thing
    cfg_desc, cfg_type = params["cfg"]
    assert isinstance(cfg_desc, ResourceConfig)
    assert cfg_desc.path_selector == "a"
    assert cfg_type is module.Cfg


def test_find_resource_params_uses_localns_for_local_names() -> None:
    class Local: ...

    def step(ev: object, x: "Annotated[Local, Resource(Local)]") -> None: ...

    with pytest.raises(
        WorkflowValidationError, match=r"Failed to resolve type annotations for .*step"
    ):
        find_resource_params(step)
    params = find_resource_params(step, localns={"Local": Local})
    assert params["x"][1] is Local


def test_unresolvable_return_annotation_is_ignored() -> None:
    def factory(llm: Annotated[LLM, Resource(get_llm)]) -> object:
        return object()

    factory.__annotations__["return"] = "ImportedOnlyUnderTypeChecking"

    assert list(find_resource_params(factory)) == ["llm"]


def test_find_resource_params_rejects_two_descriptors() -> None:
    def step(ev: object, x: Annotated[LLM, Resource(get_llm), Resource(get_llm)]) -> None: ...

    with pytest.raises(WorkflowValidationError, match="has 2 resource annotations"):
        find_resource_params(step)


async def test_class_and_partial_factories() -> None:
    class Service:
        def __init__(self, llm: Annotated[LLM, Resource(get_llm)], retries: int = 2) -> None:
            self.llm = llm

    def build(name: str, llm: Annotated[LLM, Resource(get_llm)]) -> tuple[str, LLM]:
        return (name, llm)

    manager = ResourceManager()
    service = await manager.resolve(Resource(Service))
    llm = await manager.resolve(Resource(get_llm))
    assert service.llm is llm
    built = await manager.resolve(Resource(functools.partial(build, "x")))
    assert built == ("x", llm)


# --- set / get_all / validate_resources ---------------------------------------------------


async def test_set_overrides_cached_resources_by_name() -> None:
    manager = ResourceManager()
    fake = LLM("fake")
    await manager.set("get_llm", fake)
    assert await manager.get(Resource(get_llm)) is fake
    assert (await manager.resolve(Resource(get_client))).llm is fake
    assert await manager.resolve(Resource(get_llm, cache=False)) is not fake
    memory = await manager.resolve(Resource(get_memory))
    replacement = Memory()
    await manager.set("get_memory", replacement)  # also replaces an already created value
    assert await manager.resolve(Resource(get_memory)) is replacement is not memory
    everything = manager.get_all()
    assert set(everything) == {"get_llm", "get_client", "get_memory"}
    assert everything["get_llm"] is fake
    assert everything["get_client"].llm is fake
    assert everything["get_memory"] is replacement


def test_validate_resources_reports_every_problem(tmp_path: Path) -> None:
    good = write_json(tmp_path / "good.json", {"name": "ok"})

    def needs_cfg(cfg: Annotated[Settings, ResourceConfig(str(tmp_path / "gone.json"))]) -> object:
        return object()

    steps: dict[str, dict[str, ResourceParam]] = {
        "fine": {
            "cfg": (ResourceConfig(good), Settings),
            "client": (Resource(get_client), Client),
        },
        "broken": {
            "loop": (Resource(cyc_a), object),
            "nested": (Resource(needs_cfg), object),
        },
    }
    manager = ResourceManager()
    problems = validate_resources(steps, manager=manager)
    assert len(problems) == 2
    assert problems[0].startswith("step 'broken', parameter 'loop': Circular resource dependency")
    assert problems[1].startswith("step 'broken', parameter 'nested': Resource config file")
    assert "gone.json' was not found" in problems[1]
    assert manager.get_all() == {good: Settings(name="ok")}  # loaded once, kept for the run
    assert validate_resources(steps, load_configs=False) == [problems[0]]
    assert validate_resources({"fine": steps["fine"]}) == []
