"""Questions a run asks at the terminal: ``InputRequiredEvent`` on the stream, answered
with the line typed (or piped) as ``HumanResponseEvent(response=LINE)``."""

from __future__ import annotations

import asyncio
import sys
import threading
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from riverbed.cli.common import json_text
from riverbed.cli.display import RunDisplay
from riverbed.errors import WorkflowError
from riverbed.events import HumanResponseEvent, InputRequiredEvent
from riverbed.handler import WorkflowHandler
from riverbed.serialization import type_key
from riverbed.workflow import Workflow

__all__ = ["History", "NoAnswer", "follow", "question_keys"]


class NoAnswer(Exception):
    """Standard input ended while the run asked a question."""


@dataclass
class History:
    """What a resumed run's stream starts with: ``events`` streamed before the resume,
    among which the first ``answered`` questions were answered."""

    events: int = 0
    answered: int = 0


def question_keys(workflow: Workflow) -> set[str]:
    """Type keys of the questions ``workflow`` may stream."""
    keys = {type_key(InputRequiredEvent)}
    for spec in workflow._step_specs().values():
        keys.update(type_key(t) for t in spec.emitted if issubclass(t, InputRequiredEvent))
    return keys


def _response_class(workflow: Workflow) -> type[HumanResponseEvent]:
    """The HumanResponseEvent (subclass) the workflow's steps take, if exactly one."""
    found = {
        accepted
        for spec in workflow._step_specs().values()
        for accepted in spec.accepted
        if issubclass(accepted, HumanResponseEvent)
    }
    return found.pop() if len(found) == 1 else HumanResponseEvent


def _question(event: InputRequiredEvent) -> str:
    prefix = event.get("prefix")
    if isinstance(prefix, str) and prefix.strip():
        return prefix if prefix.endswith((" ", "\n")) else prefix + " "
    data = event.model_dump()
    shown = json_text(data, indent=None) if data else type(event).__name__
    return f"{shown}\n> "


def _settle(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)


async def _read_line(prompt: str, console: Console) -> str | None:
    """A line typed by the user, or None at end of input. A daemon thread reads it, so a
    run that ends meanwhile (or Ctrl-C) does not wait for the keyboard."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str | None] = loop.create_future()

    def read() -> None:
        line = sys.stdin.readline()
        value = line.rstrip("\r\n") if line else None
        loop.call_soon_threadsafe(_settle, answer, value)

    console.print(prompt, end="", markup=False, highlight=False)
    console.file.flush()
    threading.Thread(target=read, name="riverbed-input", daemon=True).start()
    value = await answer
    if not sys.stdin.isatty():
        # Piped answers are not echoed by a terminal: show them, so the log reads well.
        console.print("" if value is None else value, markup=False, highlight=False)
    return value


async def _ask(
    event: InputRequiredEvent, ended: asyncio.Future[Any], console: Console
) -> str | None:
    """The answer, or None if the run ended (``ended`` is done) before one came."""
    reading = asyncio.ensure_future(_read_line(_question(event), console))
    await asyncio.wait({reading, ended}, return_when=asyncio.FIRST_COMPLETED)
    if not reading.done():
        reading.cancel()
        console.print("")
        return None
    answer = reading.result()
    if answer is None:
        raise NoAnswer
    return answer


async def follow(
    handler: WorkflowHandler,
    ended: asyncio.Future[Any],
    workflow: Workflow,
    display: RunDisplay,
    console: Console,
    history: History,
) -> None:
    """Show the stream and answer its questions, skipping what ``history`` says was
    shown and answered before; ``ended`` completes when the run does. Raises
    :class:`NoAnswer` at the end of standard input."""
    response_cls = _response_class(workflow)
    answered = history.answered
    position = 0
    async for event in handler.stream_events():
        position += 1
        if not isinstance(event, InputRequiredEvent):
            if position > history.events:
                display.streamed(event)
            continue
        if position <= history.events and answered > 0:
            answered -= 1
            continue
        with display.paused():
            answer = await _ask(event, ended, console)
        if answer is None:
            continue  # the run ended while the question was open
        try:
            await handler.send_event(response_cls.model_validate({"response": answer}))
        except WorkflowError:
            if not handler.done():
                raise
            # It ended between the answer and its delivery: the outcome says how.
