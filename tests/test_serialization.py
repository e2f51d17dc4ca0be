"""Events and state to JSON and back (riverbed.serialization), safely.

Round trips keep types and extra fields; stored type names are only ever looked up among
classes the workflow (or this process) already has, never imported; pickle is used only
by PickleSerializer, which the caller has to choose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from riverbed import (
    Context,
    ContextSerdeError,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowFailedEvent,
    step,
)
from riverbed._tagged_json import to_plain
from riverbed.handler import WorkflowHandler
from riverbed.inspection import read_run
from riverbed.serialization import (
    EventCodec,
    JsonSerializer,
    PickleSerializer,
    RecordedError,
    TypeRegistry,
    type_key,
)
from riverbed.state import DictState
from seed_state import MyRandomObject, MyState

pytestmark = pytest.mark.usefixtures("hang_guard")


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    name: str
    weights: list[float] = Field(default_factory=list)


class Rich(Event):
    text: str
    count: int = 0
    color: Color = Color.RED
    when: dt.datetime = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    inner: Inner = Field(default_factory=lambda: Inner(name="i"))
    tags: dict[str, list[int]] = Field(default_factory=dict)
    maybe: int | None = None


class Query(StartEvent):
    question: str


class Report(StopEvent):
    title: str


def codec(*types: type[BaseModel]) -> EventCodec:
    return EventCodec(TypeRegistry(types))


# -- EventCodec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        Event(),
        Event(free="form", nested={"a": [1, 2, {"b": None}]}),
        StartEvent(topic="rivers", depth=3),
        Query(question="why?", user="ana"),
        Rich(text="t"),
        Rich(
            text="t",
            count=3,
            color=Color.BLUE,
            inner=Inner(name="n", weights=[0.5]),
            tags={"a": [1]},
            maybe=7,
            extra_field="kept",
            extra_list=[1, "two"],
        ),
        StopEvent(result={"answer": 42, "sources": ["a", "b"]}),
        StopEvent(result=None),
        Report(title="r", result=[1, 2], note="extra"),
        InputRequiredEvent(prefix="name?", user="ana"),
        HumanResponseEvent(response="Ana"),
    ],
    ids=lambda ev: type(ev).__name__,
)
def test_event_codec_round_trips_type_fields_and_extras(event: Event) -> None:
    c = codec(Query, Rich, Report)
    key, payload = c.dump(event)
    assert key == type_key(type(event))
    json.loads(payload)  # plain JSON text
    back = c.load(key, payload)
    assert type(back) is type(event)
    assert back == event
    assert back.model_dump() == event.model_dump()
    assert dict(back.items()) == dict(event.items())  # the extra fields


def test_a_rich_event_keeps_its_python_types() -> None:
    c = codec(Rich)
    back = c.load(*c.dump(Rich(text="t", color=Color.BLUE, inner=Inner(name="n"))))
    assert isinstance(back, Rich)
    assert back.color is Color.BLUE
    assert isinstance(back.inner, Inner)
    assert back.when == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_a_subclass_sent_at_run_time_is_registered_when_dumped() -> None:
    class RicherAnswer(HumanResponseEvent):
        confidence: float

    c = codec()
    key, payload = c.dump(RicherAnswer(response="x", confidence=0.5))
    assert key in c.registry
    back = c.load(key, payload)
    assert isinstance(back, RicherAnswer)
    assert back.confidence == 0.5


def test_a_field_that_is_not_json_is_refused_naming_it() -> None:
    class HoldsClient(Event):
        client: Any = None

    with pytest.raises(ContextSerdeError, match=r"HoldsClient cannot be stored.*builtins.object"):
        codec().dump(HoldsClient(client=object()))
    with pytest.raises(ContextSerdeError, match=r"cannot be stored.*not JSON"):
        codec().dump(Event(extra=sqlite3.connect(":memory:")))


def test_step_failed_event_round_trips_its_exception_as_recorded_error() -> None:
    class Flaky(Exception):
        pass

    original = StepFailedEvent(
        step_name="work",
        input_event=Query(question="q", user="ana"),
        exception=Flaky("bad thing"),
        attempts=3,
        elapsed_seconds=1.5,
        failed_at=1000.0,
    )
    c = codec(Query)
    key, payload = c.dump(original)
    assert json.loads(payload)["exception"] == {"__exception__": "Flaky", "message": "bad thing"}
    back = c.load(key, payload)
    assert isinstance(back, StepFailedEvent)
    # The exception's class is never imported from stored data: its name and message are.
    assert isinstance(back.exception, RecordedError)
    assert back.exception.type_name == "Flaky"
    assert str(back.exception) == "Flaky: bad thing"
    assert (back.step_name, back.attempts, back.elapsed_seconds) == ("work", 3, 1.5)
    # The input event comes back as an Event with its data (its field is typed Event).
    assert back.input_event["question"] == "q"
    assert back.input_event["user"] == "ana"
    # Stored again (a resumed step forwards it), it keeps the original name and message.
    assert c.dump(back) == (key, payload)
    again = c.load(key, c.dump(back)[1])
    assert isinstance(again, StepFailedEvent)
    assert str(again.exception) == "Flaky: bad thing"


def test_workflow_failed_event_round_trips_its_exception() -> None:
    c = codec()
    back = c.load(*c.dump(WorkflowFailedEvent(step_name="s", exception=KeyError("k"))))
    assert isinstance(back, WorkflowFailedEvent)
    assert isinstance(back.exception, RecordedError)
    assert back.exception.type_name == "KeyError"
    back = c.load(*c.dump(WorkflowFailedEvent(step_name="s")))
    assert back.exception is None


def test_a_payload_that_no_longer_fits_its_class() -> None:
    with pytest.raises(
        ContextSerdeError, match=r"(?s)stored Rich no longer matches.*give new fields defaults"
    ):
        codec(Rich).load(type_key(Rich), json.dumps({"count": 1}))  # `text` was added
    with pytest.raises(ContextSerdeError, match="no longer matches"):
        codec(Rich).load(type_key(Rich), "{not json")


def test_a_key_naming_a_model_that_is_not_an_event() -> None:
    with pytest.raises(ContextSerdeError, match="is not an event"):
        codec().load(type_key(DictState), "{}")


# -- unknown type keys ----------------------------------------------------------------------------


@pytest.fixture
def trap_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module that records being imported; returns its name."""
    name = "riverbed_import_trap"
    (tmp_path / f"{name}.py").write_text(
        "import os\n"
        "os.environ['RIVERBED_TRAP_IMPORTED'] = '1'\n"
        "from riverbed import Event\n"
        "class Evil(Event):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RIVERBED_TRAP_IMPORTED", raising=False)
    sys.modules.pop(name, None)
    return name


