"""OpenTelemetry spans for riverbed runs (needs the ``otel`` extra).

Call :func:`instrument` once, after configuring your tracer provider::

    import riverbed.otel

    riverbed.otel.instrument()  # or instrument(tracer_provider=provider)

Every run then makes a span ``run <workflow name>``, and every step attempt a span
``step <step name>``, a child of its run's span (also when steps run concurrently). A run
started inside a step (a nested workflow) is a child of that step attempt's span, and spans
your own code opens inside a step are children of the step's span. A run started outside
any step is a child of the span current where ``workflow.run()`` was called.

Attributes: ``riverbed.workflow``, ``riverbed.run_id``, ``riverbed.step``,
``riverbed.attempt``, ``riverbed.event_in`` and ``riverbed.event_out`` (event class names),
``riverbed.outcome`` (attempts: ``ok``, ``retry``, ``failed``, ``cancelled``),
``riverbed.status`` (runs: ``completed``, ``failed``, ``cancelled``, ``timed_out``) and
``riverbed.retry_in_s``. A failed attempt, or a run that failed or timed out, records the
exception and has the error status.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("riverbed.otel needs OpenTelemetry: pip install 'riverbed[otel]'") from exc

from riverbed import __version__
from riverbed.tracing import CANCELLED, OK, add_tracer, remove_tracer

if TYPE_CHECKING:
    from riverbed.events import Event

__all__ = ["OtelTracer", "instrument", "uninstrument"]


class _RunSpan:
    __slots__ = ("context", "run_id", "span", "workflow")

    def __init__(
        self, span: trace.Span, context: otel_context.Context, workflow: str, run_id: str
    ) -> None:
        self.span = span
        #: the context current where the run started, with the run's span in it
        self.context = context
        self.workflow = workflow
        self.run_id = run_id


class _AttemptSpan:
    __slots__ = ("span", "task", "token")

    def __init__(self, span: trace.Span, token: Any, task: asyncio.Task[Any] | None) -> None:
        self.span = span
        self.token = token
        self.task = task


class OtelTracer:
    """A :class:`riverbed.tracing.Tracer` that makes OpenTelemetry spans. :func:`instrument`
    creates and registers one; make your own to register it with
    :func:`riverbed.tracing.add_tracer` yourself."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer_provider = tracer_provider
        self._tracer = trace.get_tracer("riverbed", __version__, tracer_provider=tracer_provider)

    def run_started(self, workflow: str, run_id: str, event: Event | None) -> Any:
        """Open the run's span, a child of the span current here."""
        attributes: dict[str, str] = {"riverbed.workflow": workflow, "riverbed.run_id": run_id}
        if event is not None:
            attributes["riverbed.event_in"] = type(event).__name__
        current = otel_context.get_current()
        span = self._tracer.start_span(f"run {workflow}", current, attributes=attributes)
        return _RunSpan(span, trace.set_span_in_context(span, current), workflow, run_id)

    def run_finished(
        self, run: Any, status: str, result: Event, error: BaseException | None
    ) -> None:
        """Close the run's span with its status and terminal event."""
        span = run.span
        span.set_attribute("riverbed.status", status)
        span.set_attribute("riverbed.event_out", type(result).__name__)
        if error is not None and status in ("failed", "timed_out"):
            _record_error(span, error)
        span.end()

    def attempt_started(self, run: Any, step: str, attempt: int, event: Event) -> Any:
        """Open the attempt's span under the run's span and make it current in the step's
        task, for spans opened by the step and runs it starts."""
        span = self._tracer.start_span(
            f"step {step}",
            run.context,
            attributes={
                "riverbed.workflow": run.workflow,
                "riverbed.run_id": run.run_id,
                "riverbed.step": step,
                "riverbed.attempt": attempt,
                "riverbed.event_in": type(event).__name__,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, run.context))
        return _AttemptSpan(span, token, _current_task())

    def attempt_finished(
        self,
        span: Any,
        outcome: str,
        result: Event | None,
        error: BaseException | None,
        retry_in: float | None,
    ) -> None:
        """Close the attempt's span with its outcome."""
        otel_span = span.span
        otel_span.set_attribute("riverbed.outcome", outcome)
        if result is not None:
            otel_span.set_attribute("riverbed.event_out", type(result).__name__)
        if retry_in is not None:
            otel_span.set_attribute("riverbed.retry_in_s", retry_in)
        if error is not None and outcome not in (OK, CANCELLED):
            _record_error(otel_span, error)
        # The context can only be restored in the task that set it; an attempt ended from
        # elsewhere (its run ended meanwhile) belongs to a task that is being cancelled.
        if span.task is _current_task():
            otel_context.detach(span.token)
        otel_span.end()


def _record_error(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


_installed: OtelTracer | None = None


def instrument(tracer_provider: trace.TracerProvider | None = None) -> OtelTracer:
    """Trace every run started from now on in this process. Calling it again does nothing,
    unless it is given another ``tracer_provider``, which then replaces the first one.
    Returns the registered tracer."""
    global _installed
    if _installed is not None:
        if tracer_provider is None or tracer_provider is _installed.tracer_provider:
            return _installed
        uninstrument()
    _installed = OtelTracer(tracer_provider)
    add_tracer(_installed)
    return _installed


def uninstrument() -> None:
    """Stop tracing runs started from now on (runs going on keep their spans)."""
    global _installed
    if _installed is not None:
        remove_tracer(_installed)
        _installed = None
