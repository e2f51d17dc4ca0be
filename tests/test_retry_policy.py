"""Unit tests of riverbed.retry_policy: the classes, the building blocks and their checks."""

import asyncio
import copy
import dataclasses
import importlib
import inspect
import math
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

from riverbed.errors import WorkflowValidationError
from riverbed.retry_policy import (
    ConstantDelayRetryPolicy,
    ExponentialBackoffRetryPolicy,
    RetryPolicy,
    retry_always,
    retry_if_exception_type,
    retry_if_not_exception_type,
    retry_never,
    retry_policy,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_none,
    wait_random,
)

# ``riverbed`` re-exports the ``retry_policy`` function, which shadows the submodule as a
# package attribute, so ``import riverbed.retry_policy as rp`` would give the function.
rp = importlib.import_module("riverbed.retry_policy")
RNG = random.Random(0)


def delays(policy: Any, count: int, error: BaseException | None = None, **kw: Any) -> list[Any]:
    """The answers of ``policy.next`` after failures number 1..count."""
    err = ValueError("boom") if error is None else error
    return [policy.next(0.0, n, err, **kw) for n in range(1, count + 1)]


# --- module surface ------------------------------------------------------------------------


def test_all_is_sorted_and_every_public_name_is_documented() -> None:
    assert rp.__all__ == sorted(rp.__all__)
    for name in rp.__all__:
        assert getattr(rp, name).__doc__, name


# --- the protocol --------------------------------------------------------------------------


def test_user_class_with_next_satisfies_protocol() -> None:
    class RetryTwiceQuickly:
        def next(
            self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
        ) -> float | None:
            return 0.1 if attempts < 3 else None

    class PeerStyle:  # written against the peer's older signature, without ``seed``
        def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
            return None

    assert isinstance(RetryTwiceQuickly(), RetryPolicy)
    assert isinstance(PeerStyle(), RetryPolicy)
    assert not isinstance(object(), RetryPolicy)
    assert delays(RetryTwiceQuickly(), 3) == [0.1, 0.1, None]


@pytest.mark.parametrize(
    "policy",
    [ConstantDelayRetryPolicy(), ExponentialBackoffRetryPolicy(), retry_policy()],
    ids=repr,
)
def test_built_in_policies_satisfy_protocol(policy: Any) -> None:
    assert isinstance(policy, RetryPolicy)


# --- ConstantDelayRetryPolicy --------------------------------------------------------------


def test_constant_delay_defaults_match_the_peer() -> None:
    params = inspect.signature(ConstantDelayRetryPolicy).parameters
    assert [(p.name, p.default) for p in params.values()][:2] == [
        ("maximum_attempts", 3),
        ("delay", 5),
    ]
    assert params["retry_on"].kind is inspect.Parameter.KEYWORD_ONLY
    # Three attempts in all: retry after the first and second failure, give up after the third.
    assert delays(ConstantDelayRetryPolicy(), 4) == [5, 5, None, None]


def test_constant_delay_positional_arguments() -> None:
    assert delays(ConstantDelayRetryPolicy(4, 0.25), 4) == [0.25, 0.25, 0.25, None]


def test_constant_delay_single_attempt_never_retries() -> None:
    assert delays(ConstantDelayRetryPolicy(maximum_attempts=1), 1) == [None]


def test_constant_delay_retry_on_filters_errors() -> None:
    policy = ConstantDelayRetryPolicy(delay=1, retry_on=(TimeoutError, ConnectionError))
    assert policy.next(0.0, 1, TimeoutError()) == 1
    assert policy.next(0.0, 1, ConnectionResetError()) == 1  # subclasses count
    assert policy.next(0.0, 1, ValueError()) is None
    assert ConstantDelayRetryPolicy(retry_on=KeyError).next(0.0, 1, KeyError()) == 5


# --- ExponentialBackoffRetryPolicy ---------------------------------------------------------


def test_exponential_backoff_signature_matches_the_peer() -> None:
    params = inspect.signature(ExponentialBackoffRetryPolicy).parameters
    positional = [(p.name, p.default) for p in params.values() if p.name != "retry_on"]
    assert positional == [
        ("maximum_attempts", 5),
        ("initial_delay", 1.0),
        ("multiplier", 2.0),
        ("max_delay", 60.0),
        ("jitter", True),
    ]
    assert params["retry_on"].kind is inspect.Parameter.KEYWORD_ONLY


