"""The retry building blocks ported from LlamaIndex: message and cause conditions, the named
combinators, stop_before_delay and the extra wait strategies, alone and in a running workflow."""

import copy
import importlib
import inspect
import itertools
import pickle
import random
import re
from collections.abc import Callable
from typing import Any

import pytest

from riverbed import Context, StartEvent, StopEvent, Workflow, step
from riverbed.errors import WorkflowValidationError
from riverbed.retry_policy import (
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
    retry_policy,
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
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)
from riverbed.testing import FakeClock

rp = importlib.import_module("riverbed.retry_policy")  # the package attribute is the function
RNG = random.Random(0)


def caused_by(cause: BaseException, error: BaseException | None = None) -> BaseException:
    """``error`` (a RuntimeError by default) raised ``from cause``."""
    outer = RuntimeError("wrapper") if error is None else error
    outer.__cause__ = cause
    return outer


def waits(wait: Callable[[int, random.Random], float], count: int) -> list[float]:
    """The waits before retries 1..count."""
    return [wait(n, RNG) for n in range(1, count + 1)]


# --- the same names and parameters as workflows.retry_policy (llama-index-workflows 2.26) ----

PEER_SIGNATURES = {
    "retry_if_exception": [("predicate", inspect.Parameter.empty)],
    "retry_if_exception_cause_type": [("exception_types", Exception)],
    "retry_if_exception_message": [("message", None), ("match", None)],
    "retry_if_not_exception_message": [("message", None), ("match", None)],
    "retry_unless_exception_type": [("exception_types", Exception)],
    "stop_before_delay": [("max_delay", inspect.Parameter.empty)],
    "wait_incrementing": [("start", 0.0), ("increment", 100.0), ("max", float("inf"))],
    "wait_random_exponential": [
        ("multiplier", 1.0),
        ("exp_base", 2.0),
        ("max", 60.0),
        ("min", 0.0),
    ],
    "wait_full_jitter": [("multiplier", 1.0), ("exp_base", 2.0), ("max", 60.0), ("min", 0.0)],
    "retry_policy": [("retry", None), ("wait", wait_fixed(5)), ("stop", stop_after_attempt(3))],
}


@pytest.mark.parametrize("name", sorted(PEER_SIGNATURES))
def test_parameters_and_defaults_match_the_peer(name: str) -> None:
    params = inspect.signature(getattr(rp, name)).parameters.values()
    assert [(p.name, p.default) for p in params] == PEER_SIGNATURES[name]


@pytest.mark.parametrize(
    "name", ["retry_any", "retry_all", "stop_any", "stop_all", "wait_chain", "wait_combine"]
)
def test_combinators_take_their_parts_positionally(name: str) -> None:
    (param,) = inspect.signature(getattr(rp, name)).parameters.values()
    assert param.kind is inspect.Parameter.VAR_POSITIONAL


def test_every_new_name_is_exported_from_the_submodule_only() -> None:
    import riverbed

    new = {name for name in PEER_SIGNATURES if name != "retry_policy"}
    new |= {"retry_any", "retry_all", "stop_any", "stop_all", "wait_chain", "wait_combine"}
    assert new <= set(rp.__all__)
    # LlamaIndex exports none of them from its top-level package, so neither do we.
    assert new.isdisjoint(riverbed.__all__)


# --- retry conditions ----------------------------------------------------------------------


def test_retry_if_exception_asks_the_predicate() -> None:
    cond = retry_if_exception(lambda error: "rate limit" in str(error).lower())
    assert cond(ValueError("Rate limit exceeded"))
    assert not cond(ValueError("bad request"))
    assert retry_if_exception(lambda error: 1)(KeyError()) is True  # truthy becomes True


def test_retry_if_exception_message_compares_the_whole_message() -> None:
    cond = retry_if_exception_message(message="please retry")
    assert cond(RuntimeError("please retry"))
    assert not cond(RuntimeError("please retry later"))
    assert not cond(RuntimeError("Please retry"))


def test_retry_if_exception_message_searches_the_pattern_anywhere() -> None:
    cond = retry_if_exception_message(match=r"HTTP 5\d\d")
    assert cond(OSError("upstream said HTTP 503, try again"))
    assert not cond(OSError("HTTP 404"))
    compiled = retry_if_exception_message(match=re.compile("timeout", re.IGNORECASE))
    assert compiled(OSError("Read TIMEOUT"))
    assert retry_if_exception_message(match="")(OSError("anything"))  # empty pattern matches


