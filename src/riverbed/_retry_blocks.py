"""The building blocks of ``retry_policy(retry=..., wait=..., stop=...)``: retry conditions,
stop conditions and wait strategies, with the names, parameters and defaults of
``workflows.retry_policy``. Import them from :mod:`riverbed.retry_policy`."""

from __future__ import annotations

import inspect
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast, overload

from riverbed.errors import WorkflowValidationError

_ExcTypes = type[BaseException] | tuple[type[BaseException], ...]
_RetryFn = Callable[[BaseException], bool]
# A stop condition may also take ``upcoming_sleep=`` (the wait about to start), as the
# peer's do; plain ``(attempts, elapsed_time)`` functions are called without it.
_StopFn = Callable[[int, float], bool]
_WaitFn = Callable[[int, random.Random], float]

# Unseeded jitter only has to be spread out, not reproducible: one shared generator will do.
_SHARED_RNG = random.Random()


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
    "step": (lambda v: _is_number(v) and math.isfinite(v), "a finite number of seconds"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "_ExcTypes": (_is_exception_types, "an exception class or a tuple of them, e.g. (OSError,)"),
    "_RetryFn": (callable, "a retry condition such as retry_if_exception_type(OSError)"),
    "predicate": (callable, "a function taking the error and returning True to retry"),
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
    #: fields that take a ``timedelta`` too (as the peer's do); stored as seconds
    _seconds: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for name in self._seconds:
            value = getattr(self, name)
            if isinstance(value, timedelta):
                object.__setattr__(self, name, value.total_seconds())
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


_KINDS = {"retry": "retry condition", "stop": "stop condition", "wait": "wait strategy"}
_PART_KIND = {"_RetryFn": "retry", "_StopFn": "stop", "_WaitFn": "wait"}


def _kind(value: object) -> str | None:
    """Which argument of :func:`retry_policy` a building block belongs to; None for functions."""
    for name, base in (("retry", _RetryCondition), ("stop", _StopCondition), ("wait", _Wait)):
        if isinstance(value, base):
            return name
    return None


@dataclass(frozen=True, repr=False, init=False)
class _VarArgs(_Frozen):
    """Built from any number of parts, ``name(a, b, ...)``; each part must meet ``_part``."""

    parts: tuple[Any, ...]
    _part: ClassVar[str] = "_RetryFn"  # key of _RULES
    _if_empty: ClassVar[str] = ""  # what the call would quietly do with no parts

    def __init__(self, *parts: Any) -> None:
        object.__setattr__(self, "parts", parts)
        self.__post_init__()

    def __post_init__(self) -> None:
        super().__post_init__()
        label = type(self).__name__
        check, wanted = _RULES[self._part]
        if not self.parts:
            raise WorkflowValidationError(
                f"{label}: got no parts, so it would {self._if_empty}; pass at least one, {wanted}"
            )
        for part in self.parts:
            if not check(part) or _kind(part) not in (None, _PART_KIND[self._part]):
                raise WorkflowValidationError(f"{label}: each part must be {wanted}, got {part!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.parts))})"


_C = TypeVar("_C", bound="_Combined")


class _Combined(_VarArgs):
    """The parts joined by an operator; ``a | b`` shows as written, not as ``retry_any(a, b)``."""

    op: ClassVar[str]

    @classmethod
    def of(cls: type[_C], *items: object) -> _C:
        # a | b | c becomes one node with three parts, so it also prints as a | b | c.
        return cls(*(p for i in items for p in (i.parts if isinstance(i, cls) else (i,))))

    def __repr__(self) -> str:
        if len(self.parts) < 2:
            return super().__repr__()
        return f" {self.op} ".join(
            f"({p!r})" if isinstance(p, _Combined) and p.op != self.op else repr(p)
            for p in self.parts
        )


def _takes_upcoming_sleep(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == "upcoming_sleep" or p.kind is p.VAR_KEYWORD for p in params)


def _should_stop(stop: _StopFn, attempts: int, elapsed_time: float, upcoming_sleep: float) -> bool:
    """Ask ``stop``, telling it the coming wait if it can take ``upcoming_sleep``."""
    if isinstance(stop, _StopCondition) or _takes_upcoming_sleep(stop):
        return bool(cast(Any, stop)(attempts, elapsed_time, upcoming_sleep=upcoming_sleep))
    return bool(stop(attempts, elapsed_time))


class _RetryCondition(_Frozen):
    """Decides from the error whether to retry; combine with ``|`` (either) and ``&`` (both)."""

    def __or__(self, other: _RetryFn) -> retry_any:
        return retry_any.of(self, other) if callable(other) else NotImplemented

    def __ror__(self, other: _RetryFn) -> retry_any:
        return retry_any.of(other, self) if callable(other) else NotImplemented

    def __and__(self, other: _RetryFn) -> retry_all:
        return retry_all.of(self, other) if callable(other) else NotImplemented

    def __rand__(self, other: _RetryFn) -> retry_all:
        return retry_all.of(other, self) if callable(other) else NotImplemented


class _StopCondition(_Frozen):
    """Decides when to give up; combine with ``|`` (either) and ``&`` (both)."""

    def __or__(self, other: _StopFn) -> stop_any:
        return stop_any.of(self, other) if callable(other) else NotImplemented

    def __ror__(self, other: _StopFn) -> stop_any:
        return stop_any.of(other, self) if callable(other) else NotImplemented

    def __and__(self, other: _StopFn) -> stop_all:
        return stop_all.of(self, other) if callable(other) else NotImplemented

    def __rand__(self, other: _StopFn) -> stop_all:
        return stop_all.of(other, self) if callable(other) else NotImplemented


@dataclass(frozen=True, repr=False)
class _Constant(_Frozen):
    name: str
    answer: bool

    @overload
    def __call__(self) -> _Constant: ...
    @overload
    def __call__(self, first: Any, /, *rest: Any, **kwargs: Any) -> bool: ...
    def __call__(self, *args: Any, **kwargs: Any) -> bool | _Constant:
        # Peer code writes ``retry_always()``, tenacity code ``retry_always``: accept both.
        return self.answer if args else self

    def __repr__(self) -> str:
        return self.name


class _RetryConstant(_Constant, _RetryCondition):
    """A retry condition with a fixed answer: ``retry_always`` or ``retry_never``."""


class _StopConstant(_Constant, _StopCondition):
    """A stop condition with a fixed answer: ``stop_never``."""


# --- retry conditions ----------------------------------------------------------------------


class retry_any(_Combined, _RetryCondition):
    """Retry when any of the conditions says so; ``a | b`` builds the same thing.

    Example: ``retry_any(retry_if_exception_type(OSError), retry_if_exception(is_throttled))``.
    """

    op = "|"
    _if_empty = "never retry"

    def __call__(self, error: BaseException) -> bool:
        return any(part(error) for part in self.parts)


class retry_all(_Combined, _RetryCondition):
    """Retry only when every condition says so; ``a & b`` builds the same thing."""

    op = "&"
    _if_empty = "retry every error"

    def __call__(self, error: BaseException) -> bool:
        return all(part(error) for part in self.parts)


@dataclass(frozen=True, repr=False)
class retry_if_exception(_RetryCondition):
    """Retry when ``predicate(error)`` is true.

    Example: ``retry_if_exception(lambda e: getattr(e, "status", 0) >= 500)``.
    """

    predicate: _RetryFn
    _rules: ClassVar[dict[str, str]] = {"predicate": "predicate"}

    def __call__(self, error: BaseException) -> bool:
        return bool(self.predicate(error))


@dataclass(frozen=True, repr=False)
class _ByType(_RetryCondition):
    exception_types: _ExcTypes = Exception


class retry_if_exception_type(_ByType):
    """Retry errors of these types: ``retry_if_exception_type((TimeoutError, OSError))``."""

    def __call__(self, error: BaseException) -> bool:
        return isinstance(error, self.exception_types)


class retry_if_not_exception_type(_ByType):
    """Retry errors not of these types: ``retry_if_not_exception_type(PermissionError)``."""

    def __call__(self, error: BaseException) -> bool:
        return not isinstance(error, self.exception_types)


class retry_unless_exception_type(retry_if_not_exception_type):
    """The same as :class:`retry_if_not_exception_type`, under tenacity's name."""


class retry_if_exception_cause_type(_ByType):
    """Retry when an error in the ``raise ... from cause`` chain is of these types.

    Only explicit causes (``__cause__``) are followed, not the implicit ``__context__`` of an
    error raised inside an ``except`` block. The error itself is not checked.
    """

    def __call__(self, error: BaseException) -> bool:
        seen: set[int] = set()
        cause = error.__cause__
        while cause is not None and id(cause) not in seen:  # a hand-made cycle must end
            if isinstance(cause, self.exception_types):
                return True
            seen.add(id(cause))
            cause = cause.__cause__
        return False


@dataclass(frozen=True, repr=False)
class retry_if_exception_message(_RetryCondition):
    """Retry when ``str(error)`` equals ``message``, or when the regex ``match`` is found in it.

    Give exactly one of the two. ``match`` is searched, not anchored:
    ``retry_if_exception_message(match="rate limit|temporarily unavailable")``.
    """

    message: str | None = None
    match: str | re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        label = type(self).__name__
        if (self.message is None) == (self.match is None):
            raise WorkflowValidationError(
                f"{label}: give exactly one of message= (the whole message) or match= "
                f"(a regular expression searched in it), got message={self.message!r}, "
                f"match={self.match!r}"
            )
        if self.message is not None and not isinstance(self.message, str):
            raise WorkflowValidationError(f"{label}: message must be a str, got {self.message!r}")
        if self.match is not None:
            if not isinstance(self.match, (str, re.Pattern)):
                raise WorkflowValidationError(
                    f"{label}: match must be a str or re.Pattern, got {self.match!r}"
                )
            try:
                re.compile(self.match)
            except re.error as exc:
                raise WorkflowValidationError(
                    f"{label}: match={self.match!r} is not a valid regular expression ({exc}); "
                    "use re.escape(text) to match text literally"
                ) from None

    def __call__(self, error: BaseException) -> bool:
        text = str(error)
        if self.match is None:
            return text == self.message
        return re.search(self.match, text) is not None


class retry_if_not_exception_message(retry_if_exception_message):
    """Retry unless the message matches: ``retry_if_not_exception_message(match="invalid key")``."""

    def __call__(self, error: BaseException) -> bool:
        return not super().__call__(error)


retry_always = _RetryConstant("retry_always", True)
"""Retry every ``Exception``. ``retry_always()`` is the same object, for ported code."""
retry_never = _RetryConstant("retry_never", False)
"""Never retry; handy to switch one branch of an ``|`` off."""


# --- stop conditions -----------------------------------------------------------------------

stop_never = _StopConstant("stop_never", False)
"""Never give up on count or time; pair it with a step timeout or a narrow ``retry``."""


class stop_any(_Combined, _StopCondition):
    """Give up when any of the conditions says so; ``a | b`` builds the same thing."""

    op = "|"
    _part = "_StopFn"
    _if_empty = "never stop"

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return any(_should_stop(p, attempts, elapsed_time, upcoming_sleep) for p in self.parts)


class stop_all(_Combined, _StopCondition):
    """Give up only when every condition says so; ``a & b`` builds the same thing."""

    op = "&"
    _part = "_StopFn"
    _if_empty = "stop at the first failure"

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return all(_should_stop(p, attempts, elapsed_time, upcoming_sleep) for p in self.parts)


@dataclass(frozen=True, repr=False)
class stop_after_attempt(_StopCondition):
    """Give up after this many attempts, the first included: ``stop_after_attempt(3)``."""

    max_attempt_number: int

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return attempts >= self.max_attempt_number


@dataclass(frozen=True, repr=False)
class stop_after_delay(_StopCondition):
    """Give up once ``max_delay`` seconds have passed since the first attempt started."""

    max_delay: float
    _seconds = ("max_delay",)

    if TYPE_CHECKING:

        def __init__(self, max_delay: float | timedelta) -> None: ...

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return elapsed_time >= self.max_delay


@dataclass(frozen=True, repr=False)
class stop_before_delay(_StopCondition):
    """Give up rather than start a wait that would end ``max_delay`` seconds or more after the
    first attempt started: the next attempt must begin inside the budget."""

    max_delay: float

    _seconds = ("max_delay",)

    if TYPE_CHECKING:

        def __init__(self, max_delay: float | timedelta) -> None: ...

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return elapsed_time + upcoming_sleep >= self.max_delay


# --- wait strategies -----------------------------------------------------------------------


class _Wait(_Frozen):
    """A wait strategy; ``a + b`` waits for the sum of both, and so does ``sum([a, b])``."""

    def __add__(self, other: _WaitFn) -> wait_combine:
        return wait_combine.of(self, other) if callable(other) else NotImplemented

    def __radd__(self, other: _WaitFn | int) -> _Wait:
        if isinstance(other, int) and other == 0:  # the start value of sum()
            return self
        return wait_combine.of(other, self) if callable(other) else NotImplemented


class wait_combine(_Combined, _Wait):
    """Wait for the sum of the strategies; ``a + b`` builds the same thing.

    Example: ``wait_combine(wait_fixed(1), wait_random(0, 1))`` waits 1 to 2 seconds.
    """

    op = "+"
    _part = "_WaitFn"
    _if_empty = "never wait"

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return math.fsum(part(attempts, rng) for part in self.parts)


class wait_chain(_VarArgs, _Wait):
    """Use the first strategy before the first retry, the second before the second, and so
    on; the last one is kept for all later retries.

    Example: ``wait_chain(*[wait_fixed(1)] * 3, wait_fixed(10))`` waits 1, 1, 1, 10, 10, ...
    """

    _part = "_WaitFn"
    _if_empty = "have no wait to give"

    def __call__(self, attempts: int, rng: random.Random) -> float:
        index = min(max(attempts, 1), len(self.parts)) - 1
        return float(self.parts[index](attempts, rng))


@dataclass(frozen=True, repr=False)
class wait_fixed(_Wait):
    """Wait ``wait`` seconds before every retry. Example: ``wait_fixed(5)``."""

    wait: float

    _seconds = ("wait",)

    if TYPE_CHECKING:

        def __init__(self, wait: float | timedelta) -> None: ...

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return self.wait


@dataclass(frozen=True, repr=False)
class wait_none(_Wait):
    """Retry at once, without waiting."""

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return 0.0


@dataclass(frozen=True, repr=False)
class wait_incrementing(_Wait):
    """Wait ``start`` seconds, then ``increment`` more before each further retry, up to ``max``.

    ``wait_incrementing(start=1, increment=2, max=6)`` waits 1, 3, 5, 6, 6, ... seconds. A
    negative ``increment`` shrinks the wait, down to 0.
    """

    start: float = 0.0
    increment: float = 100.0
    max: float = math.inf
    _rules: ClassVar[dict[str, str]] = {"increment": "step", "max": "cap"}
    _order = ("start", "max")

    _seconds = ("start", "increment", "max")

    if TYPE_CHECKING:

        def __init__(
            self,
            start: float | timedelta = 0.0,
            increment: float | timedelta = 100.0,
            max: float | timedelta = math.inf,
        ) -> None: ...

    def __call__(self, attempts: int, rng: random.Random) -> float:
        waited = self.start + self.increment * max(attempts - 1, 0)
        return min(max(waited, 0.0), self.max)


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

    _seconds = ("max", "min")

    if TYPE_CHECKING:

        def __init__(
            self,
            multiplier: float = 1.0,
            exp_base: float = 2.0,
            max: float | timedelta = 60.0,
            min: float | timedelta = 0.0,
        ) -> None: ...

    def __call__(self, attempts: int, rng: random.Random) -> float:
        grown = _grow(self.multiplier, self.exp_base, attempts, self.max)
        return grown if grown > self.min else self.min


class wait_random_exponential(wait_exponential):
    """Wait a uniformly random time between ``min`` and what :class:`wait_exponential` with
    the same arguments would wait ("full jitter"), so that steps failing together spread out.

    ``wait_random_exponential(max=10)`` waits up to 1, 2, 4, 8, 10, 10, ... seconds.
    """

    def __call__(self, attempts: int, rng: random.Random) -> float:
        return rng.uniform(self.min, super().__call__(attempts, rng))


class wait_full_jitter(wait_random_exponential):
    """The same as :class:`wait_random_exponential`, under its other name."""


@dataclass(frozen=True, repr=False)
class wait_random(_Wait):
    """Wait a uniformly random ``[min, max]`` seconds. Example: ``wait_random(0, 1)``."""

    min: float = 0.0
    max: float = 1.0
    _order = ("min", "max")

    _seconds = ("min", "max")

    if TYPE_CHECKING:

        def __init__(self, min: float | timedelta = 0.0, max: float | timedelta = 1.0) -> None: ...

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
