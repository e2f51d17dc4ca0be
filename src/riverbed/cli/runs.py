"""``riverbed runs list | show | cancel | prune``: read and manage the runs in a durable
store without running them (``runs resume`` is in :mod:`riverbed.cli.running`)."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from riverbed.cli.common import UsageError, describe_store, json_text, one_line, open_store
from riverbed.errors import RunFinishedError, RunNotFoundError
from riverbed.inspection import (
    RunDetails,
    WorkView,
    read_run,
    record_to_dict,
    type_name,
    waiting_runs,
    waits_from_outside,
)
from riverbed.stores._ownership import owner_is_alive
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.workflow import Workflow

__all__ = ["cancel_run", "list_runs", "parse_age", "prune_runs", "show_run"]

_STATUS_STYLE = {
    RunStatus.RUNNING: "cyan",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "yellow",
    RunStatus.TIMED_OUT: "magenta",
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``"7d"`` -> seconds; units s, m, h, d, w (``"90m"``, ``"1.5h"``, ``"2w"``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if match is None:
        raise UsageError(
            f"--older-than takes a number and a unit (s, m, h, d, w), like 7d or 12h; got {text!r}."
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _duration(record: RunRecord) -> str:
    end = record.finished_at if record.finished_at is not None else time.time()
    seconds = max(0.0, end - record.started_at)
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _short(text: Any, width: int = 60) -> str:
    flat = one_line(str(text)) if text is not None else ""
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def _get(store: Any, run_id: str) -> RunRecord:
    try:
        record: RunRecord = await store.get_run(run_id)
    except RunNotFoundError as exc:
        raise UsageError(
            f"No run {run_id!r} in {describe_store(store)}. List the runs with "
            f"`riverbed runs list --store {describe_store(store)}`."
        ) from exc
    return record


async def list_runs(
    store: Any,
    console: Console,
    *,
    status: str | None,
    workflow: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> int:
    """Print a table (or JSON) of runs, newest first."""
    await open_store(store)
    records: list[RunRecord]
    if status == "waiting":
        records = await waiting_runs(store, workflow, limit, offset)
        waiting = {r.run_id for r in records}
    else:
        wanted = RunStatus(status) if status else None
        records = await store.list_runs(
            workflow=workflow, status=wanted, limit=limit, offset=offset
        )
        waiting = {
            r.run_id
            for r in records
            if r.status is RunStatus.RUNNING and await waits_from_outside(store, r.run_id, r)
        }
    if as_json:
        print(json_text([{**record_to_dict(r), "waiting": r.run_id in waiting} for r in records]))
        return 0
    if not records:
        console.print("No runs.")
        return 0
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("RUN ID", "WORKFLOW", "STATUS", "STARTED", "DURATION"):
        table.add_column(column, no_wrap=True)
    table.add_column("RESULT / ERROR", no_wrap=True, overflow="ellipsis", max_width=60)
    for record in records:
        style = _STATUS_STYLE.get(record.status, "")
        result = record_to_dict(record)["result"]
        outcome = record.error or ("" if result is None else json_text(result, indent=None))
        shown = "waiting" if record.run_id in waiting else record.status.value
        table.add_row(
            record.run_id,
            record.workflow,  # in full: the name `runs list --workflow` matches
            f"[{'yellow' if record.run_id in waiting else style}]{shown}[/]",
            _when(record.started_at),
            _duration(record),
            escape(_short(outcome, 50)),
        )
    console.print(table)
    return 0


def _timeline_table(details: RunDetails) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    for column in ("AT", "WHAT", "STEP", "EVENT", "ATTEMPT", "DETAIL"):
        table.add_column(column)
    begin = details.record.started_at
    given_up = details.given_up
    for row in details.timeline:
        at = f"+{max(0.0, row.at - begin):.3f}s"
        if row.kind == "event":
            source = f"from {row.source_step}" if row.source_step else "from outside"
            what = "[blue]event[/]"
            name = type_name(row.type_key or "?")
            detail = f"{escape(name)} {source}"
            step = ""
        elif row.kind == "commit" and (row.event_seq, row.step or "", row.attempt) in given_up:
            what, step = "[green]commit[/]", row.step or ""
            detail = "records the failure above"
        elif row.kind == "commit":
            what, step = "[green]commit[/]", row.step or ""
            took = row.duration
            detail = f"took {took:.3f}s" if took is not None else ""
        else:
            retry = "retrying" if row.retry_at is not None else "gave up"
            what, step = "[red]failure[/]", row.step or ""
            detail = f"{retry}: {escape(_short(row.error, 70))}"
        attempt = "" if row.attempt is None else str(row.attempt)
        table.add_row(at, what, escape(step), f"#{row.event_seq}", attempt, detail)
    return table


def _owner_line(store: Any, details: RunDetails) -> str:
    """Who executes a running run, and whether that process still looks alive."""
    record = details.record
    owner = record.owner
    if owner is None:
        if any(w.status != "running" for w in details.open_work) or (
            details.open_work and not details.waiting
        ):
            return (
                "executed by: no process; `riverbed runs resume` or a `riverbed worker` "
                "continues it"
            )
        return "executed by: no process (nothing to do until an answer comes)"
    now = time.time()
    heartbeat = record.owner_heartbeat
    seen = "" if heartbeat is None else f", last heartbeat {max(now - heartbeat, 0.0):.0f}s ago"
    lease = float(getattr(store, "lease_seconds", 30.0))
    if not owner_is_alive(owner, heartbeat, now, lease):
        return (
            f"executed by: {escape(owner)}{seen} [yellow](gone: `riverbed runs resume` or "
            "a `riverbed worker` continues the run)[/]"
        )
    return f"executed by: {escape(owner)}{seen}"


def _work_line(work: WorkView) -> str:
    """``running: step S on #N Type (attempt 2)`` or ``pending: ..., retry at T``."""
    what = f"step {escape(work.step)} on #{work.event_seq} {escape(work.event_type)}"
    if work.status == "running":
        return f"[cyan]running[/]: {what} (attempt {work.attempts})"
    later = f", retry at {_when(work.not_before)}" if work.not_before > time.time() else ""
    tried = f" after {work.attempts} attempt(s)" if work.attempts else ""
    return f"[cyan]{escape(work.status)}[/]: {what}{tried}{later}"


