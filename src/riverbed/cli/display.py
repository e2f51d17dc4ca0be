"""Live progress of one run in the terminal, with ``rich``, on standard error.

On a terminal a live panel shows each step (running, done, failed) and the elapsed time,
and streamed events scroll above it. Elsewhere (a pipe, a CI log) the same facts are
printed as one line each, so the output can be read and tested. The result goes to
standard output, never here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from riverbed.events import Event, StopEvent

__all__ = ["RunDisplay"]

_MAX_FIELDS = 160


@dataclass
class _StepLine:
    running: int = 0
    done: int = 0
    failed: int = 0
    last: str = ""


def _fields(event: Event) -> str:
    try:
        data = event.model_dump(mode="json")
    except Exception:
        data = {k: repr(v) for k, v in event.model_dump().items()}
    text = " ".join(f"{k}={v!r}" for k, v in data.items())
    return text if len(text) <= _MAX_FIELDS else text[: _MAX_FIELDS - 1] + "…"


class RunDisplay:
    """What a person watching a run sees. A :class:`~riverbed.cli.watch.StepListener`.

    ``quiet`` prints nothing but prompts and the final line.
    """

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.started = time.monotonic()
        self.run_id = ""
        self.title = ""
        self._steps: dict[str, _StepLine] = {}
        self._live: Live | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self, title: str, run_id: str) -> None:
        """Begin showing run ``run_id`` of workflow ``title``."""
        self.title, self.run_id = title, run_id
        self.started = time.monotonic()
        if self.quiet:
            return
        if self.console.is_terminal:
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=8,
                transient=True,
            )
            self._live.start()
        self.log(f"run [bold]{escape(run_id)}[/] of {escape(title)}")

    def stop(self) -> None:
        """Stop the live panel (leaves a summary line on a terminal)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
            summary = ", ".join(f"{name} x{line.done}" for name, line in self._steps.items())
            if summary:
                self.console.print(f"[dim]steps: {escape(summary)}[/]", highlight=False)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hide the live panel while a person types an answer."""
        live = self._live
        if live is not None:
            live.stop()
        try:
            yield
        finally:
            if live is not None and self._live is live:
                live.start()

    @property
    def elapsed(self) -> float:
        """Seconds since the run was shown."""
        return time.monotonic() - self.started

    def log(self, markup: str) -> None:
        """One line above the live panel (or on its own without one)."""
        if not self.quiet:
            self.console.print(f"[dim]{self.elapsed:7.2f}s[/] {markup}", highlight=False)

    # -- step transitions (StepListener) ---------------------------------------------
    def _line(self, step: str) -> _StepLine:
        line = self._steps.get(step)
        if line is None:
            line = self._steps[step] = _StepLine()
        return line

    def step_started(self, step: str, attempt: int) -> None:
        line = self._line(step)
        line.running += 1
        if self._live is None:
            again = f" (attempt {attempt})" if attempt > 1 else ""
            self.log(f"[cyan]>[/] {escape(step)}{again}")

    def step_committed(self, step: str, produced: str | None) -> None:
        line = self._line(step)
        line.running = max(0, line.running - 1)
        line.done += 1
        line.last = produced or ""
        if self._live is None:
            out = f" -> {escape(produced)}" if produced else ""
            self.log(f"[green]done[/] {escape(step)}{out}")

    def step_failed(self, step: str, attempt: int, error: str, retrying: bool) -> None:
        line = self._line(step)
        line.running = max(0, line.running - 1)
        line.failed += 1
        what = "failed, will retry" if retrying else "failed"
        number = f" attempt {attempt}" if attempt else ""
        self.log(f"[red]{what}[/] {escape(step)}{number}: {escape(error.splitlines()[0])}")

    # -- stream ----------------------------------------------------------------------
    def streamed(self, event: Event) -> None:
        """An event the run wrote to its stream (the terminal event is not shown)."""
        if isinstance(event, StopEvent):
            return
        name = type(event).__name__
        self.log(f"[magenta]event[/] {escape(name)} {escape(_fields(event))}".rstrip())

    def _render(self) -> RenderableType:
        table = Table.grid(padding=(0, 2))
        table.add_column()
        table.add_column(justify="right")
        table.add_column()
        for name, line in self._steps.items():
            if line.running:
                state = Text(f"running {line.running}", style="cyan")
            elif line.failed and not line.done:
                state = Text("failed", style="red")
            else:
                state = Text("done", style="green")
            counts = f"x{line.done}" + (f" ({line.failed} failed)" if line.failed else "")
            table.add_row(Text(name, style="bold"), counts, state)
        header = Text.assemble(
            (f"{self.title} ", "bold"), (self.run_id, "dim"), f"  {self.elapsed:.1f}s"
        )
        return Group(header, table)

    def completed(self) -> None:
        """Say the run ended well (its result goes to standard output, not here)."""
        self.log(f"[green bold]completed[/] in {self.elapsed:.2f}s")
