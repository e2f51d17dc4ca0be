"""The seed page's typed state (LlamaIndex "Maintaining state"), shared by the tests.

``examples/seed_typed_state.py`` keeps its own copy on purpose: it is the page's program as
a user runs it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_serializer, field_validator


class MyRandomObject:
    def __init__(self, name: str = "default") -> None:
        self.name = name


class MyState(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    my_obj: MyRandomObject = Field(default_factory=MyRandomObject)
    some_key: str = Field(default="some_value")

    @field_serializer("my_obj", when_used="always")
    def serialize_my_obj(self, my_obj: MyRandomObject) -> str:
        return my_obj.name

    @field_validator("my_obj", mode="before")
    @classmethod
    def deserialize_my_obj(cls, v: str | MyRandomObject) -> MyRandomObject:
        if isinstance(v, MyRandomObject):
            return v
        if isinstance(v, str):
            return MyRandomObject(v)
        raise ValueError(f"Invalid type for my_obj: {type(v)}")
