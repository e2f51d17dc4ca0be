"""``ctx.to_dict()`` / ``Context.from_dict()``: LlamaIndex's manual pause and resume.

The payload holds the state and, for a run that has not finished, the work it had: events
queued or in progress per step, and events held by ``collect_events``. Resuming puts that
work back on the step queues; steps that were in progress run again from the top.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from riverbed.errors import ContextSerdeError
from riverbed.serialization import BaseSerializer, EventCodec, JsonSerializer, PickleSerializer
from riverbed.serialization import type_key as _type_key

if TYPE_CHECKING:
    from riverbed._engine.run import Run
    from riverbed.context import Context
    from riverbed.workflow import Workflow

__all__ = ["context_from_dict", "context_to_dict"]

VERSION = 1


def _codec(workflow: Workflow) -> EventCodec:
    from riverbed._engine.durable import registry_for

    return EventCodec(registry_for(workflow))


def _encode(value: Any, codec: EventCodec, serializer: BaseSerializer) -> Any:
    if isinstance(serializer, PickleSerializer):
        return serializer.serialize(value)
    key, payload = codec.dump(value)
    return {"type": key, "value": json.loads(payload)}


def _decode(raw: Any, codec: EventCodec, serializer: BaseSerializer) -> Any:
    if isinstance(serializer, PickleSerializer):
        return serializer.deserialize(raw)
    if not isinstance(raw, dict) or set(raw) != {"type", "value"}:
        raise ContextSerdeError(f"Not an encoded event: {str(raw)[:80]!r}")
    return codec.load(raw["type"], json.dumps(raw["value"]))


def context_to_dict(ctx: Context[Any], serializer: BaseSerializer | None) -> dict[str, Any]:
    serializer = serializer or JsonSerializer()
    workflow = ctx._workflow
    codec = _codec(workflow)
    state = ctx._state_store._state
    if isinstance(serializer, PickleSerializer):
        state_value: Any = serializer.serialize(state)
    else:
        state_value = json.loads(codec.dump_state(state))
    run: Run | None = ctx._run
    running = run is not None and not run.done
    queues: dict[str, list[Any]] = {}
    collected: dict[str, dict[str, list[Any]]] = {}
    if run is not None and (running or run.status.value == "cancelled"):
        for name, rt in run.steps.items():
            work = [d.event for d in rt.in_progress.values()] + [d.event for d in rt.pending]
            if work:
                queues[name] = [_encode(ev, codec, serializer) for ev in work]
            for buffer_id, buffer in rt.buffers.items():
                held = [ev for queue in buffer._by_type.values() for _, ev in queue]
                if held:
                    collected.setdefault(name, {})[buffer_id or ""] = [
                        _encode(ev, codec, serializer) for ev in held
                    ]
    return {
        "version": VERSION,
        "workflow": workflow.workflow_name,
        "state": {"type": _type_key(type(state)), "value": state_value},
        "is_running": bool(queues or collected) or running,
        "queues": queues,
        "collected": collected,
    }


def context_from_dict(
    workflow: Workflow, data: Any, serializer: BaseSerializer | None
) -> Context[Any]:
    from riverbed.context import Context

    serializer = serializer or JsonSerializer()
    if not isinstance(data, dict) or data.get("version") != VERSION or "state" not in data:
        raise ContextSerdeError(
            "This is not a context payload made by ctx.to_dict() (expected a dict with "
            f"version {VERSION} and a state)."
        )
    codec = _codec(workflow)
    ctx: Context[Any] = Context(workflow)
    store = ctx._state_store
    try:
        value = data["state"]["value"]
        if isinstance(serializer, PickleSerializer):
            store._state = serializer.deserialize(value)
        else:
            store._state = codec.load_state(store.state_type, json.dumps(value))
        queues = {
            step: [_decode(raw, codec, serializer) for raw in events]
            for step, events in data.get("queues", {}).items()
        }
        collected = {
            step: {
                buffer_id: [_decode(raw, codec, serializer) for raw in events]
                for buffer_id, events in buffers.items()
            }
            for step, buffers in data.get("collected", {}).items()
        }
    except (KeyError, TypeError) as exc:
        raise ContextSerdeError(f"The context payload is incomplete: {exc!r}") from exc
    unknown = sorted(set(queues) - set(workflow._step_specs()))
    if unknown:
        raise ContextSerdeError(
            f"The payload has work for steps {unknown}, which {workflow.workflow_name} does "
            "not have."
        )
    if data.get("is_running"):
        ctx._resume_work = (queues, collected)
    return ctx