async def show_run(store: Any, run_id: str, console: Console, *, as_json: bool) -> int:
    """Print one run: record, timeline, state and result (or all of it as JSON)."""
    await open_store(store)
    await _get(store, run_id)
    details = await read_run(store, run_id)
    if as_json:
        print(json_text(details.to_dict()))
        return 0
    record = details.record
    style = _STATUS_STYLE.get(record.status, "")
    console.print(f"[bold]run {escape(record.run_id)}[/]  {escape(record.workflow)}")
    console.print(
        f"status [{style}]{record.status.value}[/]   started {_when(record.started_at)}   "
        f"finished {_when(record.finished_at)}   duration {_duration(record)}"
    )
    failures = sum(1 for a in details.attempts if a.outcome != "committed")
    console.print(
        f"{len(details.events)} events, {len(details.attempts)} attempts ({failures} failed), "
        f"{len(details.stream)} streamed"
    )
    for wait in details.waiting:
        needs = f" with {json_text(wait.requirements, indent=None)}" if wait.requirements else ""
        until = f", times out {_when(wait.timeout_at)}" if wait.timeout_at is not None else ""
        console.print(
            f"[yellow]waiting[/]: step {escape(wait.step)} waits for "
            f"{escape(wait.event_type)}{escape(needs)}{until}"
        )
    if not record.status.is_terminal:
        console.print(_owner_line(store, details))
    waits = {wait.step for wait in details.waiting}
    for work in details.open_work:
        if not (work.status == "running" and work.step in waits):  # said above: it waits
            console.print(_work_line(work))
    if details.waiting_for_input:
        console.print(
            "[yellow]waiting for input[/]: the run asked (InputRequiredEvent) and waits for "
            "the answer; `riverbed runs resume` asks it at the terminal"
        )
        asked = details.question
        if asked is not None:
            console.print(
                f"  asks: {escape(asked.type)} {escape(json_text(asked.data, indent=None))}"
            )
    console.print("\n[bold]Timeline[/]")
    console.print(_timeline_table(details))
    console.print(f"\n[bold]State[/] [dim]({escape(type_name(details.state_type))})[/]")
    console.print(json_text(details.state), markup=False, highlight=False)
    if record.error:
        console.print("\n[bold red]Error[/]")
        console.print(record.error, markup=False, highlight=False)
    elif record.status is RunStatus.COMPLETED:
        console.print("\n[bold]Result[/]")
        console.print(json_text(details.result), markup=False, highlight=False)
    return 0


async def cancel_run(store: Any, run_id: str, console: Console) -> int:
    """Cancel a run by id; the process running it (if any) stops at its next heartbeat."""
    await open_store(store)
    await _get(store, run_id)
    # Cancelling by id needs no steps: a bare Workflow on the store does it.
    workflow = Workflow(disable_validation=True, store=store)
    try:
        record = await workflow.cancel_run(run_id)
    except RunFinishedError as exc:
        raise UsageError(one_line(exc)) from exc
    console.print(f"Run {record.run_id} {record.status.value}.")
    return 0


async def prune_runs(store: Any, older_than: str, console: Console) -> int:
    """Delete runs that finished more than ``older_than`` ago; running runs are kept."""
    seconds = parse_age(older_than)
    await open_store(store)
    deleted: int = await store.delete_runs(time.time() - seconds)
    console.print(f"Deleted {deleted} finished run(s) older than {older_than}.")
    return 0
