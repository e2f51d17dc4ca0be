"""A run whose every step commits to a durable store (``docs/durability.md``).

Differences from the in-memory :class:`Run`:

- each attempt is claimed in the store first (the attempt count survives a crash);
- what an attempt produces (events it returns or sends, stream events, state edits,
  collect-buffer changes) stays with the attempt and is committed in one transaction, fenced
  by the claim token; only then is it routed and streamed;
- state edits take the run's *writer lease* at the attempt's first write and keep it until
  the attempt commits (or fails, which restores the state): a retried attempt never applies
  its edits twice, and two steps never interleave their edits;
- a run can be resumed in another process from its rows (:meth:`DurableRun.restore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import socket
import time
import uuid
import weakref
from typing import TYPE_CHECKING, Any

from riverbed._engine import crashpoints
from riverbed._engine.attempt import CURRENT_ATTEMPT, Attempt, Delivery
from riverbed._engine.collect import CollectBuffer
from riverbed._engine.run import Run, StepRuntime, no_consumer_error
from riverbed._engine.waiters import Waiter, answers_wait
from riverbed.errors import (
    FencedError,
    RunOwnedError,
    StoreError,
    WorkflowRuntimeError,
)
from riverbed.events import (
    Event,
    InputRequiredEvent,
    StepFailedEvent,
    StopEvent,
    WorkflowFailedEvent,
)
from riverbed.serialization import EventCodec, TypeRegistry, type_key
from riverbed.state import snapshot
from riverbed.stores.base import RunRecord, RunStatus
from riverbed.stores.durable import (
    CommitRow,
    DurableStore,
    EventRow,
    ProducedRow,
    RunSnapshot,
    SentBeforeWait,
    WaiterRow,
)

if TYPE_CHECKING:
    from riverbed.workflow import Workflow

__all__ = ["DurableRun", "owner_id", "registry_for", "unclaimed"]

logger = logging.getLogger("riverbed")

#: how often a run waiting for input looks for answers committed by other processes
_POLL_SECONDS = 0.2

_OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_id() -> str:
    """This process's owner string: ``host:pid:random`` (a dead pid frees its runs)."""
    return _OWNER


def registry_for(workflow: Workflow) -> TypeRegistry:
    """The event and state types a workflow's stored data may name."""
    return TypeRegistry([*workflow.events, workflow._state_type()])


