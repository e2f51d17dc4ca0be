"""One reader of a run's durable stream per process, shared by every client following it.

A :class:`RunFeed` reads the stream rows of one run from the store (``read_stream``) as
they are committed, encodes each as a Server-Sent Events frame once, and wakes the
clients following the run. It learns of new rows at once when the run executes in this
process (the server pokes it after each commit, see ``RunService``) and by polling the
store otherwise (the run executes in another process). When the run has ended and every
row is read, it adds the run's terminal event, numbered right after the last row, and
stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from riverbed.stores.base import RunRecord
from riverbed.stores.durable import StreamRow

__all__ = ["FeedHub", "RunFeed", "sse_frame"]

_PAGE = 1000


def sse_frame(event: str, data: Any, seq: int | None = None) -> bytes:
    """One Server-Sent Events frame (``id:`` only for numbered events)."""
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def stream_message(row: StreamRow) -> dict[str, Any]:
    """The JSON a client gets for one durable stream row."""
    return {
        "seq": row.seq,
        "type": row.type_key.rsplit(".", 1)[-1],
        "type_key": row.type_key,
        "data": json.loads(row.payload),
    }


class RunFeed:
    """The durable stream of one run, read once for all its followers."""

    def __init__(
        self,
        store: Any,
        run_id: str,
        terminal: Callable[[RunRecord, int], Awaitable[dict[str, Any]]],
        poll_seconds: float,
    ) -> None:
        self.store = store
        self.run_id = run_id
        #: SSE frames of stream rows; frames[i] is seq i + 1
        self.frames: list[bytes] = []
        #: the terminal event's frame, once the run has ended and every row is read
        self.end: bytes | None = None
        self.error: BaseException | None = None
        #: SSE frames of live events (never stored) of the run executing in this process;
        #: a follower gets those pushed after it connected
        self.live: list[bytes] = []
        self.followers = 0
        self._terminal = terminal
        self._poll = poll_seconds
        self._changed: asyncio.Future[None] | None = None
        self._poke = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._pump())

    @property
    def finished(self) -> bool:
        return self.end is not None or self.error is not None

    async def changed(self, timeout: float) -> None:
        """Return when rows arrive or the feed ends, or after ``timeout`` seconds."""
        if self.finished:
            return
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._changed), timeout)

    def _wake(self) -> None:
        signal, self._changed = self._changed, None
        if signal is not None and not signal.done():
            signal.set_result(None)

    async def _read_all(self) -> None:
        while True:
            rows = await self.store.read_stream(self.run_id, len(self.frames), _PAGE)
            for row in rows:
                self.frames.append(sse_frame("stream", stream_message(row), row.seq))
            if rows:
                self._wake()
            if len(rows) < _PAGE:
                return

    async def _pump(self) -> None:
        try:
            while True:
                self._poke.clear()  # a poke from now on means "read again"
                await self._read_all()
                record = await self.store.get_run(self.run_id)
                if record.status.is_terminal:
                    # The run's last rows commit with (or before) its end: read once more.
                    await self._read_all()
                    seq = len(self.frames) + 1
                    self.end = sse_frame("end", await self._terminal(record, seq), seq)
                    return
                await self._idle()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store error: followers report it and stop
            self.error = exc
        finally:
            self._wake()

    def poke(self) -> None:
        """Read the store now: the run executing here has just committed."""
        self._poke.set()

    def push_live(self, frame: bytes) -> None:
        """A live event of the run executing here, for the followers connected now."""
        self.live.append(frame)
        self._wake()

    async def _idle(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._poke.wait(), self._poll)

    async def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class FeedHub:
    """The feeds of this process, one per followed run, dropped when nobody follows."""

    def __init__(
        self,
        terminal: Callable[[RunRecord, int], Awaitable[dict[str, Any]]],
        poll_seconds: float = 0.2,
    ) -> None:
        self._feeds: dict[str, RunFeed] = {}
        self._terminal = terminal
        self.poll_seconds = poll_seconds

    def __len__(self) -> int:
        return len(self._feeds)

    @contextlib.asynccontextmanager
    async def follow(self, store: Any, run_id: str) -> AsyncIterator[RunFeed]:
        """The feed of ``run_id`` while the caller follows it."""
        feed = self._feeds.get(run_id)
        if feed is None or feed.error is not None:
            feed = RunFeed(store, run_id, self._terminal, self.poll_seconds)
            self._feeds[run_id] = feed
        feed.followers += 1
        try:
            yield feed
        finally:
            feed.followers -= 1
            if feed.followers == 0:
                if self._feeds.get(run_id) is feed:
                    del self._feeds[run_id]
                await feed.close()

    def poke(self, run_id: str) -> None:
        """Tell the feed of ``run_id`` (if followed) to read the store now."""
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.poke()

    def push_live(self, run_id: str, message: dict[str, Any]) -> None:
        """Send a live event of ``run_id`` to its followers (if any) as ``event: live``,
        without an id: it is not in the durable stream, so it cannot be resumed from."""
        feed = self._feeds.get(run_id)
        if feed is not None:
            feed.push_live(sse_frame("live", message))

    async def close(self) -> None:
        """Stop every feed (the app is shutting down)."""
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.close()


async def follow_frames(
    hub: FeedHub, store: Any, run_id: str, after: int, heartbeat: float = 15.0
) -> AsyncGenerator[bytes, None]:
    """SSE frames of ``run_id`` after stream position ``after``: every durable event once,
    then the terminal event; a comment line every ``heartbeat`` seconds while idle."""
    async with hub.follow(store, run_id) as feed:
        position = after
        live = len(feed.live)  # live events are for followers connected when they happen
        while True:
            if live < len(feed.live):
                ready = len(feed.live)
                yield b"".join(feed.live[live:ready])
                live = ready
                continue
            frames = feed.frames
            if position < len(frames):
                # Everything this follower has not had yet, in one write.
                ready = len(frames)
                yield b"".join(frames[position:ready])
                position = ready
                continue
            if feed.end is not None:
                if position == len(feed.frames):
                    yield feed.end
                return
            if feed.error is not None:
                yield sse_frame(
                    "error", {"detail": f"Reading the run's stream failed: {feed.error}"}
                )
                return
            before = (len(feed.frames), len(feed.live))
            await feed.changed(heartbeat)
            if (len(feed.frames), len(feed.live)) == before and not feed.finished:
                yield b": keep-alive\n\n"
