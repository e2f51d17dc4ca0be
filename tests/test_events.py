"""Events: pydantic models with dict-like extra data, as in LlamaIndex."""

from typing import Any

import pytest
from pydantic import ValidationError

from riverbed import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
    step,
)


class Query(Event):
    text: str
    limit: int = 5


class Answer(StopEvent):
    text: str
    score: float = 0.0


def test_extra_fields_as_attribute_item_and_get() -> None:
    ev = Query(text="hi", user="ana", tags=["a"])
    assert ev.user == "ana"
    assert ev["user"] == "ana"
    assert ev.get("user") == "ana"
    assert ev["tags"] == ["a"]
    assert ev.get("missing") is None
    assert ev.get("missing", 0) == 0
    with pytest.raises(KeyError):
        ev["missing"]
    with pytest.raises(AttributeError):
        ev.missing  # noqa: B018


def test_declared_fields_through_item_and_get() -> None:
    ev = Query(text="hi")
    assert ev["text"] == "hi"
    assert ev.get("limit") == 5


def test_declared_fields_are_validated() -> None:
    assert Query(text="x", limit="7").limit == 7
    with pytest.raises(ValidationError):
        Query(text="x", limit="many")
    with pytest.raises(ValidationError):
        Query()


def test_in_checks_fields_and_extras() -> None:
    ev = Query(text="hi", user="ana")
    assert "user" in ev
    assert "text" in ev
    assert "limit" in ev
    assert "other" not in ev


def test_setting_an_item_or_attribute_adds_extra_data() -> None:
    ev = Event()
    ev["a"] = 1
    ev.b = 2
    assert (ev.a, ev["b"]) == (1, 2)
    assert dict(ev.items()) == {"a": 1, "b": 2}
    assert list(ev.keys()) == ["a", "b"]
    assert list(ev.values()) == [1, 2]


def test_keys_list_only_extra_data() -> None:
    ev = Query(text="hi", user="ana")
    assert list(ev.keys()) == ["user"]


def test_an_empty_event_is_truthy() -> None:
    assert bool(Event()) is True
    assert bool(StartEvent()) is True
    assert bool(StopEvent()) is True
    assert len(Event().keys()) == 0  # truthy although it holds nothing


def test_model_dump_round_trip_keeps_extras() -> None:
    ev = Query(text="hi", user="ana", nested={"k": [1, 2]})
    dumped = ev.model_dump()
    assert dumped == {"text": "hi", "limit": 5, "user": "ana", "nested": {"k": [1, 2]}}
    again = Query.model_validate(dumped)
    assert again == ev
    assert again.user == "ana"
    assert Query.model_validate_json(ev.model_dump_json()) == ev
    assert ev.to_dict() == dumped


def test_start_event_extras_round_trip() -> None:
    ev = StartEvent(query="q", n=2)
    assert StartEvent.model_validate(ev.model_dump()) == ev
    assert ev.query == "q"


def test_stop_event_result() -> None:
    assert StopEvent().result is None
    assert StopEvent(result={"a": 1}).result == {"a": 1}
    assert StopEvent(result=3).model_dump() == {"result": 3}


def test_custom_stop_event_keeps_fields() -> None:
    ev = Answer(text="yes", score=0.5)
    assert ev.result is None
    assert (ev.text, ev.score) == ("yes", 0.5)
    assert Answer.model_validate(ev.model_dump()) == ev


class Returns(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result={"echo": ev.get("value")})


class ReturnsCustom(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Answer:
        return Answer(text=ev.text, score=1.0, result="also kept")


async def test_awaiting_a_run_gives_the_stop_event_result() -> None:
    assert await Returns().run(value=7) == {"echo": 7}


async def test_awaiting_a_run_with_a_custom_stop_event_gives_the_instance() -> None:
    result: Any = await ReturnsCustom().run(text="hi")
    assert isinstance(result, Answer)
    assert (result.text, result.score, result.result) == ("hi", 1.0, "also kept")
    assert ReturnsCustom().stop_event_class is Answer


def test_built_in_event_families() -> None:
    for terminal in (WorkflowTimedOutEvent, WorkflowCancelledEvent, WorkflowFailedEvent):
        assert issubclass(terminal, StopEvent)
    assert WorkflowTimedOutEvent().active_steps == []
    assert WorkflowFailedEvent().exception is None
    assert issubclass(InputRequiredEvent, Event)
    assert issubclass(HumanResponseEvent, Event)
    assert HumanResponseEvent(response="yes").response == "yes"


def test_step_failed_event_carries_the_failure() -> None:
    error = ValueError("bad")
    ev = StepFailedEvent(
        step_name="s",
        input_event=Query(text="q"),
        exception=error,
        attempts=2,
        elapsed_seconds=0.1,
        failed_at=1.0,
    )
    assert ev.exception is error
    assert ev.input_event.text == "q"


def test_len_counts_the_extra_data_only() -> None:
    # As in LlamaIndex: len() is the number of undeclared items, declared fields aside.
    assert len(Query(text="hi", user="ana", tags=["a"])) == 2
    assert len(Query(text="hi")) == 0
    assert len(StopEvent(result=3, note="n")) == 1
    ev = Event()
    ev["a"] = 1
    assert len(ev) == 1
    assert bool(Event()) is True  # still truthy when empty


def test_llamaindex_shaped_data_is_read_as_extras() -> None:
    # llama-index-workflows dumps undeclared fields under "_data".
    peer_json = '{"text": "hi", "_data": {"user": "ana", "tags": ["a"]}}'
    ev = Query.model_validate_json(peer_json)
    assert (ev.text, ev.get("user"), ev.tags) == ("hi", "ana", ["a"])
    assert Query.model_validate_json(peer_json.encode()).get("user") == "ana"
    from_dict = Query.model_validate({"text": "hi", "_data": {"user": "ana"}})
    assert from_dict == Query(text="hi", user="ana")
    from_strings = Query.model_validate_strings({"text": "hi", "limit": "2", "_data": {"u": "v"}})
    assert (from_strings.limit, from_strings.u) == (2, "v")
    assert StopEvent.model_validate({"result": 3, "_data": {"a": 1}}).a == 1


def test_llamaindex_shaped_data_keeps_riverbeds_flat_output() -> None:
    ev = Query.model_validate({"text": "hi", "_data": {"user": "ana"}})
    assert ev.model_dump() == {"text": "hi", "limit": 5, "user": "ana"}
    assert "_data" not in ev.model_dump_json()
    assert Query.model_validate_json(ev.model_dump_json()) == ev


def test_top_level_keys_win_over_nested_data() -> None:
    ev = Query.model_validate({"text": "hi", "user": "top", "_data": {"user": "nested"}})
    assert ev.user == "top"


def test_a_data_key_that_is_not_a_dict_stays_an_extra() -> None:
    assert Query.model_validate({"text": "hi", "_data": 3}).get("_data") == 3


def test_bad_json_with_a_data_key_raises_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        Query.model_validate_json('{"text": "hi", "_data": ')
    with pytest.raises(ValidationError):
        Query.model_validate_json('{"_data": {"user": "ana"}}')  # text is missing