class DurableRun(Run):
    """A run backed by a :class:`~riverbed.stores.durable.DurableStore`."""

    durable_store: DurableStore

    def setup_durable(self, store: DurableStore) -> None:
        self.durable_store = store
        self.codec = EventCodec(registry_for(self.workflow))
        self._records_steps = True
        self.plain_stream = False
        self._writer = asyncio.Lock()
        self._finished_by_commit = False
        self._polling = False
        self._confirming_end = False
        #: (event seq, step) -> (claim token, attempt number) of deliveries claimed for
        #: us by our own commits (attempt 1) or by acquire_run(claim=True)
        self._preclaimed: dict[tuple[int, str], tuple[str, int]] = {}
        #: waiter id -> done once its registration (register_waiter) is in the store
        self._registering: dict[str, asyncio.Future[None]] = {}
        #: waiter id -> the delivery (seq, step) that registered it in this process
        self._waiter_owners: dict[str, tuple[int, str]] = {}
        #: the events of the commits on their way to the store, by commit: a wait that
        #: begins meanwhile is answered by the first that matches (see register_waiter)
        self._in_flight: list[list[tuple[int, Event]]] = []
        #: this process created the run's row (or acquired it to resume): only then may it
        #: record the run's end. ``run(run_id=...)`` with a taken id fails in create_run,
        #: and that failure must not end (or release) the existing run it collided with.
        self._owns_row = False
        state_store = self.ctx._state_store
        state_store.before_write = self._take_writer_lease
        state_store.check = self._check_storable

    # -- starting and resuming -----------------------------------------------------------
    async def _record_start(self, record: RunRecord, start_event: Event, seq: int) -> None:
        await self.workflow.open_store()
        record.workflow_version = self.workflow.workflow_version
        key, payload = self.codec.dump(start_event)
        state = self.ctx._state_store._state
        targets = self._target_names(start_event, None)
        # The start event's deliveries are claimed for this process in the same
        # transaction (as a step commit claims what it produces): the first step needs
        # no claim transaction. Dying here is dying before that claim.
        claims = tuple(os.urandom(16).hex() for _ in targets)
        crashpoints.hit("before_claim")
        await self.durable_store.create_run(
            record,
            EventRow(seq, key, payload),
            targets,
            self.codec.dump_state(state),
            type_key(type(state)),
            owner_id(),
            time.time() + self.timeout if self.timeout is not None else None,
            claims,
        )
        self._preclaimed.update(
            ((seq, name), (token, 1)) for name, token in zip(targets, claims, strict=True)
        )
        self._owns_row = True
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        # While this process runs the run (waiting for input included), it renews its
        # ownership, so no other process takes the run over while this one is alive.
        # The task holds the run only weakly between beats: a run nobody refers to any more
        # (its process forgot it) is not kept alive by its own heartbeat.
        self._track(self.loop.create_task(_heartbeat(weakref.ref(self))))

    async def _beat_once(self) -> bool:
        """Renew ownership; False once the run is over or was taken over."""
        if self.done:
            return False
        beat = getattr(self.durable_store, "heartbeat", None)
        if beat is None:
            return False
        try:
            await beat(self.run_id, owner_id())
        except RunOwnedError:
            # Another process took the run over (this one was paused too long): stop
            # executing it here without recording anything; the new owner goes on.
            logger.warning(
                "run %s was taken over by another process; stopping it here",
                self.run_id,
            )
            self._owns_row = False
            await self.cancel()
            return False
        except StoreError as exc:
            logger.warning("heartbeat of run %s failed: %s", self.run_id, exc)
        return True

    # -- the store failing -------------------------------------------------------------------
    def _lost_store(self, exc: Exception) -> bool:
        return isinstance(exc, StoreError) and not isinstance(exc, FencedError)

    def _give_up(self, exc: Exception) -> None:
        """The store failed under an attempt (unreachable, locked, its connection lost). The
        run's rows are intact, so it must not be recorded as failed: stop executing it
        here, record nothing, and let it be resumed (a worker takes it again once the
        store is back and this process's lease has lapsed)."""
        if self.done:
            return
        logger.warning(
            "run %s stopped here because the store failed (%s); it can be resumed", self.run_id, exc
        )
        self._owns_row = False
        # The store's own error reaches the caller: it names the problem and says that
        # nothing committed was lost.
        self.background(self._finish(RunStatus.FAILED, WorkflowFailedEvent(exception=exc), exc))

    # -- workers ---------------------------------------------------------------------------
    def parkable(self) -> bool:
        """Whether the run only waits: for an answer from outside (a human), or for a retry
        backoff. A worker then gives it up (:meth:`abandon`) instead of holding it in
        memory; its rows say when it needs a process again (``claimable_runs``)."""
        if self.done or self._booting or not self._owns_row:
            return False
        running = 0
        for rt in self.steps.values():
            if rt.pending:
                return False
            running += rt.running
        if running == 0:
            return self.waiting_for_input or bool(self._timers)
        # every running attempt is suspended in ctx.wait_for_event
        return running == self.waiters.waiting

    async def abandon(self) -> bool:
        """Stop executing the run in this process without recording anything, and release
        it for another process (a worker parking a waiting run, or shutting down). Attempts
        cut short here run again wherever the run continues. False if the run had already
        ended, or an answer arrived meanwhile (the run goes on here)."""
        if self.done:
            return False
        looked = self.waiting_for_input and await self._take_outside_events()
        if looked and not self.parkable():
            return False  # an answer came in: keep going
        self._owns_row = False
        await self.cancel()
        if self.result.done() and not self.result.cancelled():
            self.result.exception()  # nobody awaits this copy of the run any more
        # Deliveries claimed for us that never started go back unclaimed (no attempt).
        left = tuple((seq, step, token) for (seq, step), (token, _) in self._preclaimed.items())
        self._preclaimed.clear()
        try:
            await self.durable_store.release_run(self.run_id, owner_id(), left)
        except StoreError as exc:  # it stays ours until the lease lapses
            logger.warning("could not release run %s: %s", self.run_id, exc)
        return True

    def _check_idle(self) -> None:
        # A run waiting for input may be answered through another process, which commits
        # the answer to the store (handoff_submit); watch for it while we wait.
        self._watch_outside()
        if self._confirming_end:
            return  # the run may have ended elsewhere; _confirm_end looks again after
        super()._check_idle()

    def _confirm_end(self) -> None:
        """The store refused a claim or commit: if the run ended in the store (cancelled
        by id from another process, or finished by a process that took it over), end it
        here the same way instead of going on (or calling it stuck)."""
        if self.done or self._confirming_end:
            return
        self._confirming_end = True
        self.background(self._confirm_end_now())

    async def _confirm_end_now(self) -> None:
        try:
            record = await self.durable_store.get_run(self.run_id)
        except StoreError:
            record = None
        finally:
            self._confirming_end = False
        if self.done:
            return
        if record is None:
            self._check_idle()
            return
        if not record.status.is_terminal:
            await self._lost_claim()
            return
        self._owns_row = False  # the store has the outcome: record nothing more
        if record.status is RunStatus.CANCELLED:
            await self.cancel()
            return
        error = WorkflowRuntimeError(
            f"Run {self.run_id} ended in another process ({record.status.value}); this "
            "process stopped executing it. Read its outcome from the store."
        )
        await self._finish(RunStatus.FAILED, WorkflowFailedEvent(exception=error), error)

    async def _lost_claim(self) -> None:
        """A claim or commit was fenced while the run goes on in the store: another process
        took the run over, or the database lost this process's claim (a server crash that
        undid an unflushed take). What this process holds is stale, so going on here (or
        calling the run stuck, and recording that) would be wrong: stop executing it here,
        record nothing, and leave it to whoever takes it next."""
        error = FencedError(
            f"Run {self.run_id}: this process lost its claim on the run's work (another "
            "process took the run over, or the database undid the claim in a crash). It "
            "stopped executing the run here and recorded nothing; the run goes on where it "
            "is taken next (a worker, or `riverbed runs resume`)."
        )
        logger.warning("%s", error)
        self._owns_row = False
        with contextlib.suppress(StoreError):
            # Released only if still ours in the store: then it is claimable at once.
            await self.durable_store.release_run(self.run_id, owner_id())
        await self._finish(RunStatus.FAILED, WorkflowFailedEvent(exception=error), error)

    def _watch_outside(self) -> None:
        if self.waiting_for_input and not self.done and self._owns_row and not self._polling:
            self._polling = True
            # Held weakly, like the heartbeat: a forgotten run is not kept alive by it.
            self._track(self.loop.create_task(_poll_outside(weakref.ref(self))))

    async def _take_outside_events(self) -> bool:
        """Route events other processes committed; False once there is no need to look."""
        if self.done or not self.waiting_for_input:
            return False
        try:
            rows = await self.durable_store.read_events(self.run_id)
        except StoreError as exc:
            logger.warning("run %s stopped watching for answers: %s", self.run_id, exc)
            return False
        for row in rows:
            if row.seq <= self._seq or row.source_step is not None:
                continue
            self._seq = row.seq
            try:
                super().route(self.codec.load(row.type_key, row.payload), seq=row.seq)
            except WorkflowRuntimeError as exc:
                logger.warning("run %s: %s", self.run_id, exc)
        return True

    def _start_timeout(self, seconds: float | None) -> None:
        if seconds is not None:
            self._timeout_handle = self.clock.call_later(max(0.0, seconds), self._on_timeout)

    async def restore(self, snap: RunSnapshot) -> None:
        """Continue a run from its rows: state, held collect events, pending deliveries."""
        codec = self.codec
        self._owns_row = True  # the caller acquired the run for this process
        self._start_heartbeat()
        state_store = self.ctx._state_store
        state_store._state = codec.load_state(state_store.state_type, snap.state)
        self._seq = snap.next_seq - 1
        stream = snap.stream
        if stream is None:
            stream = tuple(await self.durable_store.read_stream(self.run_id, 0, 1_000_000))
        for streamed in stream:
            self.stream.write(codec.load(streamed.type_key, streamed.payload))
        for held in snap.collected:
            rt = self.runtime(held.step)
            buffer = rt.buffers.setdefault(held.buffer_id or None, CollectBuffer())
            buffer.restore(held.event.seq, codec.load(held.event.type_key, held.event.payload))
        if self.timeout is not None and snap.deadline is not None:
            self._start_timeout(snap.deadline - time.time())
        now = time.time()
        for row in snap.deliveries:
            if row.step not in self._specs:
                raise _missing_step(self.run_id, self.workflow, row.step)
            delivery = Delivery(
                codec.load(row.event.type_key, row.event.payload), row.event_seq, row.lineage
            )
            delivery.attempts = row.attempts
            if row.claim_token is not None:
                # Claimed for us by acquire_run: the attempt about to start is that claim.
                self._preclaimed[(row.event_seq, row.step)] = (row.claim_token, row.attempts)
                delivery.attempts = row.attempts - 1
            rt = self.runtime(row.step)
            # visible_at is a retry backoff only for a pending delivery. For a running one
            # it is the lease of the attempt that was running when its process died; this
            # process now owns the run, so that attempt is void and the delivery runs again
            # at once (waiting for the lease stalled every resumed run for lease_seconds).
            if row.status == "pending" and row.visible_at > now:
                self._schedule_retry(rt, delivery, row.visible_at - now)
            else:
                self._enqueue(rt, delivery, defer=False)
        self.waiting_for_input = (
            any(isinstance(ev, InputRequiredEvent) for ev in self.stream.events)
            and not snap.deliveries
        )
        self._restore_waiters(snap.waiters)
        self._booting = False
        self.loop.call_soon(self._check_idle)

    def _restore_waiters(self, rows: tuple[WaiterRow, ...]) -> None:
        """Unanswered stored waits: their steps run again (their deliveries were restored)
        and wait again; an event sent before they get there answers the stored wait."""
        registry = self.codec.registry
        for row in rows:
            if row.resolved is not None or row.event_type not in registry:
                continue  # answered; or its type is gone (a send then says nobody waits)
            event_type = registry.resolve(row.event_type)
            if not issubclass(event_type, Event):
                continue
            requirements = json.loads(row.requirements or "{}") or None
            self.waiters.restore(
                Waiter(row.waiter_id, event_type, requirements, row.step, self.loop.create_future())
            )

    # -- attempts ------------------------------------------------------------------------
    async def _begin_attempt(self, attempt: Attempt) -> bool:
        delivery = attempt.delivery
        attempt.started_at = time.time()
        claimed = self._preclaimed.pop((delivery.seq, attempt.rt.spec.name), None)
        if claimed is not None and delivery.attempts == claimed[1]:
            # Claimed for us by the commit that produced it or by acquire_run: no claim
            # transaction.
            attempt.token = claimed[0]
            crashpoints.hit("after_claim")
            return True
        attempt.token = uuid.uuid4().hex
        crashpoints.hit("before_claim")
        try:
            delivery.attempts = await self.durable_store.claim(
                self.run_id,
                delivery.seq,
                attempt.rt.spec.name,
                attempt.token,
                getattr(self.durable_store, "lease_seconds", 30.0),
            )
        except FencedError:
            # Already committed, or the run ended: maybe elsewhere (cancelled by id).
            self._confirm_end()
            return False
        crashpoints.hit("after_claim")
        return True

    def route(
        self,
        event: Event,
        *,
        seq: int | None = None,
        lineage: int = 0,
        target: StepRuntime | None = None,
        source: Attempt | None = None,
        defer: bool = False,
    ) -> None:
        if source is not None and not self.done:
            # Produced inside a step: it exists only once the attempt commits.
            if seq is None:
                seq = self._next_seq()
            source.produced.append((seq, event))
            self._pending_targets(source)[seq] = (target, lineage)
            return
        super().route(event, seq=seq, lineage=lineage, target=target, defer=defer)

    @staticmethod
    def _pending_targets(attempt: Attempt) -> dict[int, tuple[Any, int]]:
        if attempt.targets is None:
            attempt.targets = {}
        return attempt.targets

    def write_stream(
        self, event: Event, attempt: Attempt | None = None, live: bool = False
    ) -> None:
        if attempt is not None and not live and not self.done:
            if isinstance(event, InputRequiredEvent):
                attempt.asked_input = True
            attempt.stream.append(event)  # streamed when the attempt commits
            return
        # Outside an attempt's commit nothing is stored: a nested run's events, events
        # written live. A wait_for_event question is the exception (register_waiter
        # stored it with its waiter).
        super().write_stream(event, None, live or not isinstance(event, InputRequiredEvent))
        if isinstance(event, InputRequiredEvent):
            # A wait_for_event question: its step stays running, so the run is not idle,
            # yet the answer may come through another process. Started from an empty
            # context: a task made here would copy the step's (its attempt and event),
            # keeping them alive as long as the watch goes on.
            self.loop.call_soon(self._watch_outside, context=contextvars.Context())

    def _publish_committed(self, event: Event) -> None:
        """Show readers a stream event that is in the store (not live)."""
        super().write_stream(event, None)
        if isinstance(event, InputRequiredEvent):
            # A question streamed before a wait: as for a wait_for_event question, the
            # answer may come through another process.
            self.loop.call_soon(self._watch_outside, context=contextvars.Context())

    def _target_names(self, event: Event, target: StepRuntime | None) -> tuple[str, ...]:
        if target is not None:
            return (target.spec.name,)
        if isinstance(event, StopEvent):
            return ()
        return self.workflow._route(type(event))

    async def _on_success(
        self, rt: StepRuntime, delivery: Delivery, attempt: Attempt, result: Any
    ) -> None:
        if result is not None and not isinstance(result, Event):
            await super()._on_success(rt, delivery, attempt, result)  # fails the run
            return
        if result is not None:
            self.route(result, lineage=delivery.lineage, source=attempt)
        await self._commit(attempt)

    async def _commit(
        self, attempt: Attempt, status: RunStatus | None = None, error: BaseException | None = None
    ) -> None:
        delivery = attempt.delivery
        targets = self._pending_targets(attempt)
        new_claims: list[tuple[tuple[int, str], tuple[str, int]]] = []
        produced: list[ProducedRow] = []
        stop: StopEvent | None = None
        for seq, event in attempt.produced:
            target, lineage = targets.get(seq, (None, delivery.lineage))
            key, payload = self.codec.dump(event)
            names = self._target_names(event, target)
            # 32 random hex digits, as uuid4().hex but without building a UUID (a step's
            # commit makes one per delivery it claims).
            claims = tuple(os.urandom(16).hex() for _ in names)
            new_claims.extend(((seq, n), (t, 1)) for n, t in zip(names, claims, strict=True))
            produced.append(
                ProducedRow(
                    EventRow(seq, key, payload, attempt.rt.spec.name), names, lineage, claims
                )
            )
            if isinstance(event, StopEvent) and stop is None:
                stop = event
        # A produced InputRequiredEvent is streamed when it is routed after the commit,
        # following the attempt's own stream events (Run.route). Store it there too: the
        # rows must hold the stream readers saw, and restore() finds in them that a
        # resumed run is waiting for input (without it a waiting run was failed as stuck).
        streamed = list(attempt.stream)
        #: what this commit routes once it lands (a wait that begins meanwhile is answered
        #: by it, see register_waiter)
        flight: list[tuple[int, Event]] = []
        for seq, event in attempt.produced:
            if isinstance(event, StopEvent):
                break  # routing stops at the StopEvent (see below)
            flight.append((seq, event))
            if isinstance(event, InputRequiredEvent):
                streamed.append(event)
        result_json = None
        if stop is not None:
            status = RunStatus.COMPLETED
            value = stop if type(stop)._returns_instance else stop.result
            result_json = self.codec.dump(stop)[1] if value is stop else _json(value)
        row = CommitRow(
            event_seq=delivery.seq,
            step=attempt.rt.spec.name,
            attempt=delivery.attempts,
            claim_token=attempt.token,
            produced=tuple(produced),
            stream=tuple(self.codec.dump(ev) for ev in streamed),
            state=self.codec.dump_state(self.ctx._state_store._state)
            if attempt.holds_state
            else None,
            collect_add=self._collect_rows(attempt, "add"),
            collect_remove=self._collect_rows(attempt, "take"),
            next_seq=self._seq + 1,
            lease_seconds=float(getattr(self.durable_store, "lease_seconds", 30.0)),
            started_at=attempt.started_at,
            status=status,
            result=result_json,
            error=None if error is None else f"{type(error).__name__}: {error}",
            resolves=self._answers(attempt),
        )
        if row.resolves:
            # A waiter whose registration is still on its way to the store (another
            # connection, on PostgreSQL) must be there before its answer is recorded.
            recording = [self._registering[w] for _, w in row.resolves if w in self._registering]
            if recording:
                await asyncio.wait(recording)
        crashpoints.hit("before_commit")
        self._in_flight.append(flight)
        try:
            await self.durable_store.commit(self.run_id, row)
        except FencedError:
            logger.warning(
                "run %s step %s attempt %d was fenced; its effects were dropped",
                self.run_id,
                row.step,
                row.attempt,
            )
            attempt.undo_collects()
            self._release_writer(attempt, restore=True)
            self._confirm_end()
            return
        finally:
            self._in_flight.remove(flight)
        crashpoints.hit("after_commit")
        self._preclaimed.update(new_claims)
        self._release_writer(attempt, restore=False)
        for event in attempt.stream:
            super().write_stream(event, None)  # committed: not live
        if status is not None:
            self._finished_by_commit = True
        late = self._answers(attempt, row.resolves)
        if late:
            self.background(self._record_answers(late))
        for seq, event in attempt.produced:
            target, lineage = targets.get(seq, (None, delivery.lineage))
            if isinstance(event, StopEvent):
                await self.complete(event)
                return
            if self.waiting_for_input and not attempt.asked_input:
                self.waiting_for_input = False
            super().route(event, seq=seq, lineage=lineage, target=target, defer=True)

    def _answers(
        self, attempt: Attempt, recorded: tuple[tuple[int, str], ...] = ()
    ) -> tuple[tuple[int, str], ...]:
        """(event seq, waiter id) for each waiting step that an event this attempt produced
        answers (the first such event per waiter), recorded with the commit. Waiters in
        ``recorded`` are left out: after the commit, what remains are the waiters that
        started waiting while it was on its way."""
        if not self.waiters:
            return ()
        found: list[tuple[int, str]] = []
        seen: set[str] = {waiter_id for _, waiter_id in recorded}
        for seq, event in attempt.produced:
            if isinstance(event, StopEvent):
                break  # routing stops at the StopEvent
            for waiter_id in self.waiters.matching(event):
                if waiter_id not in seen:
                    seen.add(waiter_id)
                    found.append((seq, waiter_id))
        return tuple(found)

    async def _record_answers(self, answers: tuple[tuple[int, str], ...]) -> None:
        # The waiters' own registrations must be in the store first (on PostgreSQL they
        # may still be on another connection). A crash before this write leaves such a
        # waiter unanswered in the store, as if it had started waiting after the event.
        pending = [self._registering[w] for _, w in answers if w in self._registering]
        if pending:
            await asyncio.wait(pending)
        try:
            await self.durable_store.record_answers(self.run_id, answers)
        except StoreError as exc:
            logger.warning(
                "run %s: could not record the answers to waiters %s: %s",
                self.run_id,
                ", ".join(w for _, w in answers),
                exc,
            )

    @staticmethod
    def _collect_rows(attempt: Attempt, action: str) -> tuple[tuple[str, str, int], ...]:
        if not attempt.collect_logs:
            return ()
        step = attempt.rt.spec.name
        return tuple(
            (step, buffer_id or "", seq)
            for buffer_id, log in attempt.collect_logs.items()
            for kind, seq, _ in log
            if kind == action and seq
        )

    async def _on_failure(
        self, rt: StepRuntime, delivery: Delivery, attempt: Attempt, error: Exception
    ) -> None:
        attempt.undo_collects()
        self._release_writer(attempt, restore=True)
        attempt.produced.clear()
        attempt.stream.clear()
        delivery.last_error = error
        delivery.last_failed_at = time.time()
        elapsed = self.clock.now() - delivery.first_started
        delay = self._retry_delay(rt.spec, delivery, elapsed, error)
        retry_at = time.time() + delay if delay is not None else None
        try:
            await self.durable_store.fail_attempt(
                self.run_id,
                delivery.seq,
                rt.spec.name,
                attempt.token,
                repr(error),
                retry_at,
                delivery.attempts,
                attempt.started_at,
            )
        except FencedError:
            self._confirm_end()
            return
        if delay is not None:
            self._schedule_retry(rt, delivery, delay)
            return
        handler = self._catch_handler(rt.spec.name)
        if handler is not None and delivery.lineage < handler.spec.config.max_recoveries:
            failed = StepFailedEvent(
                step_name=rt.spec.name,
                input_event=delivery.event,
                exception=error,
                attempts=delivery.attempts,
                elapsed_seconds=elapsed,
                failed_at=delivery.last_failed_at,
            )
            self.route(failed, target=handler, lineage=delivery.lineage + 1, source=attempt)
            await self._commit(attempt)
            return
        await self._commit(attempt, status=RunStatus.FAILED, error=error)
        terminal = WorkflowFailedEvent(
            step_name=rt.spec.name,
            exception=error,
            attempts=delivery.attempts,
            elapsed_seconds=elapsed,
        )
        await self._finish(RunStatus.FAILED, terminal, error)

    def _end_attempt(self, attempt: Attempt) -> None:
        if self.waiters._restored:
            self.waiters.drop_restored(attempt.rt.spec.name)
        if attempt.holds_state:  # cancelled or fenced: its edits never happened
            attempt.undo_collects()
            self._release_writer(attempt, restore=True)

    # -- state writer lease --------------------------------------------------------------
    async def _take_writer_lease(self) -> None:
        attempt = CURRENT_ATTEMPT.get()
        if attempt is None or attempt.run is not self:
            if self.done:
                return
            raise WorkflowRuntimeError(
                f"The state of durable run {self.run_id} can only be changed by its steps "
                "while it runs; change it before run() or after the run ends."
            )
        if attempt.holds_state:
            return
        await self._writer.acquire()
        attempt.holds_state = True
        attempt.state_base = snapshot(self.ctx._state_store._state)

    def _release_writer(self, attempt: Attempt, restore: bool) -> None:
        if not attempt.holds_state:
            return
        if restore:
            self.ctx._state_store._state = attempt.state_base
        attempt.holds_state = False
        attempt.state_base = None
        self._writer.release()

    def _check_storable(self, state: Any) -> None:
        self.codec.dump_state(state)

    async def memo(self, attempt: Attempt, name: str, compute: Any) -> Any:
        store = self.durable_store
        invocation = attempt.invocation_id
        stored = await store.get_memo(self.run_id, invocation, name)
        if stored is None:
            from riverbed._engine.run import _call_maybe_async, _memo_json

            value = _memo_json(name, await _call_maybe_async(compute))
            stored = await store.put_memo(self.run_id, invocation, name, value)
        return json.loads(stored)

    # -- outside events ------------------------------------------------------------------
    def timer_fired(self, kind: str, key: str) -> None:
        """Durable timers are rows (retry ``visible_at``, the run ``deadline``): nothing to
        record when one goes off in this process."""

    def accept_external(self, message: Event, target: StepRuntime | None) -> None:
        self.background(self.submit(message, target, None))

    async def send_external(
        self, message: Event, target: StepRuntime | None, client_event_id: str | None
    ) -> bool:
        return await self.submit(message, target, client_event_id)

    async def submit(
        self, event: Event, target: StepRuntime | None, client_event_id: str | None
    ) -> bool:
        """An event from outside: committed first, then routed. False if the client id was
        seen before (the event was already applied)."""
        key, payload = self.codec.dump(event)
        resolves = self.waiters.matching(event)
        targets = self._target_names(event, target)
        if resolves:
            # As Run.route does (and offline_submit): the waiting steps get the event
            # through their waiters, every other step that takes it still gets a delivery.
            # Dropping all targets here left those steps' live deliveries without a row,
            # so their claim was fenced and they silently never ran.
            waiting = self.waiters.steps_of(resolves)
            targets = tuple(name for name in targets if name not in waiting)
        elif (
            not targets
            and not isinstance(event, (InputRequiredEvent, StopEvent))
            and not self.waiters.awaited(event)
        ):
            # Refused before it is committed: the journal keeps no event nobody took.
            raise no_consumer_error(event)
        seq, applied = await self.durable_store.submit_event(
            self.run_id,
            EventRow(0, key, payload, None, client_event_id),
            targets,
            resolves,
        )
        if applied and not self.done:
            self._seq = max(self._seq, seq)
            super().route(event, seq=seq, target=target)
        return applied

    async def register_waiter(
        self,
        waiter_id: str,
        event_type: type[Event],
        requirements: dict[str, Any] | None,
        step: str,
        timeout: float | None,
        announce: Event | None,
    ) -> tuple[Event | None, float | None, Event | None]:
        attempt = CURRENT_ATTEMPT.get()
        if attempt is not None and attempt.run is not self:
            attempt = None
        if attempt is not None:
            self._check_waiter_id(waiter_id, (attempt.delivery.seq, step))
        # What the step streamed before this wait (a question written with
        # write_event_to_stream, progress) must reach readers now, not when the step ends:
        # the answer may depend on it. It commits with the waiter, so when a re-run of the
        # step (after a restart or a retry) registers the same waiter again, the first
        # attempt already streamed it and the re-run's copy is dropped. A waiter id this
        # same attempt registered before is waited on again: its events stay with the step.
        early: list[Event] = []
        if (
            attempt is not None
            and attempt.stream
            and (attempt.waited is None or waiter_id not in attempt.waited)
        ):
            early = list(attempt.stream)
        announced = [self.codec.dump(event) for event in early]
        # Likewise the events it sent (ctx.send_event) before this wait: they go to other
        # steps now, with the waiter, because the answer it waits for may come from them
        # (a question among them is streamed, as when a commit routes it).
        sent = self._sent_before(attempt, waiter_id)
        if sent is not None and attempt is not None:
            announced += [
                self.codec.dump(ev)
                for _, ev in attempt.produced[: len(sent.produced)]
                if isinstance(ev, InputRequiredEvent)
            ]
        if announce is not None:
            announced.append(self.codec.dump(announce))
        registered: asyncio.Future[None] = self.loop.create_future()
        self._registering[waiter_id] = registered
        try:
            row = await self.durable_store.register_waiter(
                self.run_id,
                WaiterRow(
                    waiter_id,
                    step,
                    type_key(event_type),
                    json.dumps(requirements or {}),
                    timeout_at=None if timeout is None else time.time() + timeout,
                    # Events of commits on their way: when one returns, its events are
                    # handed to this waiter (Run.route), so the store records the answer
                    # with the waiter rather than in a later write (record_answers).
                    answers=tuple(
                        seq
                        for flight in self._in_flight
                        for seq, event in flight
                        if answers_wait(event_type, requirements, event)
                    ),
                ),
                announced,
                sent,
            )
        finally:
            if self._registering.get(waiter_id) is registered:
                del self._registering[waiter_id]
            registered.set_result(None)
        if attempt is not None:
            if attempt.waited is None:
                attempt.waited = set()
            attempt.waited.add(waiter_id)
            if early:
                del attempt.stream[: len(early)]
                if row.new:
                    for event in early:
                        self._publish_committed(event)
            if sent is not None:
                self._route_sent(attempt, sent, row.new)
                if sent.state is not None:
                    # Committed with the waiter; or, when an earlier run of this step
                    # reached the same waiter, committed then: this run's changes before
                    # the wait are its second copy and are undone.
                    self._release_writer(attempt, restore=not row.new)
        if row.resolved is not None:
            return self.codec.load(row.resolved.type_key, row.resolved.payload), None, None
        if attempt is not None and attempt.produced and row.new:
            self._warn_held_events(attempt, step, event_type)
        # A waiter recorded before a restart already asked (its question is in the restored
        # stream): ask only when the waiter is new.
        question = announce if row.new else None
        left = None if row.timeout_at is None else max(0.0, row.timeout_at - time.time())
        return None, left if row.timeout_at is not None else timeout, question

    def _check_waiter_id(self, waiter_id: str, delivery: tuple[int, str]) -> None:
        owner = self._waiter_owners.setdefault(waiter_id, delivery)
        if owner != delivery:
            logger.warning(
                "run %s: step %s waits under waiter_id %r, which event %d of step %s "
                "already used. In a durable run a recorded waiter id means a re-run of "
                "that same wait: this wait gets its answer, and what it sent or streamed "
                "before waiting is not stored again. Leave waiter_id out, or make it "
                "unique per wait (e.g. include ctx.invocation_id).",
                self.run_id,
                delivery[1],
                waiter_id,
                owner[0],
                owner[1],
            )

    def _sent_before(self, attempt: Attempt | None, waiter_id: str) -> SentBeforeWait | None:
        """What ``attempt`` sent (and the state it changed) before waiting on
        ``waiter_id``, to commit with the waiter; None when there is nothing to commit early
        (or it must wait for the step's commit: a StopEvent among them, or a waiter this
        attempt registered before)."""
        if attempt is None or not (attempt.produced or attempt.holds_state):
            return None
        if attempt.waited is not None and waiter_id in attempt.waited:
            return None
        if any(isinstance(ev, StopEvent) for _, ev in attempt.produced):
            return None
        targets = self._pending_targets(attempt)
        rows: list[ProducedRow] = []
        for seq, event in attempt.produced:
            target, lineage = targets.get(seq, (None, attempt.delivery.lineage))
            key, payload = self.codec.dump(event)
            names = self._target_names(event, target)
            claims = tuple(os.urandom(16).hex() for _ in names)
            rows.append(
                ProducedRow(
                    EventRow(seq, key, payload, attempt.rt.spec.name), names, lineage, claims
                )
            )
        # The state it changed goes with them: the step then gives up the state's writer
        # lease while it waits, so the steps that answer it may change the state too.
        state = self.codec.dump_state(self.ctx._state_store._state) if attempt.holds_state else None
        return SentBeforeWait(
            attempt.delivery.seq,
            attempt.rt.spec.name,
            attempt.token,
            tuple(rows),
            float(getattr(self.durable_store, "lease_seconds", 30.0)),
            state,
        )

    def _route_sent(self, attempt: Attempt, sent: SentBeforeWait, new: bool) -> None:
        """After register_waiter: the events sent before the wait are in the store (``new``)
        or were put there by an earlier run of this step that reached the same waiter (the
        copies made by this run are dropped). Either way they leave the step's commit."""
        count = len(sent.produced)
        early, attempt.produced[:count] = attempt.produced[:count], []
        targets = self._pending_targets(attempt)
        for (seq, event), row in zip(early, sent.produced, strict=True):
            target, lineage = targets.pop(seq, (None, attempt.delivery.lineage))
            if not new or self.done:
                continue
            self._preclaimed.update(
                ((seq, name), (token, 1))
                for name, token in zip(row.targets, row.claims, strict=True)
            )
            super().route(event, seq=seq, lineage=lineage, target=target)

    def _warn_held_events(self, attempt: Attempt, step: str, event_type: type[Event]) -> None:
        # In memory a sent event is routed at once; in a durable run it is part of the
        # step's commit, so it reaches other steps only when this step ends. An answer
        # that depends on it would never come: say so rather than let the run hang.
        held = sorted({type(event).__name__ for _, event in attempt.produced})
        logger.warning(
            "run %s: step %s waits for %s while holding events it sent (%s). In a durable "
            "run a step's sent events are delivered when the step ends, so if the answer "
            "depends on them it never comes. Send them from an earlier step, or return "
            "them and wait in the step that receives the reply.",
            self.run_id,
            step,
            event_type.__name__,
            ", ".join(held),
        )

    # -- endings -------------------------------------------------------------------------
    async def _persist_finish(
        self, status: RunStatus, value: Any, error: BaseException | None
    ) -> None:
        state_store = self.ctx._state_store
        state_store.before_write = None
        state_store.check = None
        store = self.durable_store
        if not self._owns_row:
            return  # e.g. RunExistsError: the row belongs to another run (or process)
        try:
            # Ending a run also releases it (owner cleared in the same transaction), so a
            # run that ended in its last step's commit needs no further write at all.
            if not self._finished_by_commit:
                message = None if error is None else f"{type(error).__name__}: {error}"
                await store.finish_run(self.run_id, status, _json(value), message)
        except StoreError as exc:
            # The caller already gets the run's outcome. Raising here escaped from a worker
            # task ("Task exception was never retrieved"); the row simply stays unfinished
            # (e.g. the file is locked by another process) and can be resumed.
            logger.warning(
                "could not record the end (%s) of run %s: %s",
                status.value,
                self.run_id,
                exc,
            )


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


