"""Every error riverbed raises, under one root.

Catch :class:`WorkflowError` to catch them all::

    WorkflowError
    ├── WorkflowValidationError          a workflow or step is declared wrongly
    │   └── WorkflowConfigurationError   (raised at Workflow construction; peer name)
    ├── WorkflowRuntimeError             misuse or failure while a run is going on
    │   ├── ContextStateError            a Context method called in the wrong place
    │   ├── StatePathError               ``ctx.store.get`` of a path that is not there
    │   ├── StateValidationError         a value that does not fit the typed state
    │   ├── NestedEditStateError         ``edit_state`` inside ``edit_state`` of one task
    │   └── RunNotFoundError             an unknown run id
    ├── WorkflowTimeoutError             the run took longer than ``Workflow(timeout=...)``
    │   ├── StepTimeoutError             one step attempt took longer than ``@step(timeout=...)``
    │   └── WaitForEventTimeoutError     ``ctx.wait_for_event(timeout=...)`` ran out
    ├── WorkflowCancelledByUser          ``handler.cancel_run()`` was called
    ├── ContextSerdeError                a payload that cannot be (de)serialized
    └── StoreError                       the run store cannot do what was asked
        ├── StoreCorruptError            the database file is damaged or not a database
        ├── StoreSchemaError             the database was written by a newer riverbed
        ├── StoreLockedError             another process holds the database lock too long
        ├── RunExistsError               a new run was given an id already in use
        ├── RunFinishedError             a finished run was resumed or sent an event
        ├── RunOwnedError                another live process is executing the run
        └── FencedError                  a stale attempt tried to commit (internal)

A few also subclass the standard exception a Python user would try first:
``StatePathError`` and ``StateValidationError`` are ``ValueError``s, the timeout errors are
``TimeoutError``s (``asyncio.TimeoutError`` too), so ported ``except`` clauses keep working.

Cancelling a step is done with :class:`asyncio.CancelledError`, a ``BaseException``: an
``except Exception`` in a step cannot swallow a cancel or a timeout.
"""

from __future__ import annotations

import asyncio
import sys

__all__ = [
    "ContextSerdeError",
    "ContextStateError",
    "NestedEditStateError",
    "FencedError",
    "RunExistsError",
    "RunFinishedError",
    "RunNotFoundError",
    "RunOwnedError",
    "StatePathError",
    "StateValidationError",
    "StepTimeoutError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreSchemaError",
    "WaitForEventTimeoutError",
    "WorkflowCancelledByUser",
    "WorkflowConfigurationError",
    "WorkflowError",
    "WorkflowRuntimeError",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
]


class WorkflowError(Exception):
    """Root of every error riverbed raises."""


class WorkflowValidationError(WorkflowError):
    """A workflow, step or state model is declared in a way riverbed cannot run.

    Raised when ``@step`` is applied or when a ``Workflow`` is constructed, never in the
    middle of a run. The message names the step and the event and says how to fix it.
    """


class WorkflowConfigurationError(WorkflowValidationError):
    """A workflow's constructor arguments or graph are invalid (LlamaIndex's name)."""


class WorkflowRuntimeError(WorkflowError):
    """Something went wrong while a run was going on (misuse of the API, a bad event)."""


class ContextStateError(WorkflowRuntimeError):
    """A ``Context`` method was called where it cannot work, e.g. ``wait_for_event``
    outside a step, or ``send_event`` before the run started."""


class StatePathError(WorkflowRuntimeError, ValueError):
    """``ctx.store.get(path)`` found nothing at ``path`` and no default was given."""


class StateValidationError(WorkflowRuntimeError, ValueError):
    """A value does not fit the workflow's typed state; the state was left unchanged."""


class NestedEditStateError(WorkflowRuntimeError):
    """``edit_state()`` (or ``set``) was entered while the same task already holds the
    state lock. Waiting would deadlock, so riverbed raises instead."""


class RunNotFoundError(WorkflowRuntimeError, KeyError):
    """No run with this id exists in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "run not found"


# On Python 3.11+ asyncio.TimeoutError *is* TimeoutError; listing both would be a
# duplicate base class there, so only add it where it is a different class.
_TIMEOUT_BASES: tuple[type[BaseException], ...] = (
    (TimeoutError,) if sys.version_info >= (3, 11) else (TimeoutError, asyncio.TimeoutError)
)


class WorkflowTimeoutError(WorkflowError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """The run exceeded the ``timeout`` given to the ``Workflow``."""


class StepTimeoutError(WorkflowTimeoutError):
    """One attempt of a step exceeded its ``@step(timeout=...)``. Retried like any failure."""


class WaitForEventTimeoutError(WorkflowTimeoutError):
    """``ctx.wait_for_event`` did not see a matching event within its ``timeout``."""


class WorkflowCancelledByUser(WorkflowError):
    """The run was cancelled with ``handler.cancel_run()``."""


class ContextSerdeError(WorkflowError):
    """A context or state payload could not be serialized or deserialized."""


class StoreError(WorkflowError):
    """The run store (SQLite file, PostgreSQL server) cannot do what was asked. Nothing
    committed before the error is lost."""


class StoreCorruptError(StoreError):
    """The database file is damaged, truncated, or not a riverbed database."""


class StoreSchemaError(StoreError):
    """The database was written by a newer riverbed (a higher schema version)."""


class StoreLockedError(StoreError):
    """Another process kept the database locked longer than the busy timeout."""


class RunExistsError(StoreError):
    """A new run was given a run id that is already in the store."""


class RunFinishedError(StoreError):
    """The run has already finished; it cannot be resumed or sent events."""


class RunOwnedError(StoreError):
    """Another live process is executing this run right now."""


class FencedError(StoreError):
    """A stale attempt tried to commit after its delivery was claimed again or finished;
    its effects were discarded. Internal: the engine handles it."""
