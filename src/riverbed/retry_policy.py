"""Retry policies: whether a failed step attempt runs again, and after how long.

After an attempt fails the engine calls ``policy.next(elapsed_time, attempts, error, seed=...)``:
``elapsed_time`` is seconds since the first attempt of this delivery started, ``attempts`` the
number of failed attempts so far (1 after the first failure). It returns seconds to wait, or
``None`` to give up. Attempt limits count every attempt, the first included (3 = two retries);
exponential waits start at their base (the first retry waits ``initial_delay``). No policy
retries a ``BaseException`` that is not an ``Exception`` (a cancel, Ctrl-C). Example::

    retry_policy(
        retry=retry_if_exception_type((TimeoutError, ConnectionError))
        | retry_if_exception_message(match="rate limit|temporarily unavailable"),
        stop=stop_after_attempt(5) | stop_before_delay(60),
        wait=wait_exponential(max=10) + wait_random(0, 1),
    )

The building blocks have the names, parameters and defaults of ``workflows.retry_policy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from riverbed._retry_blocks import (  # the building blocks, re-exported
    _KINDS,
    _ExcTypes,
    _Frozen,
    _grow,
    _kind,
    _RetryFn,
    _rng,
    _should_stop,
    _StopFn,
    _WaitFn,
    retry_all,
    retry_always,
    retry_any,
    retry_if_exception,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_message,
    retry_if_not_exception_type,
    retry_never,
    retry_unless_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_before_delay,
    stop_never,
    wait_chain,
    wait_combine,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)
from riverbed.errors import WorkflowValidationError

__all__ = [
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "RetryPolicy",
    "retry_all",
    "retry_always",
    "retry_any",
    "retry_if_exception",
    "retry_if_exception_cause_type",
    "retry_if_exception_message",
    "retry_if_exception_type",
    "retry_if_not_exception_message",
    "retry_if_not_exception_type",
    "retry_never",
    "retry_policy",
    "retry_unless_exception_type",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_before_delay",
    "stop_never",
    "wait_chain",
    "wait_combine",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_full_jitter",
    "wait_incrementing",
    "wait_none",
    "wait_random",
    "wait_random_exponential",
]


@runtime_checkable
class RetryPolicy(Protocol):
    """Anything with this ``next`` method can be a step's ``retry_policy``.

    Example: a class whose ``next`` returns ``0.1 if attempts < 3 else None``.
    """

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """Return seconds to wait before the next attempt, or ``None`` to give up.

        When ``seed`` is given, any randomness must come from ``random.Random(seed)``.
        """
        ...


@dataclass(frozen=True, repr=False)
class _ComposedRetryPolicy(_Frozen):
    retry: _RetryFn
    stop: _StopFn
    wait: _WaitFn
    _label = "retry_policy"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, kind in _KINDS.items():
            value = getattr(self, name)
            found = _kind(value)
            if found is not None and found != name:  # e.g. two arguments given in swapped order
                raise WorkflowValidationError(
                    f"retry_policy: {name}={value!r} is a {_KINDS[found]}, not a {kind}; "
                    f"pass it as {found}="
                )

    def next(
        self, elapsed_time: float, attempts: int, error: BaseException, *, seed: int | None = None
    ) -> float | None:
        """Ask ``retry``, then ``wait``, then ``stop`` (which may weigh the coming wait)."""
        if not isinstance(error, Exception) or not self.retry(error):
            return None
        # max() also turns a NaN from a user-written wait into 0.
        delay = max(0.0, float(self.wait(attempts, _rng(seed))))
        return None if _should_stop(self.stop, attempts, elapsed_time, delay) else delay

    def __repr__(self) -> str:
        return f"retry_policy(retry={self.retry!r}, stop={self.stop!r}, wait={self.wait!r})"


# The defaults of retry_policy(), the peer's: frozen, so one shared instance is safe.
_DEFAULT_WAIT = wait_fixed(5)
_DEFAULT_STOP = stop_after_attempt(3)


def retry_policy(
    retry: _RetryFn | None = None,
    wait: _WaitFn = _DEFAULT_WAIT,
    stop: _StopFn = _DEFAULT_STOP,
) -> RetryPolicy:
    """Build a policy from a retry condition, a wait strategy and a stop condition.

    ``retry=None`` retries any ``Exception``. Conditions combine with ``|`` and ``&``, waits
    add up with ``+``. Plain functions work too: ``retry`` takes the error, ``stop`` takes
    ``(attempts, elapsed_time)`` (and ``upcoming_sleep=`` if it declares it), ``wait`` takes
    ``(attempts, rng)`` and must draw any randomness from that ``random.Random`` so that
    seeded retries replay identically. The arguments come in the peer's order.
    Example: ``retry_policy(wait=wait_exponential(max=10), stop=stop_after_attempt(5))``.
    """
    return _ComposedRetryPolicy(retry_if_exception_type() if retry is None else retry, stop, wait)


@dataclass(frozen=True, repr=False)
class ConstantDelayRetryPolicy(_Frozen):
    """Wait ``delay`` seconds between attempts, up to ``maximum_attempts`` in all.

    Errors not of the ``retry_on`` types give up at once. Example:
    ``@step(retry_policy=ConstantDelayRetryPolicy(maximum_attempts=10, delay=2))``.
    """

    maximum_attempts: int = 3
    delay: float = 5
    retry_on: _ExcTypes = field(default=Exception, kw_only=True)

    def next(
        self, elapsed_time: float, attempts: int, error: BaseException, *, seed: int | None = None
    ) -> float | None:
        """``delay`` while fewer than ``maximum_attempts`` attempts failed, else ``None``."""
        retryable = isinstance(error, Exception) and isinstance(error, self.retry_on)
        return self.delay if retryable and attempts < self.maximum_attempts else None


@dataclass(frozen=True, repr=False)
class ExponentialBackoffRetryPolicy(_Frozen):
    """Wait ``initial_delay * multiplier**(attempts - 1)`` seconds, capped at ``max_delay``.

    ``jitter`` (on by default) draws the wait uniformly from ``[0, that]`` ("full jitter") so
    steps that fail together do not retry in lockstep. ``maximum_attempts`` counts every
    attempt; errors not of the ``retry_on`` types give up at once. With ``jitter=False`` the
    defaults wait 1, 2, 4, 8 seconds between five attempts.
    """

    maximum_attempts: int = 5
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True
    retry_on: _ExcTypes = field(default=Exception, kw_only=True)
    _rules: ClassVar[dict[str, str]] = {"multiplier": "factor"}
    _order = ("initial_delay", "max_delay")

    def next(
        self, elapsed_time: float, attempts: int, error: BaseException, *, seed: int | None = None
    ) -> float | None:
        """The backoff before the next attempt, or ``None`` once attempts run out."""
        if not isinstance(error, Exception) or not isinstance(error, self.retry_on):
            return None
        if attempts >= self.maximum_attempts:
            return None
        ceiling = _grow(self.initial_delay, self.multiplier, attempts, self.max_delay)
        return _rng(seed).uniform(0.0, ceiling) if self.jitter else ceiling