@pytest.mark.parametrize(
    "key",
    ["{trap}.Evil", "os.system", "subprocess.Popen", "builtins.object", "pydantic.BaseModel", ""],
)
def test_unknown_type_keys_are_refused_and_never_imported(
    key: str, trap_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = key.format(trap=trap_module)
    c = codec(Rich)
    with pytest.raises(ContextSerdeError, match=r"does not know.*restore it, or register it"):
        c.load(key, "{}")
    with pytest.raises(ContextSerdeError, match="does not know"):
        c.registry.resolve(key)
    assert key not in c.registry
    serializer = JsonSerializer(TypeRegistry([Rich]))
    with pytest.raises(ContextSerdeError, match="does not know"):
        serializer.deserialize(json.dumps({"__model__": key, "value": {}}))
    assert trap_module not in sys.modules
    import os

    assert "RIVERBED_TRAP_IMPORTED" not in os.environ


def test_an_event_class_this_process_defines_is_found_without_import() -> None:
    # Events a step only writes to the stream appear in no signature; they are found among
    # the Event subclasses already defined here (walking __subclasses__, not importing).
    class StreamOnly(Event):
        n: int

    c = codec()
    assert c.load(type_key(StreamOnly), '{"n": 1}') == StreamOnly(n=1)


# -- JsonSerializer / PickleSerializer -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 1, 2.5, "text", True, [1, "a", None], {"a": {"b": [1, 2]}}, {"__model__": 1}],
)
def test_json_serializer_round_trips_plain_values(value: Any) -> None:
    serializer = JsonSerializer()
    assert serializer.deserialize(serializer.serialize(value)) == value


@pytest.mark.parametrize("cls", [JsonSerializer, PickleSerializer])
def test_serializers_round_trip_models_with_their_type(cls: type[JsonSerializer]) -> None:
    writer = cls()
    value = Rich(text="t", inner=Inner(name="n"), extra="x")
    text = writer.serialize(value)
    assert json.loads(text)["__model__"] == type_key(Rich)
    reader = cls(TypeRegistry([Rich]))
    back = reader.deserialize(text)
    assert type(back) is Rich
    assert back == value
    # A reader whose registry lacks the type refuses it instead of importing it.
    with pytest.raises(ContextSerdeError, match="does not know"):
        cls(TypeRegistry()).deserialize(json.dumps({"__model__": type_key(Inner), "value": {}}))


