"""``Workflow(verbose=True)`` lines on stdout, and records on the ``riverbed`` loggers."""

import asyncio
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from riverbed import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledByUser,
    WorkflowTimeoutError,
    catch_error,
    step,
)
from riverbed.events import StepFailedEvent
from riverbed.testing import FakeClock

pytestmark = pytest.mark.usefixtures("hang_guard")

#: a duration as verbose prints it
D = r"\d+(\.\d)? (ms|s)"


class Question(Event):
    text: str


class Drafted(Event):
    text: str


class Writer(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> Question:
        return Question(text=ev.topic)

    @step
    async def draft(self, ev: Question) -> Drafted:
        return Drafted(text=ev.text.upper())

    @step
    async def publish(self, ev: Drafted) -> StopEvent:
        return StopEvent(result=ev.text)


def _match(lines: list[str], patterns: list[str]) -> None:
    assert len(lines) == len(patterns), lines
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


async def test_verbose_prints_one_line_per_step_start_and_finish(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await Writer(verbose=True).run(topic="rivers", run_id="r-1") == "RIVERS"
    out = capsys.readouterr().out
    _match(
        out.splitlines(),
        [
            r"\[riverbed\] run r-1 step 'ask' started \(attempt 1\) on StartEvent",
            rf"\[riverbed\] run r-1 step 'ask' finished in {D} -> Question",
            r"\[riverbed\] run r-1 step 'draft' started \(attempt 1\) on Question",
            rf"\[riverbed\] run r-1 step 'draft' finished in {D} -> Drafted",
            r"\[riverbed\] run r-1 step 'publish' started \(attempt 1\) on Drafted",
            rf"\[riverbed\] run r-1 step 'publish' finished in {D} -> StopEvent",
        ],
    )


async def test_a_generated_run_id_is_shortened(capsys: pytest.CaptureFixture[str]) -> None:
    handler = Writer(verbose=True).run(topic="x")
    await handler
    first = capsys.readouterr().out.splitlines()[0]
    assert handler.run_id is not None
    assert first.startswith(f"[riverbed] run {handler.run_id[:8]} step 'ask' started")


async def test_verbose_reports_failures_retries_and_nothing_returned(
    capsys: pytest.CaptureFixture[str], clock: FakeClock
) -> None:
    class Flow(Workflow):
        calls = 0

        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=3, delay=1.0))
        async def work(self, ctx: Context, ev: StartEvent) -> Question | None:
            type(self).calls += 1
            if self.calls == 1:
                raise ValueError("bad input:\n  line two")
            if self.calls == 2:
                raise ConnectionError()
            ctx.send_event(Question(text="q"))
            return None

        @step
        async def answer(self, ev: Question) -> StopEvent:
            raise KeyError("gone")

    with pytest.raises(KeyError):
        await Flow(verbose=True, clock=clock).run(run_id="r-2")
    _match(
        capsys.readouterr().out.splitlines(),
        [
            r"\[riverbed\] run r-2 step 'work' started \(attempt 1\) on StartEvent",
            # A message of several lines is printed on one line.
            rf"\[riverbed\] run r-2 step 'work' failed after {D}: ValueError: bad input: line "
            r"two; retrying in 1\.0 s",
            r"\[riverbed\] run r-2 step 'work' started \(attempt 2\) on StartEvent",
            rf"\[riverbed\] run r-2 step 'work' failed after {D}: ConnectionError; "
            r"retrying in 1\.0 s",
            r"\[riverbed\] run r-2 step 'work' started \(attempt 3\) on StartEvent",
            rf"\[riverbed\] run r-2 step 'work' finished in {D} -> nothing",
            r"\[riverbed\] run r-2 step 'answer' started \(attempt 1\) on Question",
            rf"\[riverbed\] run r-2 step 'answer' failed after {D}: KeyError: 'gone'",
        ],
    )


async def test_verbose_shows_a_recovery_step(capsys: pytest.CaptureFixture[str]) -> None:
    class Flow(Workflow):
        @step
        async def work(self, ev: StartEvent) -> StopEvent:
            raise RuntimeError("boom")

        @catch_error
        async def recover(self, ev: StepFailedEvent) -> StopEvent:
            return StopEvent(result="recovered")

    assert await Flow(verbose=True).run(run_id="r-3") == "recovered"
    _match(
        capsys.readouterr().out.splitlines(),
        [
            r"\[riverbed\] run r-3 step 'work' started \(attempt 1\) on StartEvent",
            rf"\[riverbed\] run r-3 step 'work' failed after {D}: RuntimeError: boom",
            r"\[riverbed\] run r-3 step 'recover' started \(attempt 1\) on StepFailedEvent",
            rf"\[riverbed\] run r-3 step 'recover' finished in {D} -> StopEvent",
        ],
    )


