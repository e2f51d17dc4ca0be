"""Observing runs: tracers, verbose output and logging.

A :class:`Tracer` hears when a run starts and ends and when each step attempt starts and
ends. ``riverbed.otel`` provides one that makes OpenTelemetry spans; register your own with
:func:`add_tracer`. The engine asks for the tracers once per run, so a run that nobody
observes pays one attribute check per step and nothing else.

``Workflow(verbose=True)`` prints one line per step start and finish to stdout. Logging goes
to the ``riverbed`` logger tree (``riverbed.engine`` for runs and steps), which has only a
``NullHandler``: configure logging in your application to see it.

- INFO: a run started, completed or was cancelled;
- DEBUG: a step attempt started or finished;
- WARNING: a step attempt failed (with the retry delay, if any), a run failed or timed out.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from riverbed.events import Event

__all__ = [
    "CANCELLED",
    "FAILED",
    "OK",
    "RETRY",
    "Tracer",
    "add_tracer",
    "get_tracers",
    "remove_tracer",
]

logging.getLogger("riverbed").addHandler(logging.NullHandler())
_LOG = logging.getLogger("riverbed.engine")

#: attempt outcomes passed to :meth:`Tracer.attempt_finished`
OK = "ok"
RETRY = "retry"
FAILED = "failed"
CANCELLED = "cancelled"


class Tracer(Protocol):
    """Hooks called by the engine; handles returned by the ``*_started`` methods are opaque
    to riverbed and given back to the matching ``*_finished`` call.

    All four are called on the run's event loop and must be quick and must not raise. The
    engine calls ``run_started`` in the code that starts the run (``workflow.run()``), so
    context variables set there, such as the current span of a parent step, are visible;
    ``attempt_started`` and ``attempt_finished`` are called in the task that runs the step.
    ``attempt_finished`` may also be called from another task when a run ends while some
    of its steps are still running (outcome :data:`CANCELLED`).

    Example::

        class Timings:
            def run_started(self, workflow, run_id, event):
                return run_id

            def run_finished(self, run, status, result, error):
                pass

            def attempt_started(self, run, step, attempt, event):
                return (step, time.perf_counter())

            def attempt_finished(self, span, outcome, result, error, retry_in):
                print(span[0], outcome, time.perf_counter() - span[1])

        riverbed.tracing.add_tracer(Timings())
    """

    def run_started(self, workflow: str, run_id: str, event: Event | None) -> Any:
        """A run starts (``event`` is its start event; None for a resumed run)."""

    def run_finished(
        self, run: Any, status: str, result: Event, error: BaseException | None
    ) -> None:
        """A run ended: ``status`` is a ``RunStatus`` value (``"completed"``, ``"failed"``,
        ``"cancelled"``, ``"timed_out"``), ``result`` the terminal event on the stream."""

    def attempt_started(self, run: Any, step: str, attempt: int, event: Event) -> Any:
        """Attempt number ``attempt`` (from 1) of ``step`` starts on ``event``."""

    def attempt_finished(
        self,
        span: Any,
        outcome: str,
        result: Event | None,
        error: BaseException | None,
        retry_in: float | None,
    ) -> None:
        """An attempt ended: ``outcome`` is :data:`OK` (``result`` is the returned event or
        None), :data:`RETRY` (it failed and runs again in ``retry_in`` seconds),
        :data:`FAILED` or :data:`CANCELLED` (the run ended while it ran)."""


_tracers: tuple[Tracer, ...] = ()


def add_tracer(tracer: Tracer) -> None:
    """Have ``tracer`` observe every run started from now on (in this process). Adding the
    same tracer twice has no effect."""
    global _tracers
    if not any(t is tracer for t in _tracers):
        _tracers = (*_tracers, tracer)


def remove_tracer(tracer: Tracer) -> None:
    """Stop giving new runs to ``tracer`` (runs already going on keep it until they end)."""
    global _tracers
    _tracers = tuple(t for t in _tracers if t is not tracer)


def get_tracers() -> tuple[Tracer, ...]:
    """The tracers registered with :func:`add_tracer`, in order."""
    return _tracers


def _tracer_for_run(verbose: bool) -> Tracer | None:
    """The tracer of a new run: None when nothing observes steps, so the engine skips every
    hook (the common case costs one tuple check and one cached level check)."""
    debug = _LOG.isEnabledFor(logging.DEBUG)
    if not (verbose or debug):
        if not _tracers:
            return None
        if len(_tracers) == 1:
            return _tracers[0]
        return _Fanout(_tracers)
    reporter = _Reporter(verbose, debug)
    return _Fanout((reporter, *_tracers)) if _tracers else reporter


class _Fanout:
    """Several tracers as one; handles are lists of each tracer's handle."""

    __slots__ = ("tracers",)

    def __init__(self, tracers: tuple[Tracer, ...]) -> None:
        self.tracers = tracers

    def run_started(self, workflow: str, run_id: str, event: Event | None) -> Any:
        return [t.run_started(workflow, run_id, event) for t in self.tracers]

    def run_finished(
        self, run: Any, status: str, result: Event, error: BaseException | None
    ) -> None:
        for tracer, handle in zip(self.tracers, run, strict=True):
            tracer.run_finished(handle, status, result, error)

    def attempt_started(self, run: Any, step: str, attempt: int, event: Event) -> Any:
        return [
            t.attempt_started(h, step, attempt, event)
            for t, h in zip(self.tracers, run, strict=True)
        ]

    def attempt_finished(
        self,
        span: Any,
        outcome: str,
        result: Event | None,
        error: BaseException | None,
        retry_in: float | None,
    ) -> None:
        for tracer, handle in zip(self.tracers, span, strict=True):
            tracer.attempt_finished(handle, outcome, result, error, retry_in)


