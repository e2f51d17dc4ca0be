"""``riverbed run`` and ``riverbed runs resume``: run a workflow in the terminal.

Progress goes to standard error (:mod:`riverbed.cli.display`), the result to standard
output. An ``InputRequiredEvent`` on the stream is asked at the terminal and answered with
a ``HumanResponseEvent(response=...)``. Ctrl-C cancels an in-memory run; a durable run is
left as it is in its store, ready for ``riverbed runs resume``. Exit codes: see
:mod:`riverbed.cli.common`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from riverbed.cli.answers import History, NoAnswer, follow, question_keys
from riverbed.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMED_OUT,
    UsageError,
    absolute_store_url,
    describe_store,
    json_text,
    one_line,
    open_store,
)
from riverbed.cli.display import RunDisplay
from riverbed.cli.watch import watching
from riverbed.errors import (
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunOwnedError,
    WorkflowCancelledByUser,
    WorkflowError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
)
from riverbed.events import StartEvent, StopEvent
from riverbed.handler import WorkflowHandler
from riverbed.stores.base import RunStatus
from riverbed.workflow import Workflow

__all__ = ["Session", "resume_workflow", "run_workflow"]


@dataclass
class Session:
    """How the run is shown and where it can be found again."""

    spec: str
    console: Console
    quiet: bool = False
    #: the store URL the user gave (None: the workflow's own store)
    store_url: str | None = None


def _print_result(value: Any) -> None:
    if isinstance(value, StopEvent):
        value = value.model_dump(mode="json")
    if value is None:
        return
    print(value if isinstance(value, str) else json_text(value), flush=True)


async def _cancelled_elsewhere(handler: WorkflowHandler, workflow: Workflow) -> bool:
    """Whether the store says the run was cancelled (``riverbed runs cancel`` from another
    process), whatever error the run ended with here when its commits were refused."""
    store = workflow.store
    if not getattr(store, "durable", False):
        return False
    try:
        record = await store.get_run(handler.run_id)
    except WorkflowError:
        return False
    return record.status is RunStatus.CANCELLED


async def _settle(handler: WorkflowHandler) -> Any:
    """The run's result, or the exception it ended with (returned, not raised), so the
    task awaiting it can be waited on by several parties and never leaks an error."""
    try:
        return await handler
    except Exception as exc:
        return _Failed(exc)


@dataclass(frozen=True)
class _Failed:
    error: Exception


async def _outcome(
    settled: asyncio.Future[Any],
    handler: WorkflowHandler,
    workflow: Workflow,
    display: RunDisplay,
    console: Console,
) -> int:
    value = await settled
    try:
        if isinstance(value, _Failed):
            raise value.error
    except WorkflowTimeoutError as exc:
        display.stop()
        console.print(f"riverbed: run {handler.run_id} timed out: {one_line(exc)}")
        return EXIT_TIMED_OUT
    except WorkflowCancelledByUser as exc:
        display.stop()
        console.print(f"riverbed: run {handler.run_id} was cancelled: {one_line(exc)}")
        return EXIT_CANCELLED
    except Exception as exc:
        display.stop()
        if await _cancelled_elsewhere(handler, workflow):
            console.print(f"riverbed: run {handler.run_id} was cancelled from another process.")
            return EXIT_CANCELLED
        console.print(
            f"riverbed: run {handler.run_id} failed: {type(exc).__name__}: {one_line(exc)}",
            markup=False,
        )
        return EXIT_FAILED
    display.completed()
    display.stop()
    _print_result(value)
    return EXIT_OK


def _resume_hint(workflow: Workflow, run_id: str, session: Session) -> str:
    url = absolute_store_url(session.store_url or describe_store(workflow.store))
    # MODULE:NAME right after the run id: the order `runs resume --help` shows.
    return f"riverbed runs resume {run_id} {session.spec} --store {url}"


async def _drive(
    workflow: Workflow,
    handler: WorkflowHandler,
    display: RunDisplay,
    session: Session,
    history: History | None = None,
) -> int:
    console = session.console
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    durable = getattr(workflow.store, "durable", False)

    def on_sigint() -> None:
        if interrupted.is_set():
            os._exit(EXIT_INTERRUPTED)  # a second Ctrl-C: leave now
        interrupted.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    # The one task that awaits the handler: never cancelled (that would cancel the run).
    settled = asyncio.ensure_future(_settle(handler))
    following = asyncio.ensure_future(
        follow(handler, settled, workflow, display, console, history or History())
    )
    stop = asyncio.ensure_future(interrupted.wait())
    try:
        await asyncio.wait({following, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
    error = following.exception() if following.done() and not following.cancelled() else None
    if error is not None and not isinstance(error, NoAnswer):
        raise error
    if interrupted.is_set() or error is not None:
        following.cancel()
        display.stop()
        why = "interrupted" if interrupted.is_set() else "no answer (standard input closed)"
        code = EXIT_INTERRUPTED if interrupted.is_set() else EXIT_CANCELLED
        if durable:
            # Leave the run as it is in the store: no cancel, no further commit. Its owner
            # (this process) is gone once we exit, so a resume can take it over at once.
            console.print(
                f"riverbed: {why}; run {handler.run_id} is saved. Continue it with: "
                f"{_resume_hint(workflow, handler.run_id, session)}",
                markup=False,
            )
            console.file.flush()
            sys.stdout.flush()
            os._exit(code)
        await handler.cancel_run()
        await settled
        console.print(f"riverbed: {why}; run {handler.run_id} cancelled.", markup=False)
        return code
    return await _outcome(settled, handler, workflow, display, console)


async def run_workflow(
    workflow: Workflow, start: StartEvent, run_id: str | None, session: Session
) -> int:
    """Run ``workflow`` from ``start``, showing progress; returns the exit code."""
    display = RunDisplay(session.console, quiet=session.quiet)
    await open_store(workflow.store)
    if run_id is not None and getattr(workflow.store, "durable", False):
        try:
            await workflow.store.get_run(run_id)
        except RunNotFoundError:
            pass
        else:
            raise UsageError(
                f"Run id {run_id!r} is already taken in {describe_store(workflow.store)}; "
                f"continue it with `riverbed runs resume {run_id}`, or pick another id."
            )
    run_id = run_id or uuid.uuid4().hex  # known before the run starts, for the watcher
    try:
        with watching(run_id, display):
            handler = workflow.run(start_event=start, run_id=run_id)
    except RunExistsError as exc:
        raise UsageError(one_line(exc)) from exc
    display.start(workflow.workflow_name, handler.run_id)
    return await _drive(workflow, handler, display, session)


async def submit_workflow(workflow: Workflow, start: StartEvent, run_id: str | None) -> int:
    """Record a run for worker processes without running it; print its id."""
    if not getattr(workflow.store, "durable", False):
        raise UsageError(
            "--submit records the run for `riverbed worker` processes, which need a shared "
            "durable store: pass --store sqlite:///runs.db (or a postgresql:// URL)."
        )
    await open_store(workflow.store)
    try:
        new_id = await workflow.submit(start, run_id=run_id)
    except RunExistsError as exc:
        raise UsageError(one_line(exc)) from exc
    print(new_id)
    return 0


async def resume_workflow(workflow: Workflow, run_id: str, session: Session) -> int:
    """Continue durable run ``run_id``, showing progress; returns the exit code.

    The resumed stream starts with the events the run streamed before; they are not shown
    again, and of the questions among them only those no answer followed are asked.
    """
    display = RunDisplay(session.console, quiet=session.quiet)
    store = workflow.store
    if not getattr(store, "durable", False):
        raise UsageError(
            f"{session.spec} keeps its runs in memory; resume needs the durable store the "
            "run was recorded in: pass --store sqlite:///runs.db."
        )
    await open_store(store)
    try:
        streamed = await store.read_stream(run_id, 0, 1_000_000)
        answers = sum(1 for e in await store.read_events(run_id) if e.source_step is None)
        with watching(run_id, display):
            handler = await workflow.resume(run_id)
    except (RunNotFoundError, RunFinishedError) as exc:
        where = absolute_store_url(describe_store(store))
        if isinstance(exc, RunNotFoundError):
            message = f"No run {run_id!r} in {where}. List the runs with `riverbed runs list"
        else:
            message = (
                f"Run {run_id!r} already finished: there is nothing to resume. See its "
                f"outcome with `riverbed runs show {run_id}"
            )
        raise UsageError(f"{message} --store {where}`.") from exc
    except (RunOwnedError, WorkflowRuntimeError) as exc:
        raise UsageError(one_line(exc)) from exc
    keys = question_keys(workflow)
    asked = sum(1 for row in streamed if row.type_key in keys)
    display.start(workflow.workflow_name, run_id)
    # Every event from outside but the start event answered one earlier question.
    history = History(len(streamed), min(asked, max(0, answers - 1)))
    return await _drive(workflow, handler, display, session, history)
