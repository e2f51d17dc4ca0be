"""Operations on a durable run by its id, from any process: answering it, continuing it,
or reading back one that ended. ``Workflow.send_event(run_id, ...)`` is built on these.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from riverbed._engine.durable import (
    DurableRun,
    _missing_step,
    owner_id,
    registry_for,
    wrong_workflow,
)
from riverbed.errors import WorkflowCancelledByUser, WorkflowRuntimeError, WorkflowTimeoutError
from riverbed.events import (
    Event,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from riverbed.serialization import EventCodec, RecordedError
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import DurableStore, EventRow, RunSnapshot

if TYPE_CHECKING:
    from riverbed.workflow import Workflow

__all__ = ["create_unowned", "ended_run", "handoff_submit", "offline_submit"]


async def create_unowned(
    workflow: Workflow, store: DurableStore, run_id: str, event: Event, state: Any
) -> None:
    """Record a new run that no process runs yet (``Workflow.submit``): workers take it."""
    import time

    from riverbed.serialization import type_key

    codec = EventCodec(registry_for(workflow))
    key, payload = codec.dump(event)
    record = RunRecord(
        run_id=run_id,
        workflow=workflow.workflow_name,
        status=RunStatus.RUNNING,
        started_at=time.time(),
        workflow_version=workflow.workflow_version,
    )
    timeout = workflow._timeout
    owner = owner_id()
    await store.create_run(
        record,
        EventRow(1, key, payload),
        workflow._route(type(event)),
        codec.dump_state(state),
        type_key(type(state)),
        owner,
        time.time() + timeout if timeout is not None else None,
    )
    await store.release_run(run_id, owner)


async def handoff_submit(
    workflow: Workflow,
    store: DurableStore,
    run_id: str,
    event: Event,
    step: str | None,
    client_event_id: str | None,
) -> None:
    """Commit an outside event to a run another live process owns. That process polls for
    such events while it waits for input, and routes them (see DurableRun._poll_outside).

    The waiters the event answers are marked in the same transaction, as offline_submit
    does: if the owner gives the run up before it saw the event (a worker parking it), the
    rows alone tell the next process that the wait is over."""
    codec = EventCodec(registry_for(workflow))
    key, payload = codec.dump(event)
    waiters = await store.read_waiters(run_id)
    resolves = tuple(
        w.waiter_id
        for w in waiters
        if w.resolved is None and _answers(codec, w.event_type, w.requirements, event)
    )
    if step is not None:
        targets: tuple[str, ...] = (step,)
    else:
        waiting = {w.step for w in waiters if w.waiter_id in resolves}
        targets = tuple(t for t in workflow._route(type(event)) if t not in waiting)
    await store.submit_event(
        run_id, EventRow(0, key, payload, None, client_event_id), targets, resolves
    )


async def offline_submit(
    workflow: Workflow,
    store: DurableStore,
    run_id: str,
    event: Event,
    step: str | None,
    client_event_id: str | None,
) -> RunSnapshot:
    """Commit an outside event to a run no process is running; return the snapshot to
    continue it from (this process now owns the run)."""
    owner = owner_id()
    snap = await store.acquire_run(run_id, owner)
    try:
        codec = EventCodec(registry_for(workflow))
        await _check_restorable(workflow, store, codec, snap, step, event)
        key, payload = codec.dump(event)
        resolves = tuple(
            w.waiter_id
            for w in snap.waiters
            if w.resolved is None and _answers(codec, w.event_type, w.requirements, event)
        )
        if step is not None:
            targets: tuple[str, ...] = (step,)
        else:
            targets = workflow._route(type(event))
            if resolves:
                waiting = {w.step for w in snap.waiters if w.waiter_id in resolves}
                targets = tuple(t for t in targets if t not in waiting)
        if not targets and not resolves:
            raise WorkflowRuntimeError(
                f"No step of {workflow.workflow_name} accepts {type(event).__name__} and no "
                f"step of run {run_id} is waiting for it."
            )
        await store.submit_event(
            run_id, EventRow(0, key, payload, None, client_event_id), targets, resolves
        )
        return await store.acquire_run(run_id, owner)
    except BaseException:
        await store.release_run(run_id, owner)
        raise


async def ended_run(workflow: Workflow, store: DurableStore, run_id: str) -> DurableRun:
    """A run that has ended, read back from its rows (nothing runs): its final state, its
    stream closed by its terminal event, and its outcome.

    ``send_event(run_id, ..., client_event_id=...)`` repeated after the first submission
    ended the run gets this, so a client retrying its submission sees the run's result
    instead of ``RunFinishedError``.
    """
    from riverbed.context import Context

    record = await store.get_run(run_id)
    if record.workflow != workflow.workflow_name:
        raise wrong_workflow(run_id, record.workflow, workflow)
    ctx: Context[Any] = Context(workflow)
    store_arg: Any = store
    run = DurableRun(
        workflow,
        ctx,
        run_id=run_id,
        store=store_arg,
        clock=workflow._clock,
        timeout=None,
        verbose=False,
    )
    run.setup_durable(store)
    ctx._begin(run)
    codec = run.codec
    state_store = ctx._state_store
    state_store.before_write = None  # an ended run's state is plain data
    state_store.check = None
    state_store._state = codec.load_state(
        state_store.state_type, (await store.read_state(run_id))[0]
    )
    for streamed in await store.read_stream(run_id, 0, 1_000_000):
        run.stream.write(codec.load(streamed.type_key, streamed.payload))
    run._booting = False
    run.done = True
    run.status = record.status
    if record.status is RunStatus.COMPLETED:
        # The StopEvent is the last event the completing commit produced.
        stop = next(
            (
                event
                for event in (
                    codec.load(e.type_key, e.payload)
                    for e in reversed(await store.read_events(run_id))
                )
                if isinstance(event, StopEvent)
            ),
            StopEvent(),
        )
        run.stream.close(stop)
        run.result.set_result(stop if type(stop)._returns_instance else stop.result)
        return run
    type_name, _, message = (record.error or f"{record.status.value}: ").partition(": ")
    error: Exception
    terminal: StopEvent
    if record.status is RunStatus.CANCELLED:
        error, terminal = WorkflowCancelledByUser(message), WorkflowCancelledEvent()
    elif record.status is RunStatus.TIMED_OUT:
        error, terminal = WorkflowTimeoutError(message), WorkflowTimedOutEvent()
    else:
        error = RecordedError(type_name, message)
        terminal = WorkflowFailedEvent(exception=error)
    run.stream.close(terminal)
    run.result.set_exception(error)
    return run


async def _check_restorable(
    workflow: Workflow,
    store: DurableStore,
    codec: EventCodec,
    snap: RunSnapshot,
    step: str | None,
    event: Event,
) -> None:
    """Raise what continuing the run would raise (Workflow._continue, DurableRun.restore)
    before offline_submit writes anything. Without this, send_event to a run of another
    workflow, or one whose stored events or steps the workflow no longer has, committed
    the event to the run and only then failed."""
    run_id = snap.record.run_id
    if snap.record.workflow != workflow.workflow_name:
        raise wrong_workflow(run_id, snap.record.workflow, workflow)
    specs = workflow._step_specs()
    if step is not None and (step not in specs or not specs[step].accepts(type(event))):
        raise WorkflowRuntimeError(
            f"Step {step!r} of {workflow.workflow_name} does not exist or does not take "
            f"{type(event).__name__}. Known steps: {', '.join(sorted(specs))}."
        )
    codec.load_state(workflow._state_type(), snap.state)
    for streamed in await store.read_stream(run_id, 0, 1_000_000):
        codec.load(streamed.type_key, streamed.payload)
    for held in snap.collected:
        codec.load(held.event.type_key, held.event.payload)
    for row in snap.deliveries:
        if row.step not in specs:
            raise _missing_step(run_id, workflow, row.step)
        codec.load(row.event.type_key, row.event.payload)


def _answers(codec: EventCodec, type_name: str, requirements: str, event: Event) -> bool:
    if type_name not in codec.registry:
        return False
    wanted = codec.registry.resolve(type_name)
    if not isinstance(event, wanted):
        return False
    for attribute, value in json.loads(requirements or "{}").items():
        if event.get(attribute) != value:
            return False
    return True