def test_exponential_backoff_without_jitter_doubles_from_initial_delay() -> None:
    policy = ExponentialBackoffRetryPolicy(jitter=False)
    assert delays(policy, 6) == [1.0, 2.0, 4.0, 8.0, None, None]


def test_exponential_backoff_is_capped_at_max_delay() -> None:
    policy = ExponentialBackoffRetryPolicy(
        maximum_attempts=10, initial_delay=0.5, multiplier=3, max_delay=5, jitter=False
    )
    assert delays(policy, 5) == [0.5, 1.5, 4.5, 5, 5]


def test_exponential_backoff_full_jitter_stays_within_bounds() -> None:
    policy = ExponentialBackoffRetryPolicy(maximum_attempts=8, max_delay=10)
    for attempts in range(1, 8):
        ceiling = min(10.0, 2.0 ** (attempts - 1))
        samples = [policy.next(0.0, attempts, ValueError()) for _ in range(200)]
        assert all(s is not None and 0.0 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 1  # really random, not the ceiling every time


def test_exponential_backoff_seeded_jitter_is_deterministic() -> None:
    policy = ExponentialBackoffRetryPolicy(maximum_attempts=6)
    first = delays(policy, 5, seed=1234)
    assert first == delays(policy, 5, seed=1234)
    assert first[0] == random.Random(1234).uniform(0.0, 1.0)
    assert delays(policy, 5, seed=1) != first


def test_exponential_backoff_retry_on_filters_errors() -> None:
    policy = ExponentialBackoffRetryPolicy(jitter=False, retry_on=OSError)
    assert policy.next(0.0, 2, FileNotFoundError()) == 2.0
    assert policy.next(0.0, 2, RuntimeError()) is None


def test_exponential_backoff_huge_attempt_numbers_do_not_overflow() -> None:
    policy = ExponentialBackoffRetryPolicy(maximum_attempts=10**9, max_delay=7, jitter=False)
    assert policy.next(0.0, 100_000, ValueError()) == 7


# --- retry conditions ----------------------------------------------------------------------


def test_retry_if_exception_type() -> None:
    cond = retry_if_exception_type((TimeoutError, KeyError))
    assert cond(TimeoutError())
    assert cond(KeyError())
    assert not cond(ValueError())
    assert retry_if_exception_type()(ValueError())  # default: any Exception


def test_retry_if_not_exception_type() -> None:
    cond = retry_if_not_exception_type(PermissionError)
    assert cond(ValueError())
    assert not cond(PermissionError())
    assert cond != retry_if_exception_type(PermissionError)


def test_retry_always_and_never_work_with_and_without_call() -> None:
    assert retry_always(ValueError()) is True
    assert retry_never(ValueError()) is False
    assert retry_always() is retry_always
    assert retry_never() is retry_never
    assert repr(retry_always) == "retry_always"


def test_retry_conditions_combine_with_or_and_and() -> None:
    is_timeout = retry_if_exception_type(TimeoutError)
    is_os = retry_if_exception_type(OSError)
    either = is_timeout | retry_if_exception_type(KeyError)
    assert either(TimeoutError())
    assert either(KeyError())
    assert not either(ValueError())
    both = is_os & retry_if_not_exception_type(FileNotFoundError)
    assert both(ConnectionError())
    assert not both(FileNotFoundError())
    assert not (is_timeout & retry_never)(TimeoutError())
    assert (retry_never | retry_always)(ValueError())


def test_retry_conditions_combine_with_plain_functions() -> None:
    def says_retry(error: BaseException) -> bool:
        return "retry" in str(error)

    for cond in (retry_never | says_retry, says_retry | retry_never):
        assert cond(ValueError("please retry"))
        assert not cond(ValueError("fatal"))
    for cond in (retry_always & says_retry, says_retry & retry_always):
        assert cond(ValueError("retry later"))
        assert not cond(ValueError("fatal"))


def test_combined_conditions_flatten_and_read_as_written() -> None:
    a, b, c = (retry_if_exception_type(t) for t in (KeyError, OSError, TimeoutError))
    assert (a | b | c).parts == (a, b, c)
    assert repr(a | b & c) == f"{a!r} | ({b!r} & {c!r})"
    assert repr(stop_after_attempt(3) | stop_never) == (
        "stop_after_attempt(max_attempt_number=3) | stop_never"
    )


# --- stop conditions -----------------------------------------------------------------------


def test_stop_after_attempt() -> None:
    stop = stop_after_attempt(3)
    assert [stop(n, 0.0) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_stop_after_delay_stops_at_the_boundary() -> None:
    stop = stop_after_delay(10)
    assert not stop(1, 9.999)
    assert stop(1, 10.0)
    assert stop(1, 11.0)


def test_stop_never() -> None:
    assert stop_never(10**6, 1e9) is False
    assert stop_never() is stop_never


def test_stop_conditions_combine() -> None:
    either = stop_after_attempt(5) | stop_after_delay(30)
    assert not either(4, 29.0)
    assert either(5, 0.0)
    assert either(1, 30.0)
    both = stop_after_attempt(5) & stop_after_delay(30)
    assert not both(5, 0.0)
    assert not both(1, 30.0)
    assert both(5, 30.0)
    assert not (stop_after_attempt(1) & stop_never)(9, 9.0)


# --- wait strategies -----------------------------------------------------------------------


def test_wait_fixed_and_none() -> None:
    assert [wait_fixed(2.5)(n, RNG) for n in (1, 2, 9)] == [2.5, 2.5, 2.5]
    assert wait_none()(3, RNG) == 0.0
    assert repr(wait_none()) == "wait_none()"


def test_wait_exponential_sequence_and_clamping() -> None:
    assert [wait_exponential()(n, RNG) for n in range(1, 5)] == [1.0, 2.0, 4.0, 8.0]
    assert [wait_exponential(max=10)(n, RNG) for n in range(3, 7)] == [4.0, 8.0, 10, 10]
    assert [wait_exponential(multiplier=0.5, exp_base=3)(n, RNG) for n in (1, 2, 3)] == [
        0.5,
        1.5,
        4.5,
    ]
    assert wait_exponential(min=3)(1, RNG) == 3  # raised to min
    assert wait_exponential(max=60)(10_000, RNG) == 60  # no OverflowError
    assert wait_exponential(multiplier=0)(10_000, RNG) == 0


def test_wait_random_stays_within_bounds() -> None:
    wait = wait_random(1, 3)
    samples = [wait(1, RNG) for _ in range(500)]
    assert all(1 <= s <= 3 for s in samples)
    assert max(samples) - min(samples) > 1  # spread across the range
    assert wait_random(2, 2)(1, RNG) == 2


def test_wait_exponential_jitter_stays_within_bounds() -> None:
    wait = wait_exponential_jitter(initial=1, max=20, jitter=0.5)
    for attempts, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)]:
        samples = [wait(attempts, RNG) for _ in range(200)]
        assert all(base <= s <= base + 0.5 for s in samples)
    assert all(wait(6, RNG) == 20 for _ in range(50))  # 32 + jitter, capped at max


