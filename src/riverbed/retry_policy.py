"""Retry policies: whether a failed step attempt runs again, and after how long.

After an attempt fails the engine calls ``policy.next(elapsed_time, attempts, error, seed=...)``:
``elapsed_time`` is seconds since the first attempt of this delivery started, ``attempts`` the
number of failed attempts so far (1 after the first failure). It returns seconds to wait, or
``None`` to give up. Attempt limits count every attempt, the first included (3 = two retries);
exponential waits start at their base (the first retry waits ``initial_delay``). No policy
retries a ``BaseException`` that is not an ``Exception`` (a cancel, Ctrl-C). Example::

    retry_policy(
        retry=retry_if_exception_type((TimeoutError, ConnectionError)),
        stop=stop_after_attempt(5) | stop_after_delay(60),
        wait=wait_exponential(max=10) + wait_random(0, 1),
    )
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol, TypeVar, overload, runtime_checkable

from riverbed.errors import WorkflowValidationError

__all__ = [
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "RetryPolicy",
    "retry_always",
    "retry_if_exception_type",
    "retry_if_not_exception_type",
    "retry_never",
    "retry_policy",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_never",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_none",
    "wait_random",
]

_ExcTypes = type[BaseException] | tuple[type[BaseException], ...]
_RetryFn = Callable[[BaseException], bool]
_StopFn = Callable[[int, float], bool]
_WaitFn = Callable[[int, random.Random], float]

# Unseeded jitter only has to be spread out, not reproducible: one shared generator will do.
_SHARED_RNG = random.Random()


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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_exception_types(value: object) -> bool:
    types = value if isinstance(value, tuple) else (value,)
    return bool(types) and all(isinstance(t, type) and issubclass(t, BaseException) for t in types)


# What a field must be, keyed by its declared type or by a stricter rule named in ``_rules``.
# The keys are annotation strings, which relies on ``from __future__ import annotations``.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "float": (lambda v: _is_number(v) and 0 <= v < math.inf, "a finite number of seconds >= 0"),
    "cap": (lambda v: _is_number(v) and v >= 0, "a number of seconds >= 0 (math.inf: no cap)"),
    "int": (lambda v: type(v) is int and v >= 1, "an int >= 1 counting the first attempt too"),
    "factor": (lambda v: _is_number(v) and 1 <= v < math.inf, "a finite growth factor >= 1"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "_ExcTypes": (_is_exception_types, "an exception class or a tuple of them, e.g. (OSError,)"),
    "_RetryFn": (callable, "a retry condition such as retry_if_exception_type(OSError)"),
    "_StopFn": (callable, "a stop condition such as stop_after_attempt(3)"),
    "_WaitFn": (callable, "a wait strategy such as wait_fixed(5)"),
}


def _grow(scale: float, base: float, attempts: int, cap: float) -> float:
    """``scale * base**(attempts - 1)``, capped: the first retry waits ``scale``."""
    if scale == 0:
        return 0.0
    try:
        raw = scale * base ** max(attempts - 1, 0)
    except OverflowError:  # a long stop_never run must not crash the engine
        raw = math.inf
    return min(raw, cap)


def _rng(seed: int | None) -> random.Random:
    return _SHARED_RNG if seed is None else random.Random(seed)


def _fmt(value: object) -> str:
    if isinstance(value, type):
        return value.__qualname__
    if isinstance(value, tuple) and value and all(isinstance(v, type) for v in value):
        return "(" + ", ".join(map(_fmt, value)) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


@dataclass(frozen=True, repr=False)
class _Frozen:
    """Checks its fields on construction; shows as the call that builds it."""

    _rules: ClassVar[dict[str, str]] = {}  # field -> key of _RULES, when not its type
    _order: ClassVar[tuple[str, str] | None] = None  # (low field, high field)
    _label: ClassVar[str] = ""

    def __post_init__(self) -> None:
        # Checked here so a bad policy fails where it is declared, not at the first failure.
        label = self._label or type(self).__name__
        for f in fields(self):
            rule = _RULES.get(self._rules.get(f.name, str(f.type)))
            if rule and not rule[0](value := getattr(self, f.name)):
                raise WorkflowValidationError(f"{label}: {f.name} must be {rule[1]}, got {value!r}")
        low, high = self._order or ("", "")
        if low and getattr(self, low) > getattr(self, high):
            raise WorkflowValidationError(
                f"{label}: {low}={getattr(self, low)!r} is above {high}={getattr(self, high)!r}; "
                f"lower {low} or raise {high}"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={_fmt(getattr(self, f.name))}" for f in fields(self))
        return f"{type(self).__name__}({args})"


_C = TypeVar("_C", bound="_Combined")


@dataclass(frozen=True, repr=False)
class _Combined(_Frozen):
    """``a | b``, ``a & b`` or ``a + b``, shown the way it was written."""

    op: ClassVar[str]
    parts: tuple[Any, ...]

    @classmethod
    def of(cls: type[_C], *items: object) -> _C:
        # a | b | c becomes one node with three parts, so it also prints as a | b | c.
        return cls(tuple(p for i in items for p in (i.parts if isinstance(i, cls) else (i,))))

    def __repr__(self) -> str:
        return f" {self.op} ".join(
            f"({p!r})" if isinstance(p, _Combined) and p.op != self.op else repr(p)
            for p in self.parts
        )


class _Condition(_Frozen):
    """A retry or stop condition; combine with ``|`` (either) and ``&`` (both)."""

    def __or__(self, other: Callable[..., bool]) -> _AnyOf:
        return _AnyOf.of(self, other) if callable(other) else NotImplemented

    def __and__(self, other: Callable[..., bool]) -> _AllOf:
        return _AllOf.of(self, other) if callable(other) else NotImplemented

    # any()/all() do not care about order, so ``fn | cond`` can reuse ``cond | fn``.
    __ror__, __rand__ = __or__, __and__


@dataclass(frozen=True, repr=False)
class _AnyOf(_Combined, _Condition):
    op = "|"

    def __call__(self, *args: Any) -> bool:
        return any(part(*args) for part in self.parts)


@dataclass(frozen=True, repr=False)
class _AllOf(_Combined, _Condition):
    op = "&"

    def __call__(self, *args: Any) -> bool:
        return all(part(*args) for part in self.parts)


@dataclass(frozen=True, repr=False)
class _Constant(_Condition):
    name: str
    answer: bool

    @overload
    def __call__(self) -> _Constant: ...
    @overload
    def __call__(self, first: Any, /, *rest: Any) -> bool: ...
    def __call__(self, *args: Any) -> bool | _Constant:
        # Peer code writes ``retry_always()``, tenacity code ``retry_always``: accept both.
        return self.answer if args else self

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True, repr=False)
class retry_if_exception_type(_Condition):
    """Retry errors of these types: ``retry_if_exception_type((TimeoutError, OSError))``."""

    exception_types: _ExcTypes = Exception

    def __call__(self, error: BaseException) -> bool:
        return isinstance(error, self.exception_types)


class retry_if_not_exception_type(retry_if_exception_type):
    """Retry errors not of these types: ``retry_if_not_exception_type(PermissionError)``."""

    def __call__(self, error: BaseException) -> bool:
        return not isinstance(error, self.exception_types)


retry_always = _Constant("retry_always", True)
"""Retry every ``Exception``. ``retry_always()`` is the same object, for ported code."""
retry_never = _Constant("retry_never", False)
"""Never retry; handy to switch one branch of an ``|`` off."""
stop_never = _Constant("stop_never", False)
"""Never give up on count or time; pair it with a step timeout or a narrow ``retry``."""


@dataclass(frozen=True, repr=False)
class stop_after_attempt(_Condition):
    """Give up after this many attempts, the first included: ``stop_after_attempt(3)``."""

    max_attempt_number: int

    def __call__(self, attempts: int, elapsed_time: float) -> bool:
        return attempts >= self.max_attempt_number


@dataclass(frozen=True, repr=False)
class stop_after_delay(_Condition):
    """Give up once ``max_delay`` seconds have passed since the first attempt started."""

    max_delay: float

    def __call__(self, attempts: int, elapsed_time: float) -> bool:
        return elapsed_time >= self.max_delay


class _Wait(_Frozen):
    """A wait strategy; ``a + b`` waits for the sum of both."""

    def __add__(self, other: _WaitFn) -> _Sum:
        return _Sum.of(self, other) if callable(other) else NotImplemented

    def __radd__(self, other: _WaitFn) -> _Sum:
        return _Sum.of(other, self) if callable(other) else NotImplemented


@dataclass(frozen=True, repr=False)
class _Sum(_Combined, _Wait):
    op = "+"

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return math.fsum(part(attempts, rng) for part in self.parts)


@dataclass(frozen=True, repr=False)
class wait_fixed(_Wait):
    """Wait ``wait`` seconds before every retry. Example: ``wait_fixed(5)``."""

    wait: float

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return self.wait


@dataclass(frozen=True, repr=False)
class wait_none(_Wait):
    """Retry at once, without waiting."""

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return 0.0


@dataclass(frozen=True, repr=False)
class wait_exponential(_Wait):
    """Wait ``multiplier * exp_base**(attempts - 1)`` seconds, clamped to ``[min, max]``.

    ``wait_exponential(max=10)`` waits 1, 2, 4, 8, 10, 10, ... seconds.
    """

    multiplier: float = 1.0
    exp_base: float = 2.0
    max: float = 60.0
    min: float = 0.0
    _rules: ClassVar[dict[str, str]] = {"exp_base": "factor", "max": "cap"}
    _order = ("min", "max")

    def __call__(self, attempts: int, rng: random.Random) -> float:
        grown = _grow(self.multiplier, self.exp_base, attempts, self.max)
        return grown if grown > self.min else self.min


@dataclass(frozen=True, repr=False)
class wait_random(_Wait):
    """Wait a uniformly random ``[min, max]`` seconds. Example: ``wait_random(0, 1)``."""

    min: float = 0.0
    max: float = 1.0
    _order = ("min", "max")

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return rng.uniform(self.min, self.max)


@dataclass(frozen=True, repr=False)
class wait_exponential_jitter(_Wait):
    """Wait ``initial * exp_base**(attempts - 1)`` plus a random ``[0, jitter]``, up to ``max``."""

    initial: float = 1.0
    exp_base: float = 2.0
    max: float = 60.0
    jitter: float = 1.0
    _rules: ClassVar[dict[str, str]] = {"exp_base": "factor", "max": "cap"}
    _order = ("initial", "max")

    def __call__(self, attempts: int, rng: random.Random) -> float:
        grown = _grow(self.initial, self.exp_base, attempts, self.max) + rng.uniform(0, self.jitter)
        return grown if grown < self.max else self.max


@dataclass(frozen=True, repr=False)
class _ComposedRetryPolicy(_Frozen):
    retry: _RetryFn
    stop: _StopFn
    wait: _WaitFn
    _label = "retry_policy"

    def next(
        self, elapsed_time: float, attempts: int, error: BaseException, *, seed: int | None = None
    ) -> float | None:
        """Ask ``retry``, then ``stop``, then ``wait``; see :func:`retry_policy`."""
        if not isinstance(error, Exception) or not self.retry(error):
            return None
        if self.stop(attempts, elapsed_time):
            return None
        # max() also turns a NaN from a user-written wait into 0.
        return max(0.0, float(self.wait(attempts, _rng(seed))))

    def __repr__(self) -> str:
        return f"retry_policy(retry={self.retry!r}, stop={self.stop!r}, wait={self.wait!r})"


def retry_policy(
    retry: _RetryFn | None = None,
    stop: _StopFn = stop_after_attempt(3),
    wait: _WaitFn = wait_fixed(5),
) -> RetryPolicy:
    """Build a policy from a retry condition, a stop condition and a wait strategy.

    ``retry=None`` retries any ``Exception``. Conditions combine with ``|`` and ``&``, waits
    add up with ``+``. Plain functions work too: ``retry`` takes the error, ``stop`` takes
    ``(attempts, elapsed_time)``, ``wait`` takes ``(attempts, rng)`` and must draw any
    randomness from that ``random.Random`` so that seeded retries replay identically.
    Example: ``retry_policy(stop=stop_after_attempt(5), wait=wait_exponential(max=10))``.
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
