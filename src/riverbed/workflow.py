"""``Workflow``: a class whose ``@step`` methods are connected by the events they take and
return."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from riverbed._engine.clock import Clock, SystemClock
from riverbed._engine.durable import DurableRun, wrong_workflow
from riverbed._engine.run import Run
from riverbed.context import Context
from riverbed.errors import (
    RunFinishedError,
    RunNotFoundError,
    RunOwnedError,
    WorkflowRuntimeError,
    WorkflowValidationError,
)
from riverbed.events import Event, StartEvent, StopEvent
from riverbed.handler import WorkflowHandler
from riverbed.resource import ResourceManager, validate_resources
from riverbed.serialization import type_key
from riverbed.step import STEP_ATTR, StepConfig, StepSpec, build_spec
from riverbed.stores.base import RunRecord, RunStatus, Store
from riverbed.stores.durable import DurableStore, RunSnapshot
from riverbed.stores.memory import MemoryStore
from riverbed.validation import (
    WORKFLOW_GRAPH_CHECKS,
    WorkflowShape,
    graph_checks,
    infer_state_type,
    validate_steps,
)

__all__ = ["Workflow"]

_SYSTEM_CLOCK = SystemClock()


class Workflow:
    """Subclass it and add ``@step`` methods; then ``await MyWorkflow().run(...)``.

    ``timeout`` (seconds) bounds a whole run; the default is no limit, so runs that wait for
    a human are not killed. ``num_concurrent_runs`` caps the runs of this instance going on
    at once; more wait their turn. ``disable_validation`` skips the graph checks;
    ``skip_graph_checks`` skips some of them (``"reachability"``, ``"terminal_event"``,
    ``"dead_end"``, as in LlamaIndex). The positional order of the first five parameters
    is LlamaIndex's.
    ``verbose`` prints a line to stdout when each step starts and finishes (logging and
    tracing: :mod:`riverbed.tracing`).
    """

    _added_steps: ClassVar[dict[str, Callable[..., Any]]] = {}
    _specs_cache: ClassVar[dict[str, StepSpec] | None] = None
    _shape_cache: ClassVar[WorkflowShape | None] = None
    _routes_cache: ClassVar[dict[type[Event], tuple[str, ...]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._added_steps = {}
        cls._specs_cache = None
        cls._shape_cache = None
        cls._routes_cache = {}

    def __init__(
        self,
        timeout: float | None = None,
        disable_validation: bool = False,
        verbose: bool = False,
        resource_manager: ResourceManager | None = None,
        num_concurrent_runs: int | None = None,
        *,
        workflow_name: str | None = None,
        skip_graph_checks: Iterable[str] | None = None,
        store: Store | DurableStore | str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise WorkflowValidationError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}."
            )
        if num_concurrent_runs is not None and (
            not isinstance(num_concurrent_runs, int) or num_concurrent_runs < 1
        ):
            raise WorkflowValidationError(
                f"num_concurrent_runs must be an integer >= 1 or None, got {num_concurrent_runs!r}."
            )
        self._timeout = timeout
        self._verbose = verbose
        self._num_concurrent_runs = num_concurrent_runs
        self._disable_validation = disable_validation
        self._resource_manager = resource_manager or ResourceManager()
        self._workflow_name = workflow_name
        if isinstance(store, str):
            from riverbed.stores.urls import store_from_url

            store = store_from_url(store)
        self._store: Any = store if store is not None else MemoryStore()
        #: runs of this instance going on in this process, by id
        self._live: dict[str, Run] = {}
        self._open_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._clock: Clock = clock if clock is not None else _SYSTEM_CLOCK
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        specs = self._step_specs()
        skip = graph_checks(
            skip_graph_checks, WORKFLOW_GRAPH_CHECKS, "Workflow(skip_graph_checks=...)"
        )
        if disable_validation:
            self._shape = None
        elif skip:
            cls = type(self)
            self._shape = validate_steps(f"{cls.__module__}.{cls.__qualname__}", specs, skip)
        else:
            self._shape = type(self)._validated_shape()
        if not disable_validation:
            self._check_resources(specs)
        self._state_cls: type[BaseModel] = infer_state_type(self.workflow_name, specs)

    # -- steps ---------------------------------------------------------------------------
    @classmethod
    def add_step(cls, func: Callable[..., Any]) -> None:
        """Add a free function decorated with ``@step(workflow=cls)`` (done for you)."""
        if cls is Workflow:
            raise WorkflowValidationError(
                "Pass your Workflow subclass to @step(workflow=...), not Workflow itself."
            )
        name = func.__name__
        if name in cls._collect_functions():
            raise WorkflowValidationError(
                f"A step {name} is already part of this workflow, please choose another name."
            )
        cls._added_steps[name] = func
        if "_version_digest" in cls.__dict__:
            delattr(cls, "_version_digest")  # the steps changed, so does the version
        cls._specs_cache = None
        cls._shape_cache = None
        cls._routes_cache = {}

    @classmethod
    def _collect_functions(cls) -> dict[str, Callable[..., Any]]:
        found: dict[str, Callable[..., Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if callable(value) and hasattr(value, STEP_ATTR):
                    found[name] = value
            if issubclass(klass, Workflow):
                found.update(vars(klass).get("_added_steps", {}))
        return found

    @classmethod
    def _step_specs(cls) -> dict[str, StepSpec]:
        specs = cls.__dict__.get("_specs_cache")
        if specs is None:
            specs = {}
            for name, fn in cls._collect_functions().items():
                config: StepConfig = getattr(fn, STEP_ATTR)
                specs[name] = build_spec(name, fn, config)
            cls._specs_cache = specs
        return specs

    @classmethod
    def _route(cls, event_type: type[Event]) -> tuple[str, ...]:
        """Names of the (non-@catch_error) steps that take ``event_type``; computed once."""
        routes = cls._routes_cache
        found = routes.get(event_type)
        if found is None:
            found = routes[event_type] = tuple(
                spec.name
                for spec in cls._step_specs().values()
                if not spec.config.catch_error and spec.accepts(event_type)
            )
        return found

    @classmethod
    def _validated_shape(cls) -> WorkflowShape:
        shape = cls.__dict__.get("_shape_cache")
        if shape is None:
            name = f"{cls.__module__}.{cls.__qualname__}"
            shape = validate_steps(name, cls._step_specs())
            cls._shape_cache = shape
        return shape

    def validate(self) -> bool:
        """Check the workflow's graph and resources again; returns True if it asks for
        human input."""
        type(self)._shape_cache = None
        shape = type(self)._validated_shape()
        self._check_resources(self._step_specs())
        return shape.uses_human_input

    def _check_resources(self, specs: dict[str, StepSpec]) -> None:
        declared = {name: spec.resources for name, spec in specs.items() if spec.resources}
        if not declared:
            return
        problems = validate_resources(declared, manager=self._resource_manager)
        if problems:
            raise WorkflowValidationError(
                "Resource config validation failed:\n" + "\n".join(f"- {p}" for p in problems)
            )

    # -- facts ---------------------------------------------------------------------------
    @property
    def workflow_name(self) -> str:
        """A stable name: ``module.ClassName`` unless given to the constructor."""
        return self._workflow_name or type_key(type(self))

    #: Set on a subclass to name the version of its steps yourself; by default it is a
    #: digest of the steps and the events they take and emit. Worker processes only take
    #: runs whose version they have, so a deploy never runs old runs on changed steps.
    version: ClassVar[str | None] = None

    @property
    def workflow_version(self) -> str:
        """The version stored with each durable run (``version``, or a digest of the
        steps, their accepted and emitted event types)."""
        explicit = type(self).version
        if explicit is not None:
            return explicit
        cached = type(self).__dict__.get("_version_digest")
        if isinstance(cached, str):
            return cached
        shape = sorted(
            (
                name,
                sorted(type_key(t) for t in spec.accepted),
                sorted(type_key(t) for t in spec.emitted),
            )
            for name, spec in self._step_specs().items()
        )
        digest = hashlib.sha256(repr(shape).encode()).hexdigest()[:12]
        setattr(type(self), "_version_digest", digest)  # noqa: B010 - per-class cache
        return digest

    def use_store(self, store: Store | DurableStore | str) -> None:
        """Record this workflow's runs in ``store`` (an object or a URL such as
        ``sqlite:///runs.db``) from now on; the CLI and the server use this to apply
        ``--store`` to a workflow built without one. Not while its runs are going on."""
        if any(not run.done for run in self._live.values()):
            raise WorkflowRuntimeError(
                f"{type(self).__name__} has runs going on in this process; change its store "
                "before starting runs, or create another instance with store=..."
            )
        if isinstance(store, str):
            from riverbed.stores.urls import store_from_url

            store = store_from_url(store)
        self._store = store
        self._open_lock = None

    @property
    def start_event_class(self) -> type[StartEvent]:
        """The StartEvent (subclass) the workflow takes as input."""
        if self._shape is not None:
            return self._shape.start_event
        for spec in self._step_specs().values():
            for accepted in spec.accepted:
                if issubclass(accepted, StartEvent):
                    return accepted
        return StartEvent

    @property
    def stop_event_class(self) -> type[StopEvent]:
        """The StopEvent (subclass) the workflow ends with."""
        if self._shape is not None:
            return self._shape.stop_event
        for spec in self._step_specs().values():
            for emitted in spec.emitted:
                if issubclass(emitted, StopEvent):
                    return emitted
        return StopEvent

    @property
    def events(self) -> list[type[Event]]:
        """Every event type the steps take or return."""
        seen: dict[type[Event], None] = {}
        for spec in self._step_specs().values():
            for kind in (*spec.accepted, *spec.emitted):
                seen[kind] = None
        return list(seen)

    @property
    def store(self) -> Any:
        """Where this workflow's runs are recorded."""
        return self._store

    def _state_type(self) -> type[BaseModel]:
        return self._state_cls

    def _run_semaphore(self) -> asyncio.Semaphore | None:
        if self._num_concurrent_runs is None:
            return None
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self._num_concurrent_runs)
            self._semaphore_loop = loop
        return self._semaphore

    # -- running -------------------------------------------------------------------------
    def run(
        self,
        ctx: Context[Any] | None = None,
        start_event: StartEvent | None = None,
        *,
        run_id: str | None = None,
        store: Store | None = None,
        **kwargs: Any,
    ) -> WorkflowHandler:
        """Start a run and return its handler at once; ``await`` the handler for the result.

        Keyword arguments build the workflow's StartEvent; or pass ``start_event=``. Pass a
        ``ctx`` made with ``Context(workflow)`` to seed state or to keep it across runs.
        ``store`` records this run somewhere else than the workflow's own store.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise WorkflowRuntimeError(
                "Workflow.run() needs a running event loop: use `await workflow.run(...)` "
                "in async code, or `workflow.run_sync(...)` from plain sync code."
            ) from None
        event = self._start_event(start_event, kwargs)
        if ctx is None:
            ctx = Context(self)
        elif not isinstance(ctx, Context):
            raise WorkflowRuntimeError(f"ctx must be a Context, got {type(ctx).__name__}.")
        elif type(ctx._workflow) is not type(self):
            raise WorkflowRuntimeError(
                f"This Context was made for {type(ctx._workflow).__name__}, not "
                f"{type(self).__name__}. Create it with Context(workflow)."
            )
        target = store or self._store
        if ctx._resume_work is not None and getattr(target, "durable", False):
            raise WorkflowRuntimeError(
                "This Context comes from Context.from_dict(): it continues a paused run in "
                "memory, but this workflow's runs are durable (store=...). A durable run "
                "continues from the store: use `await workflow.resume(run_id)` (or "
                "`workflow.send_event(run_id, ...)` to answer it). To continue from the "
                "payload instead, run a workflow built without store=."
            )
        run = self._new_run(ctx, run_id or uuid.uuid4().hex, target)
        ctx._begin(run)
        resume_work, ctx._resume_work = ctx._resume_work, None
        if resume_work is not None:
            run.start_resumed(*resume_work)
        else:
            run.start(event)
        return WorkflowHandler(run)

    async def submit(
        self,
        start_event: StartEvent | None = None,
        *,
        run_id: str | None = None,
        ctx: Context[Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """Record a new durable run without running it here, and return its id: worker
        processes (``riverbed worker``) sharing the store take it and run it. Arguments as
        for :meth:`run`; ``ctx`` seeds the run's state."""
        from riverbed._engine.by_id import create_unowned

        store = self._durable_store("submit()")
        event = self._start_event(start_event, kwargs)
        await self.open_store()
        state = (ctx if ctx is not None else Context(self))._state_store._state
        run_id = run_id or uuid.uuid4().hex
        await create_unowned(self, store, run_id, event, state)
        return run_id

    def _new_run(self, ctx: Context[Any], run_id: str, store: Any) -> Run:
        kind = DurableRun if getattr(store, "durable", False) else Run
        run = kind(
            self,
            ctx,
            run_id=run_id,
            store=store,
            clock=self._clock,
            timeout=self._timeout,
            verbose=self._verbose,
        )
        if isinstance(run, DurableRun):
            run.setup_durable(store)
        # A second run(run_id=...) of a run live here is refused by the store (RunExistsError);
        # it must neither replace the live run here nor remove it when it fails, or
        # send_event(run_id) would continue a second copy and the live handler never end.
        live = self._live.get(run_id)
        if live is None or live.done:
            self._live[run_id] = run

        def forget(_: object) -> None:
            if self._live.get(run_id) is run:
                del self._live[run_id]

        run.result.add_done_callback(forget)
        return run

    # -- durable runs --------------------------------------------------------------------
    def _durable_store(self, what: str) -> DurableStore:
        store = self._store
        if not getattr(store, "durable", False):
            raise WorkflowRuntimeError(
                f"{what} needs a durable store: create the workflow with "
                f"{type(self).__name__}(store='sqlite:///runs.db') (or a SqliteStore)."
            )
        return store  # type: ignore[no-any-return]

    async def open_store(self) -> None:
        """Open the workflow's durable store (done for you by run, resume, send_event)."""
        store = self._store
        if not getattr(store, "durable", False) or getattr(store, "is_open", False):
            return
        loop = asyncio.get_running_loop()
        if self._open_lock is None or self._open_lock[0] is not loop:
            self._open_lock = (loop, asyncio.Lock())
        async with self._open_lock[1]:
            if not getattr(store, "is_open", False):
                await store.open()

    async def resume(self, run_id: str) -> WorkflowHandler:
        """Continue a durable run in this process, e.g. after its process died.

        Committed steps are not run again; steps that were running are. Raises
        ``RunNotFoundError``, ``RunFinishedError`` (it already ended) or ``RunOwnedError``
        (another live process runs it). A run this workflow is running here already is
        returned as it is.
        """
        from riverbed._engine.durable import owner_id

        store = self._durable_store("resume()")
        live = self._live.get(run_id)
        if live is not None and not live.done:
            # This process owns it, so acquire_run would let a second copy run beside it
            # (each copy with its own state and writer lease: lost updates).
            return WorkflowHandler(live)
        await self.open_store()
        snapshot = await store.acquire_run(run_id, owner_id())
        return await self._continue(snapshot)

    async def _continue(self, snapshot: RunSnapshot) -> WorkflowHandler:
        from riverbed._engine.durable import owner_id, unclaimed

        store = self._durable_store("resume()")
        run_id = snapshot.record.run_id
        if snapshot.record.workflow != self.workflow_name:
            await store.release_run(run_id, owner_id(), unclaimed(snapshot))
            raise wrong_workflow(run_id, snapshot.record.workflow, self)
        ctx: Context[Any] = Context(self)
        run = self._new_run(ctx, run_id, store)
        assert isinstance(run, DurableRun)
        ctx._begin(run)
        try:
            await run.restore(snapshot)
        except BaseException:
            self._live.pop(run_id, None)
            await store.release_run(run_id, owner_id(), unclaimed(snapshot))
            raise
        return WorkflowHandler(run)

    async def send_event(
        self,
        run_id: str,
        event: Event,
        *,
        step: str | None = None,
        client_event_id: str | None = None,
        continue_here: bool = True,
    ) -> WorkflowHandler | None:
        """Deliver ``event`` (e.g. a human's answer) to a run by id, from any process, and
        continue the run here if no process is running it. With ``client_event_id`` a
        repeated submission is applied once. Returns the run's handler, or None when
        another live process runs the run: the event is committed and that process picks
        it up (within a fraction of a second) and continues the run.

        With ``continue_here=False`` the event is only committed, and None returned: the
        run is left for worker processes (``riverbed worker``) to continue."""
        live = self._live.get(run_id)
        if live is not None and not live.done:
            handler = WorkflowHandler(live)
            await handler.send_event(event, step, client_event_id=client_event_id)
            return handler
        from riverbed._engine.by_id import ended_run, offline_submit

        store = self._durable_store("send_event(run_id, ...)")
        await self.open_store()
        try:
            snapshot = await offline_submit(self, store, run_id, event, step, client_event_id)
        except RunOwnedError:
            from riverbed._engine.by_id import handoff_submit

            await handoff_submit(self, store, run_id, event, step, client_event_id)
            return None
        except RunFinishedError:
            # A retried submission whose first try was applied (and maybe ended the run)
            # is answered with the ended run, as the store's dedup answers it; only a new
            # event to an ended run is an error.
            if client_event_id is None or not await _was_applied(store, run_id, client_event_id):
                raise
            if not continue_here:
                return None
            return WorkflowHandler(await ended_run(self, store, run_id))
        if not continue_here:
            from riverbed._engine.durable import owner_id

            await store.release_run(run_id, owner_id())
            return None
        return await self._continue(snapshot)

    async def cancel_run(self, run_id: str) -> RunRecord:
        """Cancel a run by id, from any process, and return its record.

        A run this workflow runs here is cancelled like ``handler.cancel_run()``. A durable
        run that no process runs, or that another process runs, is marked cancelled in the
        store: its process notices at its next heartbeat (a third of the store's lease)
        and stops, and nothing it does afterwards can commit. Raises ``RunNotFoundError``,
        or ``RunFinishedError`` if the run already ended.
        """
        live = self._live.get(run_id)
        if live is not None and not live.done:
            await WorkflowHandler(live).cancel_run()
            return await self._record_of(run_id, live)
        store = self._store
        if not getattr(store, "durable", False):
            record = await store.get_run(run_id)  # RunNotFoundError for an unknown id
            if record.status.is_terminal:
                raise _already_ended(record)
            raise WorkflowRuntimeError(
                f"Run {run_id} is not running in this process and its store keeps runs in "
                "memory only, so it cannot be cancelled from here."
            )
        durable = self._durable_store("cancel_run(run_id)")
        await self.open_store()
        record = await durable.get_run(run_id)
        if record.status.is_terminal:
            raise _already_ended(record)
        message = f"WorkflowCancelledByUser: Run {run_id} was cancelled by the user."
        await durable.finish_run(run_id, RunStatus.CANCELLED, None, message)
        record = await durable.get_run(run_id)
        if record.status is not RunStatus.CANCELLED:  # it ended on its own meanwhile
            raise _already_ended(record)
        return record

    async def _record_of(self, run_id: str, run: Run) -> RunRecord:
        try:
            return await self._store.get_run(run_id)  # type: ignore[no-any-return]
        except RunNotFoundError:
            return RunRecord(run_id, self.workflow_name, run.status, 0.0)

    def run_sync(
        self,
        ctx: Context[Any] | None = None,
        start_event: StartEvent | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run to completion from code without an event loop and return the result."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise WorkflowRuntimeError(
                "run_sync() cannot be called while an event loop is running (async code, "
                "Jupyter). Use `await workflow.run(...)` instead."
            )

        async def main() -> Any:
            return await self.run(ctx=ctx, start_event=start_event, **kwargs)

        return asyncio.run(main())

    def _start_event(self, start_event: StartEvent | None, kwargs: dict[str, Any]) -> StartEvent:
        start_cls = self.start_event_class
        if start_event is not None:
            if kwargs:
                raise WorkflowRuntimeError(
                    f"Pass either start_event or keyword arguments to run(), not both (got "
                    f"start_event and {', '.join(sorted(kwargs))})."
                )
            if not isinstance(start_event, start_cls):
                raise WorkflowRuntimeError(
                    f"start_event must be a {start_cls.__name__}, got {type(start_event).__name__}."
                )
            return start_event
        fields = start_cls.model_fields
        if fields:
            known = set(fields) | {f.alias for f in fields.values() if f.alias}
            unknown = sorted(set(kwargs) - known)
            if unknown:
                raise WorkflowRuntimeError(
                    f"run() got keyword arguments that {start_cls.__name__} does not have: "
                    f"{', '.join(unknown)}. Its fields are: {', '.join(sorted(fields))}."
                )
        try:
            return start_cls(**kwargs)
        except ValidationError as exc:
            raise WorkflowRuntimeError(
                f"Failed creating a start event of type {start_cls.__name__!r} with the "
                f"keyword arguments: {kwargs}. {exc}"
            ) from exc


def _already_ended(record: RunRecord) -> RunFinishedError:
    return RunFinishedError(
        f"Run {record.run_id} already ended ({record.status.value}); there is nothing to cancel."
    )


async def _was_applied(store: DurableStore, run_id: str, client_event_id: str) -> bool:
    """Whether an event with this client id entered the run."""
    return any(e.client_event_id == client_event_id for e in await store.read_events(run_id))