def test_waits_add_up() -> None:
    total = wait_fixed(1) + wait_fixed(2) + wait_exponential()
    assert total(3, RNG) == 7.0
    assert repr(total) == "wait_fixed(wait=1) + wait_fixed(wait=2) + " + repr(wait_exponential())

    def half_attempts(attempts: int, rng: random.Random) -> float:
        return attempts / 2

    assert (half_attempts + wait_fixed(1))(4, RNG) == 3.0
    assert (wait_fixed(1) + half_attempts)(4, RNG) == 3.0


def test_summed_random_waits_draw_independently_from_one_seeded_generator() -> None:
    policy = retry_policy(wait=wait_random(0, 1) + wait_random(0, 1))
    expected = random.Random(7)
    assert policy.next(0.0, 1, ValueError(), seed=7) == expected.random() + expected.random()


# --- retry_policy --------------------------------------------------------------------------


def test_retry_policy_defaults() -> None:
    policy = retry_policy()
    assert delays(policy, 4) == [5, 5, None, None]
    assert policy == retry_policy(retry=None)


def test_retry_policy_asks_retry_then_wait_then_stop() -> None:
    policy = retry_policy(
        retry=retry_if_exception_type(TimeoutError),
        stop=stop_after_attempt(4) | stop_after_delay(10),
        wait=wait_exponential(multiplier=0.5),
    )
    assert delays(policy, 4, TimeoutError()) == [0.5, 1.0, 2.0, None]
    assert policy.next(0.0, 1, ValueError()) is None
    assert policy.next(10.0, 1, TimeoutError()) is None
    assert policy.next(9.9, 1, TimeoutError()) == 0.5