class _Attempt:
    __slots__ = ("attempt", "run_id", "started", "step")

    def __init__(self, run_id: str, step: str, attempt: int) -> None:
        self.run_id = run_id
        self.step = step
        self.attempt = attempt
        self.started = time.perf_counter()


class _Reporter:
    """``verbose`` lines on stdout and DEBUG log records for step attempts. Failures are
    logged at WARNING by the engine itself (:func:`_log_attempt_failed`), whether or not a
    reporter is installed, so they are only printed here."""

    __slots__ = ("debug", "verbose")

    def __init__(self, verbose: bool, debug: bool) -> None:
        self.verbose = verbose
        self.debug = debug

    def run_started(self, workflow: str, run_id: str, event: Event | None) -> Any:
        return run_id

    def run_finished(
        self, run: Any, status: str, result: Event, error: BaseException | None
    ) -> None:
        pass

    def attempt_started(self, run: Any, step: str, attempt: int, event: Event) -> Any:
        what = f"step {step!r} started (attempt {attempt}) on {type(event).__name__}"
        span = _Attempt(run, step, attempt)
        self._emit(span, what, log=True)
        return span

    def attempt_finished(
        self,
        span: Any,
        outcome: str,
        result: Event | None,
        error: BaseException | None,
        retry_in: float | None,
    ) -> None:
        assert isinstance(span, _Attempt)
        what = _attempt_outcome(span.step, outcome, time.perf_counter() - span.started)
        if outcome == OK:
            produced = type(result).__name__ if result is not None else "nothing"
            self._emit(span, f"{what} -> {produced}", log=True)
        elif outcome == CANCELLED:
            self._emit(span, what, log=True)
        elif self.verbose:  # failures are logged by the engine (WARNING)
            self._emit(span, f"{what}: {_failure(error, retry_in)}", log=False)

    def _emit(self, span: _Attempt, what: str, *, log: bool) -> None:
        if self.verbose:
            print(f"[riverbed] run {_short(span.run_id)} {what}")
        if log and self.debug:
            extra = {"run_id": span.run_id, "step": span.step, "attempt": span.attempt}
            _LOG.debug("run %s %s", span.run_id, what, extra=extra)


def _attempt_outcome(step: str, outcome: str, seconds: float) -> str:
    if outcome == OK:
        return f"step {step!r} finished in {_duration(seconds)}"
    if outcome == CANCELLED:
        return f"step {step!r} cancelled after {_duration(seconds)}"
    return f"step {step!r} failed after {_duration(seconds)}"


def _failure(error: BaseException | None, retry_in: float | None) -> str:
    text = _describe(error)
    return text if retry_in is None else f"{text}; retrying in {_duration(retry_in)}"


def _short(run_id: str) -> str:
    # Generated ids (32 hex digits) are shortened like git hashes; ids a user chose are kept.
    if len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id):
        return run_id[:8]
    return run_id


def _duration(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = " ".join(str(error).split())  # one line, whatever the message looks like
    if len(text) > 300:
        text = text[:297] + "..."
    name = type(error).__name__
    return f"{name}: {text}" if text else name


# -- engine logging (cold paths: once per run, or once per failed attempt) -----------------
# They take the workflow, not its name: ``workflow_name`` formats a string, which costs more
# than the level check when nothing logs.
class _Named(Protocol):
    @property
    def workflow_name(self) -> str: ...


def _log_run_started(workflow: _Named, run_id: str, event: Event | None) -> None:
    if _LOG.isEnabledFor(logging.INFO):
        name = workflow.workflow_name
        how = f"on {type(event).__name__}" if event is not None else "(resumed)"
        _LOG.info(
            "run %s of %s started %s",
            run_id,
            name,
            how,
            extra={"run_id": run_id, "workflow": name},
        )


def _log_run_finished(
    workflow: _Named, run_id: str, status: str, started: float, error: BaseException | None
) -> None:
    # ``status`` is a RunStatus, a str enum: comparing it is cheap, its ``.value`` is not.
    level = logging.WARNING if status in ("failed", "timed_out") else logging.INFO
    if _LOG.isEnabledFor(level):
        name = workflow.workflow_name
        why = "" if error is None or level == logging.INFO else f": {_describe(error)}"
        _LOG.log(
            level,
            "run %s of %s %s after %s%s",
            run_id,
            name,
            str(getattr(status, "value", status)).replace("_", " "),
            _duration(time.perf_counter() - started),
            why,
            extra={"run_id": run_id, "workflow": name},
        )


def _log_attempt_failed(
    run_id: str, step: str, attempt: int, error: BaseException, retry_in: float | None
) -> None:
    if _LOG.isEnabledFor(logging.WARNING):
        _LOG.warning(
            "run %s step %r failed (attempt %d): %s",
            run_id,
            step,
            attempt,
            _failure(error, retry_in),
            extra={"run_id": run_id, "step": step, "attempt": attempt},
        )