async def _poll_outside(ref: weakref.ReferenceType[DurableRun]) -> None:
    try:
        while True:
            await asyncio.sleep(_POLL_SECONDS)  # real time: a human is on the other side
            run = ref()
            if run is None or not await run._take_outside_events():
                return
            del run
    finally:
        # No strong reference may stay in this frame: a cancelled task keeps its traceback.
        owner = ref()
        if owner is not None:
            owner._polling = False
        del owner


async def _heartbeat(ref: weakref.ReferenceType[DurableRun]) -> None:
    run = ref()
    if run is None:
        return
    lease = float(getattr(run.durable_store, "lease_seconds", 30.0))
    del run
    while True:
        await asyncio.sleep(lease / 3)  # real time: leases are about wall-clock liveness
        run = ref()
        if run is None or not await run._beat_once():
            return
        del run


def unclaimed(snapshot: RunSnapshot) -> tuple[tuple[int, str, str], ...]:
    """The deliveries ``acquire_run(claim=True)`` claimed in ``snapshot``, as
    ``release_run(..., unclaim=...)`` takes them (when the run is released unstarted)."""
    return tuple((d.event_seq, d.step, d.claim_token) for d in snapshot.deliveries if d.claim_token)


def wrong_workflow(run_id: str, stored: str, workflow: Workflow) -> WorkflowRuntimeError:
    return WorkflowRuntimeError(
        f"Run {run_id} belongs to workflow {stored!r}, not {workflow.workflow_name!r}. "
        "Resume it with that workflow."
    )


def _missing_step(run_id: str, workflow: Workflow, step: str) -> WorkflowRuntimeError:
    return WorkflowRuntimeError(
        f"Run {run_id} has work for step {step!r}, which {workflow.workflow_name} no longer "
        "has. Restore the step to resume this run."
    )