def test_retry_policy_accepts_plain_functions() -> None:
    policy = retry_policy(
        retry=lambda error: isinstance(error, KeyError),
        stop=lambda attempts, elapsed: attempts >= 2,
        wait=lambda attempts, rng: 0.25 * attempts,
    )
    assert delays(policy, 2, KeyError()) == [0.25, None]
    assert policy.next(0.0, 1, ValueError()) is None


def test_retry_policy_clamps_a_bad_user_wait_to_zero() -> None:
    assert retry_policy(wait=lambda attempts, rng: -3.0).next(0.0, 1, ValueError()) == 0.0
    assert retry_policy(wait=lambda attempts, rng: math.nan).next(0.0, 1, ValueError()) == 0.0


def test_retry_policy_seeded_jitter_replays_identically() -> None:
    policy = retry_policy(
        stop=stop_after_attempt(10), wait=wait_exponential_jitter(max=100) + wait_random(0, 2)
    )
    first = delays(policy, 9, seed=99)
    assert first == delays(policy, 9, seed=99)
    assert first != delays(policy, 9, seed=100)
    assert all(d is not None and 1 <= d <= 102 for d in first)


def test_retry_policy_with_stop_never_survives_huge_attempt_numbers() -> None:
    policy = retry_policy(stop=stop_never, wait=wait_exponential(max=30))
    assert policy.next(1e9, 10**7, ValueError()) == 30


CANCELS: list[BaseException] = [
    asyncio.CancelledError(),
    KeyboardInterrupt(),
    SystemExit(1),
    GeneratorExit(),
]


@pytest.mark.parametrize("error", CANCELS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(
    "policy",
    [
        retry_policy(retry=retry_always, stop=stop_never, wait=wait_none()),
        retry_policy(retry=retry_if_exception_type(BaseException)),
        retry_policy(retry=lambda error: True),
        ConstantDelayRetryPolicy(retry_on=BaseException),
        ExponentialBackoffRetryPolicy(retry_on=BaseException),
    ],
    ids=lambda p: type(p).__name__,
)
def test_base_exceptions_that_are_not_exceptions_are_never_retried(
    policy: Any, error: BaseException
) -> None:
    assert policy.next(0.0, 1, error) is None


# --- immutability, equality, repr ----------------------------------------------------------

ALL_KINDS: list[Any] = [
    ConstantDelayRetryPolicy(2, 1.5, retry_on=(KeyError, OSError)),
    ExponentialBackoffRetryPolicy(jitter=False),
    retry_policy(
        retry=retry_if_exception_type(OSError) | retry_never,
        stop=stop_after_attempt(5) & stop_after_delay(3),
        wait=wait_exponential(max=9) + wait_random(0, 1),
    ),
    wait_exponential_jitter(initial=2),
    retry_always,
]


@pytest.mark.parametrize("obj", ALL_KINDS, ids=lambda o: type(o).__name__)
def test_policies_are_frozen_values_that_survive_copy_and_pickle(obj: Any) -> None:
    name = next((f.name for f in dataclasses.fields(obj)), "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, name, 1)
    for clone in (copy.copy(obj), copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))):
        assert clone == obj
        assert hash(clone) == hash(obj)


def test_reprs_read_like_the_calls_that_built_them() -> None:
    assert repr(ConstantDelayRetryPolicy(retry_on=(KeyError, OSError))) == (
        "ConstantDelayRetryPolicy(maximum_attempts=3, delay=5, retry_on=(KeyError, OSError))"
    )
    assert repr(ExponentialBackoffRetryPolicy()) == (
        "ExponentialBackoffRetryPolicy(maximum_attempts=5, initial_delay=1.0, multiplier=2.0, "
        "max_delay=60.0, jitter=True, retry_on=Exception)"
    )
    assert repr(retry_policy(wait=wait_none())) == (
        "retry_policy(retry=retry_if_exception_type(exception_types=Exception), "
        "stop=stop_after_attempt(max_attempt_number=3), wait=wait_none())"
    )


