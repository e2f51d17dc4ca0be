"""A run started by a script (``python app.py``, where the module is ``__main__``) stores
the names the module has when imported, so the CLI (which imports ``app.py``) continues it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from riverbed import (
        Event, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent, Workflow, step,
    )


    class Asked(Event):
        name: str


    class Ask(Workflow):
        @step
        async def ask(self, ev: StartEvent) -> InputRequiredEvent:
            return InputRequiredEvent(prefix="name?")

        @step
        async def greet(self, ev: HumanResponseEvent) -> Asked:
            return Asked(name=ev.response)

        @step
        async def done(self, ev: Asked) -> StopEvent:
            return StopEvent(result=f"hi {ev.name}")


    async def main() -> None:
        handler = Ask(store=sys.argv[1]).run(run_id="r1")
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                return  # leave the run waiting in the store


    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def test_a_run_started_by_a_script_is_resumed_by_the_cli(tmp_path: Path) -> None:
    script = tmp_path / "greeter.py"
    script.write_text(SCRIPT)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    started = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 0, started.stderr
    conn = sqlite3.connect(tmp_path / "runs.db")
    workflow, status = conn.execute("SELECT workflow, status FROM runs").fetchone()
    keys = {row[0] for row in conn.execute("SELECT type_key FROM events")}
    conn.close()
    assert (workflow, status) == ("greeter.Ask", "running")
    assert all(not key.startswith("__main__.") for key in keys)

    resumed = subprocess.run(
        [
            *(sys.executable, "-m", "riverbed.cli", "runs", "resume", "r1", f"{script}:Ask"),
            *("--store", url, "--quiet"),
        ],
        input="ana\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().endswith("hi ana")