def test_retry_if_not_exception_message_is_the_opposite() -> None:
    cond = retry_if_not_exception_message(match="invalid_api_key|permission denied")
    assert cond(OSError("connection reset"))
    assert not cond(OSError("permission denied for model"))
    exact = retry_if_not_exception_message(message="fatal")
    assert not exact(ValueError("fatal"))
    assert exact(ValueError("fatal?"))


def test_retry_unless_exception_type_is_retry_if_not_exception_type() -> None:
    cond = retry_unless_exception_type((PermissionError, KeyError))
    assert cond(ConnectionError())
    assert not cond(PermissionError())
    assert not cond(KeyError())
    assert isinstance(cond, retry_if_not_exception_type)
    assert cond != retry_if_not_exception_type((PermissionError, KeyError))  # shows its own name
    assert repr(cond) == "retry_unless_exception_type(exception_types=(PermissionError, KeyError))"


def test_retry_if_exception_cause_type_follows_raise_from() -> None:
    cond = retry_if_exception_cause_type(ConnectionError)
    assert cond(caused_by(ConnectionResetError()))
    assert cond(caused_by(caused_by(ConnectionError())))  # deep in the chain
    assert not cond(caused_by(ValueError()))
    assert not cond(ConnectionError())  # the error itself is not its own cause
    assert not cond(RuntimeError())


def test_retry_if_exception_cause_type_ignores_the_implicit_context() -> None:
    def fail_while_handling() -> None:
        try:
            raise ConnectionError("down")
        except ConnectionError:
            raise RuntimeError("while handling") from None

    with pytest.raises(RuntimeError) as info:
        fail_while_handling()
    assert isinstance(info.value.__context__, ConnectionError)
    assert not retry_if_exception_cause_type(ConnectionError)(info.value)


def test_retry_if_exception_cause_type_ends_on_a_cycle() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert not retry_if_exception_cause_type(KeyError)(a)
    assert retry_if_exception_cause_type(ValueError)(a)


def test_retry_any_and_retry_all() -> None:
    is_os = retry_if_exception_type(OSError)
    says_temporary = retry_if_exception_message(match="temporary")
    either = retry_any(is_os, says_temporary)
    assert either(FileNotFoundError())
    assert either(ValueError("temporary glitch"))
    assert not either(ValueError("bad input"))
    both = retry_all(is_os, says_temporary)
    assert both(OSError("temporary glitch"))
    assert not both(OSError("disk gone"))
    assert not both(ValueError("temporary glitch"))
    assert retry_any(retry_never, lambda error: True)(KeyError())


def test_operators_build_the_named_combinators() -> None:
    a, b = retry_if_exception_type(KeyError), retry_if_exception_type(OSError)
    assert (a | b) == retry_any(a, b)
    assert isinstance(a & b, retry_all)
    assert (a | retry_any(b)) == retry_any(a, b)
    assert isinstance(stop_after_attempt(3) | stop_never, stop_any)
    assert isinstance(stop_after_attempt(3) & stop_after_delay(3), stop_all)
    assert (wait_fixed(1) + wait_fixed(2)) == wait_combine(wait_fixed(1), wait_fixed(2))


def test_named_combinators_show_as_calls_with_one_part_and_as_operators_with_more() -> None:
    a, b = retry_if_exception_type(KeyError), retry_never
    assert repr(retry_any(a)) == f"retry_any({a!r})"
    assert repr(retry_any(a, b)) == f"{a!r} | retry_never"
    assert repr(wait_chain(wait_fixed(1), wait_none())) == (
        "wait_chain(wait_fixed(wait=1), wait_none())"
    )


# --- stop conditions -----------------------------------------------------------------------


def test_stop_before_delay_counts_the_coming_wait() -> None:
    stop = stop_before_delay(30)
    assert not stop(1, 20.0, upcoming_sleep=9.9)
    assert stop(1, 20.0, upcoming_sleep=10.0)
    assert stop(1, 30.0)
    assert not stop(1, 29.0)  # upcoming_sleep defaults to 0, like stop_after_delay


def test_stop_any_and_stop_all() -> None:
    either = stop_any(stop_after_attempt(5), stop_before_delay(30))
    assert not either(4, 10.0, upcoming_sleep=5.0)
    assert either(5, 0.0)
    assert either(1, 25.0, upcoming_sleep=5.0)
    both = stop_all(stop_after_attempt(5), stop_after_delay(30))
    assert not both(5, 10.0)
    assert not both(1, 30.0)
    assert both(5, 30.0)