# --- bad arguments -------------------------------------------------------------------------

BAD: list[tuple[Callable[[], object], str]] = [
    (lambda: ConstantDelayRetryPolicy(0), "maximum_attempts"),
    (lambda: ConstantDelayRetryPolicy(2.5), "maximum_attempts"),  # type: ignore[arg-type]
    (lambda: ConstantDelayRetryPolicy(True), "maximum_attempts"),
    (lambda: ConstantDelayRetryPolicy(delay=-1), "delay"),
    (lambda: ConstantDelayRetryPolicy(delay=math.inf), "delay"),
    (lambda: ConstantDelayRetryPolicy(delay="5"), "delay"),  # type: ignore[arg-type]
    (lambda: ConstantDelayRetryPolicy(retry_on=()), "retry_on"),
    (lambda: ConstantDelayRetryPolicy(retry_on=int), "retry_on"),  # type: ignore[arg-type]
    (lambda: ExponentialBackoffRetryPolicy(maximum_attempts=0), "maximum_attempts"),
    (lambda: ExponentialBackoffRetryPolicy(initial_delay=-0.1), "initial_delay"),
    (lambda: ExponentialBackoffRetryPolicy(multiplier=0.5), "multiplier"),
    (lambda: ExponentialBackoffRetryPolicy(max_delay=math.nan), "max_delay"),
    (lambda: ExponentialBackoffRetryPolicy(initial_delay=90), "initial_delay=90 is above"),
    (lambda: ExponentialBackoffRetryPolicy(jitter=0.5), "jitter"),  # type: ignore[arg-type]
    (lambda: ExponentialBackoffRetryPolicy(retry_on=(ValueError, "x")), "retry_on"),  # type: ignore[arg-type]
    (lambda: retry_if_exception_type(()), "exception_types"),
    (lambda: retry_if_not_exception_type(str), "exception_types"),  # type: ignore[arg-type]
    (lambda: stop_after_attempt(0), "max_attempt_number"),
    (lambda: stop_after_delay(-5), "max_delay"),
    (lambda: wait_fixed(-1), "wait"),
    (lambda: wait_exponential(exp_base=0), "exp_base"),
    (lambda: wait_exponential(multiplier=-1), "multiplier"),
    (lambda: wait_exponential(max=-1), "max"),
    (lambda: wait_exponential(min=5, max=2), "min=5 is above max=2"),
    (lambda: wait_random(3, 1), "min=3 is above max=1"),
    (lambda: wait_random(-1, 1), "min"),
    (lambda: wait_exponential_jitter(jitter=-1), "jitter"),
    (lambda: wait_exponential_jitter(initial=100, max=10), "initial=100 is above max=10"),
    (lambda: retry_policy(retry=ValueError()), "retry"),  # type: ignore[arg-type]
    (lambda: retry_policy(stop=3), "stop must be a stop condition"),  # type: ignore[arg-type]
    (lambda: retry_policy(wait=5), "wait must be a wait strategy"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("build", "needle"), BAD, ids=[needle for _, needle in BAD])
def test_bad_arguments_raise_a_validation_error_naming_the_argument(
    build: Callable[[], object], needle: str
) -> None:
    with pytest.raises(WorkflowValidationError, match=f"^[a-zA-Z_]+: .*{needle}"):
        build()


def test_validation_message_says_what_would_be_valid() -> None:
    with pytest.raises(WorkflowValidationError) as info:
        ConstantDelayRetryPolicy(maximum_attempts=0)
    assert str(info.value) == (
        "ConstantDelayRetryPolicy: maximum_attempts must be an int >= 1 counting the first "
        "attempt too, got 0"
    )
    with pytest.raises(WorkflowValidationError, match="lower min or raise max"):
        wait_random(3, 1)


def test_infinite_caps_are_allowed() -> None:
    wait = wait_exponential(max=math.inf)
    assert wait(11, RNG) == 1024.0