async def test_verbose_shows_steps_cancelled_with_their_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = asyncio.Event()

    class Flow(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            started.set()
            await asyncio.sleep(60)
            return StopEvent()

    handler = Flow(verbose=True).run(run_id="r-4")
    await started.wait()
    await handler.cancel_run()
    with pytest.raises(WorkflowCancelledByUser):
        await handler
    _match(
        capsys.readouterr().out.splitlines(),
        [
            r"\[riverbed\] run r-4 step 'wait' started \(attempt 1\) on StartEvent",
            rf"\[riverbed\] run r-4 step 'wait' cancelled after {D}",
        ],
    )


async def test_a_nested_run_prints_its_own_lines(capsys: pytest.CaptureFixture[str]) -> None:
    class Outer(Workflow):
        @step
        async def delegate(self, ev: StartEvent) -> StopEvent:
            inner = Writer(verbose=True).run(topic="in", run_id="inner")
            return StopEvent(result=await inner)

    assert await Outer(verbose=True).run(run_id="outer") == "IN"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[riverbed] run outer step 'delegate' started")
    assert [line.split(" step ")[0] for line in lines[1:-1]] == ["[riverbed] run inner"] * 6
    assert re.fullmatch(rf".* run outer step 'delegate' finished in {D} -> StopEvent", lines[-1])


async def test_a_durable_run_is_verbose_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    workflow = Writer(verbose=True, store=f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        assert await workflow.run(topic="d", run_id="r-5") == "D"
    finally:
        await workflow.store.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert lines[3].startswith("[riverbed] run r-5 step 'draft' finished in ")
    assert lines[3].endswith(" -> Drafted")


async def test_a_durable_run_prints_failures_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, clock: FakeClock
) -> None:
    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=1.0))
        async def work(self, ev: StartEvent) -> StopEvent:
            raise ValueError("nope")

    workflow = Flow(verbose=True, clock=clock, store=f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with pytest.raises(ValueError, match="nope"):
            await workflow.run(run_id="r-10")
    finally:
        await workflow.store.close()
    _match(
        capsys.readouterr().out.splitlines(),
        [
            r"\[riverbed\] run r-10 step 'work' started \(attempt 1\) on StartEvent",
            rf"\[riverbed\] run r-10 step 'work' failed after {D}: ValueError: nope; "
            r"retrying in 1\.0 s",
            r"\[riverbed\] run r-10 step 'work' started \(attempt 2\) on StartEvent",
            rf"\[riverbed\] run r-10 step 'work' failed after {D}: ValueError: nope",
        ],
    )


async def test_quiet_by_default(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="riverbed")
    assert await Writer().run(topic="q") == "Q"
    assert capsys.readouterr().out == ""  # logging on does not print
    assert caplog.records  # but it logs


# -- logging -------------------------------------------------------------------------------
def _records(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


async def test_runs_are_logged_at_info_and_steps_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="riverbed")
    await Writer(workflow_name="writer").run(topic="a", run_id="r-6")
    records = _records(caplog)
    assert {name for name, _, _ in records} == {"riverbed.engine"}
    assert [(level, message) for _, level, message in records if level != logging.DEBUG] == [
        (logging.INFO, "run r-6 of writer started on StartEvent"),
        (logging.INFO, records[-1][2]),
    ]
    assert re.fullmatch(rf"run r-6 of writer completed after {D}", records[-1][2])
    debug = [message for _, level, message in records if level == logging.DEBUG]
    assert debug[0] == "run r-6 step 'ask' started (attempt 1) on StartEvent"
    assert re.fullmatch(rf"run r-6 step 'publish' finished in {D} -> StopEvent", debug[-1])
    assert len(debug) == 6
    step_record = next(r for r in caplog.records if r.levelno == logging.DEBUG)
    extra = (step_record.run_id, step_record.step, step_record.attempt)  # type: ignore[attr-defined]
    assert extra == ("r-6", "ask", 1)


async def test_info_logs_runs_but_not_steps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="riverbed")
    handler = Writer(workflow_name="writer").run(topic="a", run_id="r-7")
    await handler
    assert [level for _, level, _ in _records(caplog)] == [logging.INFO, logging.INFO]
    assert handler._run.tracer is None  # no step hooks at INFO


async def test_failures_and_retries_are_warnings(
    caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    class Flow(Workflow):
        @step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=2, delay=0.5))
        async def work(self, ev: StartEvent) -> StopEvent:
            raise ValueError("nope")

    caplog.set_level(logging.WARNING, logger="riverbed")
    with pytest.raises(ValueError, match="nope"):
        await Flow(workflow_name="flow", clock=clock).run(run_id="r-8")
    records = _records(caplog)
    assert records[:2] == [
        (
            "riverbed.engine",
            logging.WARNING,
            "run r-8 step 'work' failed (attempt 1): ValueError: nope; retrying in 500 ms",
        ),
        (
            "riverbed.engine",
            logging.WARNING,
            "run r-8 step 'work' failed (attempt 2): ValueError: nope",
        ),
    ]
    assert len(records) == 3
    assert records[2][1] == logging.WARNING
    assert re.fullmatch(rf"run r-8 of flow failed after {D}: ValueError: nope", records[2][2])


async def test_a_timed_out_run_is_a_warning(
    caplog: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    class Stuck(Workflow):
        @step
        async def wait(self, ev: StartEvent) -> StopEvent:
            await asyncio.Event().wait()
            return StopEvent()

    caplog.set_level(logging.INFO, logger="riverbed")
    with pytest.raises(WorkflowTimeoutError):
        await Stuck(workflow_name="stuck", timeout=2, clock=clock).run(run_id="r-9")
    _, level, message = _records(caplog)[-1]
    assert level == logging.WARNING
    assert message.startswith("run r-9 of stuck timed out after ")
    assert "WorkflowTimeoutError: Operation timed out after 2 seconds." in message


def test_the_library_adds_no_handler_and_prints_nothing_by_itself() -> None:
    assert [type(h) for h in logging.getLogger("riverbed").handlers] == [logging.NullHandler]
    # Without the NullHandler, Python would print the WARNING of a failed run to stderr.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import riverbed\n"
            "class W(riverbed.Workflow):\n"
            "    @riverbed.step\n"
            "    async def go(self, ev: riverbed.StartEvent) -> riverbed.StopEvent:\n"
            "        raise ValueError('x')\n"
            "try:\n"
            "    W().run_sync()\n"
            "except ValueError:\n"
            "    print('raised')\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "raised\n", "")