def test_stop_combinators_pass_the_coming_wait_to_functions_that_take_it() -> None:
    def old_style(attempts: int, elapsed_time: float) -> bool:
        return attempts >= 10

    def peer_style(attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool:
        return upcoming_sleep > 60

    stop = stop_any(old_style, peer_style)
    assert not stop(1, 0.0, upcoming_sleep=5.0)
    assert stop(1, 0.0, upcoming_sleep=61.0)
    assert stop(10, 0.0, upcoming_sleep=0.0)
    assert stop_never(1, 0.0, upcoming_sleep=1.0) is False


# --- wait strategies -----------------------------------------------------------------------


def test_wait_incrementing() -> None:
    assert waits(wait_incrementing(start=1, increment=2, max=6), 5) == [1, 3, 5, 6, 6]
    assert waits(wait_incrementing(), 3) == [0.0, 100.0, 200.0]  # the peer's defaults
    assert waits(wait_incrementing(start=5, increment=-2), 5) == [5, 3, 1, 0.0, 0.0]
    assert wait_incrementing(increment=1)(10**9, RNG) == 10**9 - 1  # no overflow


@pytest.mark.parametrize("kind", [wait_random_exponential, wait_full_jitter])
def test_wait_random_exponential_draws_below_the_exponential_wait(kind: Any) -> None:
    wait = kind(multiplier=0.5, max=10)
    for attempts in range(1, 9):
        ceiling = min(0.5 * 2 ** (attempts - 1), 10)
        samples = [wait(attempts, RNG) for _ in range(300)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling  # spread over the whole range,
        assert min(samples) < 0.2 * ceiling  # not stuck at either end
    floor = kind(max=4, min=1)
    assert all(1 <= floor(n, RNG) <= 4 for n in range(1, 8) for _ in range(50))
    assert floor(1, RNG) == 1  # the first ceiling, 1 s, is the floor itself


def test_wait_random_exponential_replays_with_a_seed() -> None:
    policy = retry_policy(wait=wait_random_exponential(max=30), stop=stop_never)
    first = [policy.next(0.0, n, ValueError(), seed=n) for n in range(1, 8)]
    assert first == [policy.next(0.0, n, ValueError(), seed=n) for n in range(1, 8)]
    assert first[2] == random.Random(3).uniform(0.0, 4.0)


def test_wait_full_jitter_is_wait_random_exponential() -> None:
    assert isinstance(wait_full_jitter(), wait_random_exponential)
    assert isinstance(wait_random_exponential(), wait_exponential)
    assert repr(wait_full_jitter(max=5)) == (
        "wait_full_jitter(multiplier=1.0, exp_base=2.0, max=5, min=0.0)"
    )


def test_wait_chain_uses_one_strategy_per_retry_then_keeps_the_last() -> None:
    chain = wait_chain(wait_fixed(1), wait_fixed(2), wait_fixed(5))
    assert waits(chain, 6) == [1, 2, 5, 5, 5, 5]
    assert chain(0, RNG) == 1  # a direct caller passing 0 still gets the first
    # the chosen strategy sees the real retry number, not its place in the chain
    assert waits(wait_chain(wait_none(), wait_exponential()), 4) == [0.0, 2.0, 4.0, 8.0]
    assert waits(wait_chain(*[wait_fixed(1)] * 3, wait_fixed(10)), 5) == [1, 1, 1, 10, 10]


def test_wait_combine_adds_up_and_works_with_sum() -> None:
    combined = wait_combine(wait_fixed(1), wait_incrementing(start=0, increment=1))
    assert waits(combined, 3) == [1.0, 2.0, 3.0]
    assert sum([wait_fixed(1), wait_fixed(2), wait_fixed(3)]) == wait_combine(
        wait_fixed(1), wait_fixed(2), wait_fixed(3)
    )
    jittered = wait_combine(wait_fixed(1), wait_random(0, 1))
    assert all(1 <= jittered(1, RNG) <= 2 for _ in range(200))


# --- retry_policy --------------------------------------------------------------------------


def test_retry_policy_takes_its_arguments_in_the_peer_order() -> None:
    policy = retry_policy(retry_always, wait_fixed(2), stop_after_attempt(2))
    assert [policy.next(0.0, n, ValueError()) for n in (1, 2)] == [2, None]


def test_retry_policy_rejects_arguments_in_the_wrong_place() -> None:
    with pytest.raises(WorkflowValidationError, match="is a wait strategy, not a stop condition"):
        retry_policy(stop=wait_fixed(1))
    with pytest.raises(
        WorkflowValidationError, match=r"stop=wait_fixed\(wait=1\) .* pass it as wait="
    ):
        retry_policy(retry_always, stop_after_attempt(3), wait_fixed(1))  # type: ignore[arg-type]
    with pytest.raises(WorkflowValidationError, match="retry=stop_never is a stop condition"):
        retry_policy(retry=stop_never)


def test_stop_before_delay_gives_up_rather_than_wait_past_the_budget() -> None:
    policy = retry_policy(wait=wait_fixed(10), stop=stop_before_delay(25))
    assert policy.next(0.0, 1, ValueError()) == 10
    assert policy.next(10.0, 2, ValueError()) == 10  # the next attempt starts at 20 s
    assert policy.next(20.0, 3, ValueError()) is None  # it would start at 30 s
    # stop_after_delay, by contrast, would still start an attempt at 30 s
    late = retry_policy(wait=wait_fixed(10), stop=stop_after_delay(25))
    assert late.next(20.0, 3, ValueError()) == 10


def test_a_plain_stop_function_may_ask_for_the_coming_wait() -> None:
    def no_long_waits(attempts: int, elapsed_time: float, *, upcoming_sleep: float) -> bool:
        return upcoming_sleep > 3

    policy = retry_policy(wait=wait_exponential(), stop=no_long_waits)
    assert [policy.next(0.0, n, ValueError()) for n in (1, 2, 3, 4)] == [1, 2, None, None]


# --- LlamaIndex's API-reference example, end to end ----------------------------------------


def api_reference_policy() -> Any:
    # As printed in the LlamaIndex API reference for workflows.retry_policy.
    return retry_policy(
        retry=retry_if_exception_type((TimeoutError, ConnectionError))
        | retry_if_exception_message(match="rate limit|temporarily unavailable"),
        wait=wait_fixed(1) + wait_random(0, 1),
        stop=stop_after_attempt(5) | stop_before_delay(30),
    )


def flaky_flow(errors: list[Exception], clock: FakeClock) -> tuple[Workflow, list[float]]:
    """A workflow whose one step raises ``errors`` in turn, then succeeds."""
    started: list[float] = []

    class Flow(Workflow):
        @step(retry_policy=api_reference_policy())
        async def call_llm(self, ctx: Context, ev: StartEvent) -> StopEvent:
            started.append(clock.now())
            if ctx.attempt <= len(errors):
                raise errors[ctx.attempt - 1]
            return StopEvent(result=f"answered on attempt {ctx.attempt}")

    return Flow(clock=clock), started


@pytest.mark.usefixtures("hang_guard")
async def test_api_reference_example_retries_transient_errors_then_succeeds() -> None:
    errors: list[Exception] = [
        ValueError("429: rate limit reached"),
        TimeoutError("read timed out"),
        RuntimeError("service temporarily unavailable"),
        ConnectionResetError("peer reset"),
    ]
    clock = FakeClock()
    flow, started = flaky_flow(errors, clock)
    assert await flow.run() == "answered on attempt 5"
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert len(gaps) == 4
    assert all(1 <= gap <= 2 for gap in gaps)  # wait_fixed(1) + wait_random(0, 1)


@pytest.mark.usefixtures("hang_guard")
async def test_api_reference_example_fails_at_once_on_a_permanent_error() -> None:
    flow, started = flaky_flow([ValueError("invalid api key")], FakeClock())
    with pytest.raises(ValueError, match="invalid api key"):
        await flow.run()
    assert started == [0.0]


@pytest.mark.usefixtures("hang_guard")
async def test_api_reference_example_gives_up_after_five_attempts() -> None:
    flow, started = flaky_flow([ConnectionError(f"down {n}") for n in range(1, 10)], FakeClock())
    with pytest.raises(ConnectionError, match="down 5"):
        await flow.run()
    assert len(started) == 5
    assert started[-1] <= 8  # four waits of at most 2 s


# --- values: frozen, copyable, picklable ---------------------------------------------------

VALUES: list[Any] = [
    retry_if_exception_message(match=re.compile("x+")),
    retry_if_not_exception_message(message="fatal"),
    retry_if_exception_cause_type((KeyError, OSError)),
    retry_unless_exception_type(KeyError),
    retry_any(retry_if_exception_type(KeyError), retry_never),
    retry_all(retry_always),
    stop_any(stop_after_attempt(2), stop_before_delay(5)),
    stop_all(stop_never),
    wait_chain(wait_fixed(1), wait_incrementing()),
    wait_combine(wait_full_jitter(), wait_random()),
    api_reference_policy(),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_new_building_blocks_survive_copy_and_pickle(value: Any) -> None:
    for clone in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert clone == value
        assert hash(clone) == hash(value)
        assert repr(clone) == repr(value)


# --- bad arguments -------------------------------------------------------------------------

BAD: list[tuple[Callable[[], object], str]] = [
    (lambda: retry_if_exception("yes"), "predicate must be a function"),  # type: ignore[arg-type]
    (lambda: retry_if_exception_message(), "give exactly one of message= .* or match="),
    (lambda: retry_if_exception_message("a", "b"), "give exactly one of"),
    (lambda: retry_if_exception_message(message=5), "message must be a str"),  # type: ignore[arg-type]
    (lambda: retry_if_exception_message(match=5), "match must be a str or re.Pattern"),  # type: ignore[arg-type]
    (lambda: retry_if_exception_message(match="(unclosed"), r"not a valid regular .*re\.escape"),
    (lambda: retry_if_not_exception_message(), "give exactly one of"),
    (lambda: retry_if_exception_cause_type(()), "exception_types"),
    (lambda: retry_unless_exception_type("KeyError"), "exception_types"),  # type: ignore[arg-type]
    (lambda: retry_any(), "no parts, so it would never retry; pass at least one"),
    (lambda: retry_all(), "no parts, so it would retry every error"),
    (lambda: retry_any(KeyError()), "each part must be a retry condition"),
    (lambda: retry_any(stop_after_attempt(3)), "each part must be a retry condition"),
    (lambda: retry_never | stop_never, "each part must be a retry condition"),
    (lambda: stop_any(), "no parts, so it would never stop"),
    (lambda: stop_all(), "no parts, so it would stop at the first failure"),
    (lambda: stop_any(wait_fixed(1)), "each part must be a stop condition"),
    (lambda: stop_before_delay(-1), "max_delay must be a finite number of seconds >= 0"),
    (lambda: wait_chain(), "no parts, so it would have no wait to give"),
    (lambda: wait_chain(5), "each part must be a wait strategy"),  # type: ignore[arg-type]
    (lambda: wait_combine(), "no parts, so it would never wait"),
    (lambda: wait_combine(retry_always), "each part must be a wait strategy"),
    (lambda: wait_incrementing(start=-1), "start must be a finite number of seconds >= 0"),
    (lambda: wait_incrementing(increment=float("nan")), "increment must be a finite number"),
    (lambda: wait_incrementing(max=-1), "max must be a number of seconds >= 0"),
    (lambda: wait_incrementing(start=10, max=5), "start=10 is above max=5"),
    (lambda: wait_random_exponential(min=-1), "min must be"),
    (lambda: wait_random_exponential(min=9, max=3), "min=9 is above max=3"),
    (lambda: wait_full_jitter(exp_base=0.5), "exp_base must be a finite growth factor"),
]


@pytest.mark.parametrize(("build", "needle"), BAD, ids=[needle for _, needle in BAD])
def test_bad_arguments_say_what_is_wrong_and_what_would_do(
    build: Callable[[], object], needle: str
) -> None:
    with pytest.raises(WorkflowValidationError, match=f"^[a-zA-Z_]+: .*{needle}"):
        build()


def test_times_may_be_timedeltas_as_in_the_peer() -> None:
    from datetime import timedelta

    assert rp.wait_fixed(timedelta(seconds=2)) == rp.wait_fixed(2.0)
    assert waits(rp.wait_fixed(timedelta(milliseconds=1500)), 2) == [1.5, 1.5]
    assert waits(
        rp.wait_incrementing(timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=6)), 5
    ) == [1.0, 3.0, 5.0, 6.0, 6.0]
    assert waits(rp.wait_exponential(max=timedelta(seconds=5), min=timedelta(seconds=2)), 4) == [
        2.0,
        2.0,
        4.0,
        5.0,
    ]
    assert rp.wait_random_exponential(max=timedelta(minutes=1)).max == 60.0
    assert rp.wait_random(timedelta(0), timedelta(seconds=1)) == rp.wait_random(0, 1)
    assert rp.stop_after_delay(timedelta(minutes=5))(1, 299.0) is False
    assert rp.stop_after_delay(timedelta(minutes=5))(1, 300.0) is True
    assert rp.stop_before_delay(timedelta(seconds=10))(1, 5.0, upcoming_sleep=5.0) is True
    with pytest.raises(WorkflowValidationError, match="wait must be a finite number of seconds"):
        rp.wait_fixed(timedelta(seconds=-1))
