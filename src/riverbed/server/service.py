"""What the endpoints do with runs: start, read, list, answer and cancel them, through the
served workflows and their durable stores.

Everything a request carries is checked before anything is written: an unknown run or
workflow, an event type the workflow does not take or a payload that does not fit its
class is refused (a :class:`~riverbed.server.problems.Problem`) with the store unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from pydantic import ValidationError

from riverbed.errors import RunFinishedError, RunNotFoundError
from riverbed.events import Event, StartEvent
from riverbed.handler import WorkflowHandler
from riverbed.inspection import record_to_dict, type_name, waiting_runs, waits_from_outside
from riverbed.serialization import type_key
from riverbed.server.catalog import Catalog, Entry
from riverbed.server.feed import FeedHub
from riverbed.server.problems import Problem
from riverbed.stores.base import RunRecord, RunStatus

__all__ = ["RunService", "run_json", "validation_problem"]

#: how long starting a run waits for its row before answering anyway
_RECORD_WAIT = 5.0

_TERMINAL_EVENTS = {
    RunStatus.FAILED: "WorkflowFailedEvent",
    RunStatus.CANCELLED: "WorkflowCancelledEvent",
    RunStatus.TIMED_OUT: "WorkflowTimedOutEvent",
}


def validation_problem(exc: ValidationError, what: str) -> Problem:
    """A 422 problem listing pydantic's errors (location, message), without the input."""
    errors = [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return Problem(
        422,
        "invalid-input",
        f"{what} is invalid: {where}: {first['msg']}"
        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
        errors=errors,
    )


def live_message(event: Event) -> dict[str, Any]:
    """The JSON a client gets for a live (never stored) stream event."""
    try:
        data: Any = json.loads(event.model_dump_json())
    except (TypeError, ValueError):
        data = {"repr": repr(event)}  # a value JSON cannot hold: show it, do not fail
    return {"type": type(event).__name__, "type_key": type_key(type(event)), "data": data}


def run_json(record: RunRecord) -> dict[str, Any]:
    """A run as the API shows it (``riverbed.inspection.record_to_dict``)."""
    return record_to_dict(record)


class RunService:
    """The runs of the served workflows."""

    def __init__(self, catalog: Catalog, poll_seconds: float = 0.2, execute: bool = True) -> None:
        self.catalog = catalog
        #: False: runs are only recorded (started, answered) and ``riverbed worker``
        #: processes sharing the store execute them
        self.execute = execute
        #: handlers of runs executing in this process, started or continued by the server
        self.handlers: dict[str, WorkflowHandler] = {}
        #: set when the run of that handler ends
        self._ended: dict[str, asyncio.Event] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self.hub = FeedHub(self.terminal_event, poll_seconds)

    # -- finding -------------------------------------------------------------------------
    def live(self, run_id: str) -> WorkflowHandler | None:
        """The handler of ``run_id`` if it executes in this process."""
        handler = self.handlers.get(run_id)
        return None if handler is None or handler.done() else handler

    def _keep(self, handler: WorkflowHandler) -> None:
        run_id = handler.run_id
        known = self.handlers.get(run_id)
        if known is not None and not known.done():
            return  # the same run (send_event returns a new handler object for it)
        previous = self._ended.pop(run_id, None)
        if previous is not None:
            previous.set()  # whoever waited on the old one looks again
        self.handlers[run_id] = handler
        self._ended[run_id] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._watch(handler))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, handler: WorkflowHandler) -> None:
        # The run writes to its in-memory stream right after each commit: a cue for the
        # feed to read the store now instead of at its next poll. This task is never
        # cancelled before the run ends (a reader cancelled while it waits would cancel
        # the stream's shared wake-up for the run's other readers); it ends with the run.
        run_id = handler.run_id
        stream = handler._run.stream
        try:
            position = 0
            async for event in handler.stream_events():
                if stream.is_live(position):
                    self.hub.push_live(run_id, live_message(event))
                else:
                    self.hub.poke(run_id)
                position += 1
        finally:
            self.hub.poke(run_id)
            if self.handlers.get(run_id) is handler:
                del self.handlers[run_id]
                self._ended.pop(run_id).set()
            if handler.done():
                handler.exception()  # the outcome is in the store: no "never retrieved"

    async def open_stores(self) -> None:
        """Open the workflows' stores if they are not (done by the app's lifespan, which a
        parent app that mounts this one may not run)."""
        for entry in self.catalog.entries.values():
            if not getattr(entry.workflow.store, "is_open", True):
                await entry.workflow.open_store()

    async def find(self, run_id: str) -> tuple[Any, RunRecord]:
        """The store holding ``run_id`` and its record; a 404 problem if none does."""
        await self.open_stores()
        for store in self.catalog.stores():
            try:
                return store, await store.get_run(run_id)
            except RunNotFoundError:
                continue
        raise Problem(404, "run-not-found", f"No run with id {run_id!r} on this server.")

    def entry_of(self, record: RunRecord) -> Entry:
        entry = self.catalog.entries.get(record.workflow)
        if entry is None:
            raise Problem(
                409,
                "workflow-not-served",
                f"Run {record.run_id} belongs to workflow {record.workflow!r}, which this "
                "server does not serve. Serve that workflow to act on the run.",
            )
        return entry

    # -- starting ------------------------------------------------------------------------
    def start_event(self, entry: Entry, data: dict[str, Any]) -> StartEvent:
        """The workflow's StartEvent from request data (a 422 problem if it does not fit)."""
        cls = entry.workflow.start_event_class
        fields = cls.model_fields
        unknown = sorted(set(data) - set(fields)) if fields else []
        if unknown:
            raise Problem(
                422,
                "invalid-input",
                f"{cls.__name__} has no field {unknown[0]!r}. Its fields are: "
                f"{', '.join(sorted(fields))}.",
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise validation_problem(exc, f"The input ({cls.__name__})") from None

    async def start(self, entry: Entry, data: dict[str, Any], run_id: str | None) -> str:
        """Start a run and return its id once its row is in the store."""
        event = self.start_event(entry, data)
        wf = entry.workflow
        await wf.open_store()
        if run_id is not None:
            try:
                await wf.store.get_run(run_id)
            except RunNotFoundError:
                pass
            else:
                raise Problem(409, "run-exists", f"A run with id {run_id!r} exists already.")
        if not self.execute:
            return await wf.submit(event, run_id=run_id)
        handler = wf.run(start_event=event, run_id=run_id)
        self._keep(handler)
        deadline = time.monotonic() + _RECORD_WAIT
        delay = 0.001
        while time.monotonic() < deadline:
            if handler.done():
                exc = handler.exception()
                if exc is not None and not await _exists(wf.store, handler.run_id):
                    raise exc  # refused before it began (e.g. the id was taken meanwhile)
                break
            if await _exists(wf.store, handler.run_id):
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return handler.run_id

    async def wait(self, run_id: str, timeout: float | None) -> RunRecord:
        """The run's record once it has ended, or when ``timeout`` seconds have passed."""
        store, record = await self.find(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not record.status.is_terminal:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            ended = self._ended.get(run_id)
            if ended is not None:
                # An Event, not the handler: cancelling a wait on the handler (the client
                # hanging up) would cancel the run.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ended.wait(), left)
            else:
                await asyncio.sleep(min(self.hub.poll_seconds, left or self.hub.poll_seconds))
            record = await store.get_run(run_id)
        return record

    # -- events from outside -------------------------------------------------------------
    async def send(
        self,
        run_id: str,
        type_name: str,
        data: dict[str, Any],
        step: str | None,
        client_event_id: str | None,
    ) -> dict[str, Any]:
        """Deliver an event to a run (from any process); a repeated client id applies once."""
        _, record = await self.find(run_id)
        entry = self.entry_of(record)
        cls = entry.event_class(type_name)
        try:
            event: Event = cls.model_validate(data)
        except ValidationError as exc:
            raise validation_problem(exc, f"The event ({cls.__name__})") from None
        wf = entry.workflow
        if step is not None:
            spec = wf._step_specs().get(step)
            if spec is None or not spec.accepts(cls):
                raise Problem(
                    422,
                    "unknown-step",
                    f"Workflow {entry.name} has no step {step!r} that takes {cls.__name__}.",
                )
        if record.status.is_terminal and client_event_id is None:
            raise Problem(409, "run-finished", f"Run {run_id} has ended ({record.status.value}).")
        handler = await wf.send_event(
            run_id, event, step=step, client_event_id=client_event_id, continue_here=self.execute
        )
        if handler is not None and not handler.done():
            self._keep(handler)
        return {"run_id": run_id, "accepted": True, "executes_here": handler is not None}

    # -- cancelling ----------------------------------------------------------------------
    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run wherever it executes; an ended run is returned as it is."""
        store, record = await self.find(run_id)
        if record.status.is_terminal:
            return record
        with contextlib.suppress(RunFinishedError):  # it ended on its own meanwhile
            await self.entry_of(record).workflow.cancel_run(run_id)
        final: RunRecord = await store.get_run(run_id)
        return final

    # -- reading -------------------------------------------------------------------------
    async def list_runs(
        self, workflow: str | None, status: RunStatus | None, limit: int, offset: int
    ) -> list[RunRecord]:
        """Runs newest first, across the served workflows' stores."""
        await self.open_stores()
        stores = (
            [self.catalog.get(workflow).workflow.store]
            if workflow is not None
            else self.catalog.stores()
        )
        if len(stores) == 1:
            return list(await _list(stores[0], workflow, status, limit, offset))
        merged: list[RunRecord] = []
        for store in stores:
            merged.extend(await _list(store, workflow, status, limit + offset, 0))
        merged.sort(key=lambda r: r.started_at, reverse=True)
        return merged[offset : offset + limit]

    async def waiting_runs(self, workflow: str | None, limit: int, offset: int) -> list[RunRecord]:
        """Running runs that wait for an event from outside, newest first, across the
        served workflows' stores."""
        await self.open_stores()
        stores = (
            [self.catalog.get(workflow).workflow.store]
            if workflow is not None
            else self.catalog.stores()
        )
        merged: list[RunRecord] = []
        for store in stores:
            merged.extend(await waiting_runs(store, workflow, limit + offset, 0))
        merged.sort(key=lambda r: r.started_at, reverse=True)
        return merged[offset : offset + limit]

    async def waiting_among(self, records: list[RunRecord]) -> set[str]:
        """Ids of the running runs among ``records`` that wait for an event from outside
        (``riverbed.inspection.waits_from_outside``)."""
        waiting: set[str] = set()
        for record in records:
            entry = self.catalog.entries.get(record.workflow)
            if record.status is not RunStatus.RUNNING or entry is None:
                continue
            with contextlib.suppress(RunNotFoundError):  # deleted meanwhile
                if await waits_from_outside(entry.workflow.store, record.run_id, record):
                    waiting.add(record.run_id)
        return waiting

    async def terminal_event(self, record: RunRecord, seq: int) -> dict[str, Any]:
        """The event that ended a run, as the stream's last message."""
        run = run_json(record)
        entry = self.catalog.entries.get(record.workflow)
        if record.status is RunStatus.COMPLETED:
            store, _ = await self.find(record.run_id)
            stop_key = type_key(entry.workflow.stop_event_class) if entry is not None else None
            for row in reversed(await store.read_events(record.run_id)):
                if row.type_key == stop_key or (stop_key is None and row.source_step):
                    return {
                        "seq": seq,
                        "type": type_name(row.type_key),
                        "type_key": row.type_key,
                        "data": json.loads(row.payload),
                        "run": run,
                    }
            return {"seq": seq, "type": "StopEvent", "data": {"result": run["result"]}, "run": run}
        name = _TERMINAL_EVENTS.get(record.status, "StopEvent")
        return {"seq": seq, "type": name, "data": {"error": record.error}, "run": run}

    async def close(self) -> None:
        """Stop following runs (the app is shutting down)."""
        await self.hub.close()


async def _exists(store: Any, run_id: str) -> bool:
    try:
        await store.get_run(run_id)
    except RunNotFoundError:
        return False
    return True


async def _list(
    store: Any, workflow: str | None, status: RunStatus | None, limit: int, offset: int
) -> list[RunRecord]:
    try:
        records: list[RunRecord] = await store.list_runs(
            workflow=workflow, status=status, limit=limit, offset=offset
        )
    except TypeError:  # a store without offset: read past it and skip
        records = await store.list_runs(workflow=workflow, status=status, limit=limit + offset)
        records = records[offset:]
    return records
