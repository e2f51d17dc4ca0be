"""The typed-state example of the seed page "Maintaining state", with only the import
changed: a pydantic state model holding an arbitrary object with a custom serializer and
validator, edited atomically with ``edit_state``.
"""

import asyncio
from typing import Union

from pydantic import BaseModel, Field, field_serializer, field_validator

from riverbed import (
    Context,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)


# This is a random object that we want to use in our state
class MyRandomObject:
    def __init__(self, name: str = "default"):
        self.name = name


# This is our state model
# NOTE: all fields must have defaults
class MyState(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    my_obj: MyRandomObject = Field(default_factory=MyRandomObject)
    some_key: str = Field(default="some_value")

    # This is optional, but can be useful if you want to control the serialization of your state!

    @field_serializer("my_obj", when_used="always")
    def serialize_my_obj(self, my_obj: MyRandomObject) -> str:
        return my_obj.name

    @field_validator("my_obj", mode="before")
    @classmethod
    def deserialize_my_obj(cls, v: Union[str, MyRandomObject]) -> MyRandomObject:  # noqa: UP007
        if isinstance(v, MyRandomObject):
            return v
        if isinstance(v, str):
            return MyRandomObject(v)

        raise ValueError(f"Invalid type for my_obj: {type(v)}")


class MyStatefulFlow(Workflow):
    @step
    async def start(self, ctx: Context[MyState], ev: StartEvent) -> StopEvent:
        # Allows for atomic state updates
        async with ctx.store.edit_state() as state:
            state.my_obj.name = "new_name"

        # Can also access fields directly if needed
        name = await ctx.store.get("my_obj.name")  # noqa: F841

        return StopEvent(result="Done!")


async def main() -> None:
    w = MyStatefulFlow(timeout=10, verbose=False)

    ctx = Context(w)
    result = await w.run(ctx=ctx)
    state = await ctx.store.get_state()
    print(state)
    print(result, state.model_dump())


if __name__ == "__main__":
    asyncio.run(main())
