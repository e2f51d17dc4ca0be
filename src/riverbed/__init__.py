"""riverbed: event-driven async workflows with typed, atomic, durable state.

Layers, imports pointing inward only: events, state and errors at the bottom; steps, the
context and the engine (``_engine``) above them; ``Workflow`` on top. Stores sit beside the
core behind the ``Store`` protocol; durable backends, server and CLI are optional extras.
"""

from riverbed.context import Context
from riverbed.decorators import catch_error, step
from riverbed.errors import (
    ContextSerdeError,
    ContextStateError,
    NestedEditStateError,
    RunExistsError,
    RunFinishedError,
    RunNotFoundError,
    RunOwnedError,
    StatePathError,
    StateValidationError,
    StepTimeoutError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    StoreSchemaError,
    WaitForEventTimeoutError,
    WorkflowCancelledByUser,
    WorkflowConfigurationError,
    WorkflowError,
    WorkflowRuntimeError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from riverbed.events import (
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StepFailedEvent,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)
from riverbed.handler import WorkflowHandler
from riverbed.resource import Resource, ResourceConfig, ResourceManager
from riverbed.retry_policy import (
    ConstantDelayRetryPolicy,
    ExponentialBackoffRetryPolicy,
    RetryPolicy,
    retry_if_exception_type,
    retry_policy,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)
from riverbed.serialization import BaseSerializer, JsonSerializer, PickleSerializer
from riverbed.state import DictState
from riverbed.stores import MemoryStore, RunStatus
from riverbed.workflow import Workflow

__version__ = "0.1.0.dev0"

__all__ = [
    "BaseSerializer",
    "ConstantDelayRetryPolicy",
    "Context",
    "ContextSerdeError",
    "ContextStateError",
    "DictState",
    "Event",
    "ExponentialBackoffRetryPolicy",
    "HumanResponseEvent",
    "InputRequiredEvent",
    "JsonSerializer",
    "MemoryStore",
    "NestedEditStateError",
    "PickleSerializer",
    "Resource",
    "ResourceConfig",
    "ResourceManager",
    "RetryPolicy",
    "RunExistsError",
    "RunFinishedError",
    "RunNotFoundError",
    "RunOwnedError",
    "RunStatus",
    "StartEvent",
    "StatePathError",
    "StateValidationError",
    "StepFailedEvent",
    "StepTimeoutError",
    "StopEvent",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreSchemaError",
    "WaitForEventTimeoutError",
    "Workflow",
    "WorkflowCancelledByUser",
    "WorkflowCancelledEvent",
    "WorkflowConfigurationError",
    "WorkflowError",
    "WorkflowFailedEvent",
    "WorkflowHandler",
    "WorkflowRuntimeError",
    "WorkflowTimedOutEvent",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
    "catch_error",
    "retry_if_exception_type",
    "retry_policy",
    "step",
    "stop_after_attempt",
    "stop_after_delay",
    "wait_exponential",
    "wait_fixed",
]