class Opaque:
    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]


def test_pickle_is_used_only_when_opted_in() -> None:
    value = {"client": Opaque(3)}
    with pytest.raises(ContextSerdeError, match=r"Opaque.*PickleSerializer for trusted data"):
        JsonSerializer().serialize(value)
    text = PickleSerializer().serialize(value)
    assert set(json.loads(text)) == {"__pickle__"}
    assert PickleSerializer().deserialize(text) == value
    # JsonSerializer never unpickles: the payload stays an inert dict.
    assert JsonSerializer().deserialize(text) == json.loads(text)
    # JSON-friendly values stay JSON with PickleSerializer too.
    assert PickleSerializer().serialize({"a": 1}) == '{"a": 1}'


def test_json_serializer_refuses_bad_text() -> None:
    with pytest.raises(ContextSerdeError, match="not valid JSON"):
        JsonSerializer().deserialize("{oops")


def test_a_durable_run_never_pickles() -> None:
    # The engine's codec is JSON only: a value JSON cannot hold is refused, not pickled.
    with pytest.raises(ContextSerdeError, match="not JSON"):
        codec().dump(Event(client=Opaque(1)))


# -- the seed page's typed state, through a durable run ------------------------------------------


class MyStatefulFlow(Workflow):
    @step
    async def start(self, ctx: Context[MyState], ev: StartEvent) -> InputRequiredEvent:
        async with ctx.store.edit_state() as state:
            state.my_obj.name = "new_name"
        name = await ctx.store.get("my_obj.name")
        await ctx.store.set("some_key", f"seen {name}")
        return InputRequiredEvent(prefix="continue?")

    @step
    async def finish(self, ctx: Context[MyState], ev: HumanResponseEvent) -> StopEvent:
        state = await ctx.store.get_state()
        assert isinstance(state.my_obj, MyRandomObject)
        async with ctx.store.edit_state() as edit:
            edit.my_obj.name += f"+{ev.response}"
        return StopEvent(result=[state.my_obj.name, state.some_key])


def test_my_state_round_trips_through_the_codec() -> None:
    c = codec(MyState)
    state = MyState(my_obj=MyRandomObject("x"), some_key="k")
    text = c.dump_state(state)
    assert json.loads(text) == {"my_obj": "x", "some_key": "k"}
    back = c.load_state(MyState, text)
    assert isinstance(back.my_obj, MyRandomObject)
    assert (back.my_obj.name, back.some_key) == ("x", "k")
    with pytest.raises(ContextSerdeError, match="no longer fits MyState"):
        c.load_state(MyState, '{"my_obj": 5}')


@pytest.fixture
async def stores() -> AsyncIterator[list[Workflow]]:
    made: list[Workflow] = []
    yield made
    for workflow in made:
        if workflow.store.is_open:
            await workflow.store.close()


async def _asked_then_gone(
    workflow: Workflow, stores: list[Workflow], **kwargs: Any
) -> WorkflowHandler:
    """Start a durable run until it asks for input, then close its store: the process
    goes away while the run waits."""
    stores.append(workflow)
    handler = workflow.run(**kwargs)
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            break
    await workflow.store.close()
    return handler


