"""``GET /api/runs/{run_id}/stream``: a run's durable stream as Server-Sent Events.

Each stream event is sent as ``id: <seq>``, ``event: stream`` and ``data: <JSON>``; the
run's terminal event follows as ``event: end`` (numbered after the last stream event), and
the response ends. A client that reconnects with ``Last-Event-ID: <seq>`` (or
``?after=<seq>``) gets every event after ``seq`` exactly once. While nothing happens a
``: keep-alive`` comment is sent every 15 seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from riverbed.server.feed import follow_frames
from riverbed.server.params import query_int
from riverbed.server.problems import Problem
from riverbed.server.service import RunService

__all__ = ["EventStreamResponse", "stream_run"]

_MAX_SEQ = 2**62


class EventStreamResponse(Response):
    """An ASGI response sending ``frames`` as ``text/event-stream``; it stops (and closes
    the frame iterator) as soon as the client disconnects."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncGenerator[bytes, None]) -> None:
        super().__init__(status_code=200, media_type=self.media_type)
        self.frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        async with anyio.create_task_group() as group:

            async def pump() -> None:
                async with contextlib.aclosing(self.frames) as frames:
                    async for frame in frames:
                        await send({"type": "http.response.body", "body": frame, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(pump)
            group.start_soon(watch)


def _cursor(request: Request) -> int:
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        try:
            value = int(header.strip())
        except ValueError:
            raise Problem(
                400, "invalid-last-event-id", f"Last-Event-ID must be a number, got {header!r}."
            ) from None
        if not 0 <= value <= _MAX_SEQ:
            raise Problem(400, "invalid-last-event-id", "Last-Event-ID is out of range.")
        return value
    return query_int(request, "after", 0, 0, _MAX_SEQ)


async def stream_run(request: Request) -> EventStreamResponse:
    """Follow a run's stream (see the module docstring)."""
    service: RunService = request.app.state.service
    run_id = request.path_params["run_id"]
    after = _cursor(request)
    store, _ = await service.find(run_id)
    return EventStreamResponse(follow_frames(service.hub, store, run_id, after))