async def test_my_state_through_a_durable_run_and_resume(
    tmp_path: Path, stores: list[Workflow]
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    handler = await _asked_then_gone(MyStatefulFlow(store=url), stores)
    conn = sqlite3.connect(tmp_path / "runs.db")
    stored = conn.execute("SELECT state, state_type FROM runs").fetchone()
    conn.close()
    assert json.loads(stored[0]) == {"my_obj": "new_name", "some_key": "seen new_name"}
    assert stored[1] == type_key(MyState)

    second = MyStatefulFlow(store=url)
    stores.append(second)
    resumed = await second.resume(handler.run_id)
    state = await resumed.ctx.store.get_state()
    assert isinstance(state, MyState)
    assert isinstance(state.my_obj, MyRandomObject)
    assert state.my_obj.name == "new_name"
    await resumed.send_event(HumanResponseEvent(response="ok"))
    assert await resumed == ["new_name", "seen new_name"]
    final = await resumed.ctx.store.get_state()
    assert final.my_obj.name == "new_name+ok"
    await asyncio.sleep(0)


# -- untyped state keeps its values' types -------------------------------------------------


class Point(BaseModel):
    x: int
    y: int


def _rich_dict_state() -> dict[str, Any]:
    return {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2026, 1, 2, 3, 4),
        "day": dt.date(2026, 1, 2),
        "at": dt.time(3, 4, 5),
        "took": dt.timedelta(days=1, seconds=2, microseconds=3),
        "pair": (1, "two", (3,)),
        "tags": {"a", "b"},
        "frozen": frozenset({1}),
        "by_number": {1: "one", 2: ["two"]},
        "marker_key": {"__riverbed__": "not ours", "n": 1},
        "id": __import__("uuid").UUID(int=7),
        "money": __import__("decimal").Decimal("1.10"),
        "blob": b"\x00\xff",
        "where": __import__("pathlib").PurePosixPath("/tmp/x"),
        "point": Point(x=1, y=2),
        "event": Rich(text="kept", extra_field=dt.date(2026, 1, 1).isoformat()),
        "plain": {"list": [1, 2.5, None, True, "s"], "nested": {"k": [{"v": 1}]}},
        "color": Color.BLUE,
    }


def test_untyped_state_round_trips_its_values_types_through_the_codec() -> None:
    c = codec(Rich)
    state = DictState(**_rich_dict_state())
    back = c.load_state(DictState, c.dump_state(state))
    expected = _rich_dict_state()
    expected["color"] = Color.BLUE.value  # an enum is stored as its value, as before
    assert back.data == expected
    assert type(back.data["pair"]) is tuple
    assert type(back.data["tags"]) is set
    assert type(back.data["point"]) is Point
    assert type(back.data["event"]) is Rich


def test_untyped_state_shown_as_plain_json_and_old_payloads_still_load() -> None:
    c = codec(Rich)
    plain = to_plain(json.loads(c.dump_state(DictState(**_rich_dict_state()))))
    assert plain["when"] == "2026-01-02T03:04:05.000006+00:00"
    assert plain["pair"] == [1, "two", [3]]
    assert plain["by_number"] == {"1": "one", "2": ["two"]}
    assert plain["marker_key"] == {"__riverbed__": "not ours", "n": 1}
    assert plain["point"] == {"x": 1, "y": 2}
    assert plain["took"] == 86402.000003
    assert "__riverbed__" not in json.dumps({k: v for k, v in plain.items() if k != "marker_key"})
    # written before values were tagged: read as it always was
    old = c.load_state(DictState, '{"when": "2026-01-02", "pair": [1, 2], "n": 3}')
    assert old.data == {"when": "2026-01-02", "pair": [1, 2], "n": 3}
    # a model class this process does not define comes back as its fields
    gone = '{"p": {"__riverbed__": "model", "type": "nowhere.Gone", "v": {"x": 1}}}'
    assert c.load_state(DictState, gone).data == {"p": {"x": 1}}


class _Stamped(Workflow):
    @step
    async def stamp(self, ctx: Context, ev: StartEvent) -> InputRequiredEvent:
        for key, value in _rich_dict_state().items():
            await ctx.store.set(key, value)
        return InputRequiredEvent(prefix="go on?")

    @step
    async def finish(self, ctx: Context, ev: HumanResponseEvent) -> StopEvent:
        state = (await ctx.store.get_state()).data
        expected = _rich_dict_state()
        expected["color"] = Color.BLUE.value  # an enum is stored as its value
        # the keys whose value or type differs from what the first process stored
        differ = [
            key
            for key, value in expected.items()
            if state.get(key) != value or type(state.get(key)) is not type(value)
        ]
        return StopEvent(result=differ + sorted(set(state) - set(expected)))


async def test_untyped_state_reads_back_the_same_types_after_a_restart(
    tmp_path: Path, stores: list[Workflow]
) -> None:
    # A datetime, a tuple or a set came back as a str or a list after a resume, while the
    # run that never stopped kept them: code worked until the process restarted.
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    await _asked_then_gone(_Stamped(store=url), stores, run_id="stamped")
    second = _Stamped(store=url)
    stores.append(second)
    resumed = await second.send_event("stamped", HumanResponseEvent(response="yes"))
    assert await resumed == []
    details = await read_run(second.store, "stamped")
    assert details.state["when"] == "2026-01-02T03:04:05.000006+00:00"  # shown as JSON
