"""A Python client for the riverbed server (``riverbed.server``), on httpx.

::

    from riverbed.client import Client

    with Client("http://127.0.0.1:8000", token="...") as client:
        run = client.start("myapp.flows.Approval", {"topic": "budget"})
        for event in client.stream(run["run_id"]):
            if event.type == "Question":
                client.send_event(run["run_id"], "Answer", {"approved": True})
        print(client.result(run["run_id"]))

:class:`AsyncClient` has the same methods, as coroutines (``stream`` is an async
iterator). ``stream`` reconnects by itself after a dropped connection, continuing after
the last event it saw (``Last-Event-ID``): no event is missed or repeated.
``send_event`` gives every event a ``client_event_id`` (unless you pass one) and retries
a request that failed in transit with it, so the event is applied once.

Needs the ``client`` extra: ``pip install 'riverbed[client]'``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "riverbed.client needs httpx, which is not installed: pip install 'riverbed[client]'"
    ) from exc

__all__ = ["ApiError", "AsyncClient", "Client", "RunFailed", "StreamEvent"]

_TERMINAL = ("completed", "failed", "cancelled", "timed_out")


class ApiError(Exception):
    """The server refused a request; ``problem`` is its problem-details body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem

    @property
    def kind(self) -> str:
        """The problem's short name, e.g. ``run-not-found``."""
        return str(self.problem.get("type", "")).rsplit(":", 1)[-1]


class RunFailed(Exception):
    """``result()`` of a run that failed, was cancelled or timed out; ``run`` is its
    record."""

    def __init__(self, run: dict[str, Any]) -> None:
        super().__init__(f"Run {run.get('run_id')} {run.get('status')}: {run.get('error')}")
        self.run = run


@dataclass(frozen=True)
class StreamEvent:
    """One message of a run's stream: ``kind`` is ``"stream"`` (a durable stream event,
    numbered by ``seq``), ``"live"`` (an event written with ``durable=False``: sent while
    you are connected, never stored, so ``seq`` is None and a reconnect does not repeat
    it) or ``"end"`` (the run's terminal event, the last message)."""

    kind: str
    seq: int | None
    type: str
    data: Any
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class _SseParser:
    """Turns lines of a ``text/event-stream`` body into (event, id, data) messages."""

    def __init__(self) -> None:
        self._event = "message"
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str | None, str] | None:
        if not line:
            if not self._data:
                self._event = "message"
                return None
            message = (self._event, self._id, "\n".join(self._data))
            self._event, self._id, self._data = "message", None, []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def _to_event(message: tuple[str, str | None, str]) -> StreamEvent | None:
    kind, seq, data = message
    if kind not in ("stream", "live", "end"):
        return None
    body = json.loads(data)
    return StreamEvent(
        kind, int(seq) if seq else None, body.get("type", ""), body.get("data"), body
    )


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase, "detail": response.text[:500]}
        raise ApiError(response.status_code, problem)
    return response.json()


def _headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def _outcome(run: dict[str, Any]) -> Any:
    if run["status"] != "completed":
        raise RunFailed(run)
    return run.get("result")


class AsyncClient:
    """An async client of one riverbed server. Use it as ``async with``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_reconnects: int = 10,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(token),
            timeout=timeout,
            transport=transport,
        )
        self.max_reconnects = max_reconnects

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def workflows(self) -> list[dict[str, Any]]:
        """The served workflows."""
        body = _check(await self._http.get("/api/workflows"))
        return list(body["workflows"])

    async def start(
        self,
        workflow: str,
        input: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Start a run of ``workflow`` with the StartEvent fields ``input``; returns the
        run (ended, with ``wait=True``)."""
        body: dict[str, Any] = {"input": input or {}}
        if run_id is not None:
            body["run_id"] = run_id
        params = {"wait": "true"} if wait else None
        timeout = None if wait else self._http.timeout
        url = f"/api/workflows/{workflow}/runs"
        return dict(_check(await self._http.post(url, json=body, params=params, timeout=timeout)))

    async def get(self, run_id: str) -> dict[str, Any]:
        """The run: status, result or error."""
        return dict(_check(await self._http.get(f"/api/runs/{run_id}")))

    async def list(
        self,
        workflow: str | None = None,
        status: str | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """A page of runs, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if workflow:
            params["workflow"] = workflow
        if status:
            params["status"] = status
        return list(_check(await self._http.get("/api/runs", params=params))["runs"])

    async def send_event(
        self,
        run_id: str,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        client_event_id: str | None = None,
        step: str | None = None,
    ) -> dict[str, Any]:
        """Send an event to a run; applied once, even when the request is retried."""
        body: dict[str, Any] = {
            "type": type,
            "data": data or {},
            "client_event_id": client_event_id or uuid.uuid4().hex,
        }
        if step is not None:
            body["step"] = step
        url = f"/api/runs/{run_id}/events"
        try:
            response = await self._http.post(url, json=body)
        except httpx.TransportError:
            response = await self._http.post(url, json=body)  # same id: applied once
        return dict(_check(response))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a run; returns the run afterwards."""
        return dict(_check(await self._http.post(f"/api/runs/{run_id}/cancel")))

    async def state(self, run_id: str) -> Any:
        """The run's last committed state."""
        return _check(await self._http.get(f"/api/runs/{run_id}/state"))["state"]

    async def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The run once it has ended (or as it is after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            run = dict(
                _check(
                    await self._http.get(
                        f"/api/runs/{run_id}", params={"wait": left}, timeout=left + 30
                    )
                )
            )
            if run["status"] in _TERMINAL or (deadline is not None and left <= 0):
                return run

    async def result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for the run and return its result; raises :class:`RunFailed` if it did not
        complete, ``TimeoutError`` if it is still running after ``timeout`` seconds."""
        run = await self.wait(run_id, timeout)
        if run["status"] not in _TERMINAL:
            raise TimeoutError(f"Run {run_id} is still running after {timeout} s.")
        return _outcome(run)

    async def stream(self, run_id: str, *, after: int = 0) -> AsyncIterator[StreamEvent]:
        """The run's stream after position ``after``, ending with its terminal event;
        reconnects after a dropped connection without missing or repeating an event."""
        last = after
        failures = 0
        while True:
            headers = {"last-event-id": str(last)} if last else {}
            try:
                async with self._http.stream(
                    "GET", f"/api/runs/{run_id}/stream", headers=headers, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _check(response)
                    parser = _SseParser()
                    async for line in response.aiter_lines():
                        message = parser.feed(line)
                        event = _to_event(message) if message else None
                        if event is None:
                            continue
                        failures = 0
                        if event.seq is not None:
                            last = event.seq
                        yield event
                        if event.kind == "end":
                            return
            except httpx.TransportError:
                pass
            failures += 1
            if failures > self.max_reconnects:
                raise ConnectionError(
                    f"Lost the stream of run {run_id} {failures} times in a row; last event "
                    f"seen: {last}. Call stream(run_id, after={last}) to go on."
                )
            await asyncio.sleep(min(0.1 * 2**failures, 2.0))


class Client:
    """A blocking client with the methods of :class:`AsyncClient`. Use it as ``with``."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_reconnects: int = 10,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=_headers(token),
            timeout=timeout,
            transport=transport,
        )
        self.max_reconnects = max_reconnects

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def workflows(self) -> list[dict[str, Any]]:
        """The served workflows."""
        return list(_check(self._http.get("/api/workflows"))["workflows"])

    def start(
        self,
        workflow: str,
        input: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Start a run (see :meth:`AsyncClient.start`)."""
        body: dict[str, Any] = {"input": input or {}}
        if run_id is not None:
            body["run_id"] = run_id
        params = {"wait": "true"} if wait else None
        timeout = None if wait else self._http.timeout
        url = f"/api/workflows/{workflow}/runs"
        return dict(_check(self._http.post(url, json=body, params=params, timeout=timeout)))

    def get(self, run_id: str) -> dict[str, Any]:
        """The run: status, result or error."""
        return dict(_check(self._http.get(f"/api/runs/{run_id}")))

    def list(
        self,
        workflow: str | None = None,
        status: str | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """A page of runs, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if workflow:
            params["workflow"] = workflow
        if status:
            params["status"] = status
        return list(_check(self._http.get("/api/runs", params=params))["runs"])

    def send_event(
        self,
        run_id: str,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        client_event_id: str | None = None,
        step: str | None = None,
    ) -> dict[str, Any]:
        """Send an event to a run; applied once, even when the request is retried."""
        body: dict[str, Any] = {
            "type": type,
            "data": data or {},
            "client_event_id": client_event_id or uuid.uuid4().hex,
        }
        if step is not None:
            body["step"] = step
        url = f"/api/runs/{run_id}/events"
        try:
            response = self._http.post(url, json=body)
        except httpx.TransportError:
            response = self._http.post(url, json=body)
        return dict(_check(response))

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a run; returns the run afterwards."""
        return dict(_check(self._http.post(f"/api/runs/{run_id}/cancel")))

    def state(self, run_id: str) -> Any:
        """The run's last committed state."""
        return _check(self._http.get(f"/api/runs/{run_id}/state"))["state"]

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The run once it has ended (or as it is after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            run = dict(
                _check(
                    self._http.get(f"/api/runs/{run_id}", params={"wait": left}, timeout=left + 30)
                )
            )
            if run["status"] in _TERMINAL or (deadline is not None and left <= 0):
                return run

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for the run and return its result (see :meth:`AsyncClient.result`)."""
        run = self.wait(run_id, timeout)
        if run["status"] not in _TERMINAL:
            raise TimeoutError(f"Run {run_id} is still running after {timeout} s.")
        return _outcome(run)

    def stream(self, run_id: str, *, after: int = 0) -> Iterator[StreamEvent]:
        """The run's stream (see :meth:`AsyncClient.stream`)."""
        last = after
        failures = 0
        while True:
            headers = {"last-event-id": str(last)} if last else {}
            try:
                with self._http.stream(
                    "GET", f"/api/runs/{run_id}/stream", headers=headers, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        _check(response)
                    parser = _SseParser()
                    for line in response.iter_lines():
                        message = parser.feed(line)
                        event = _to_event(message) if message else None
                        if event is None:
                            continue
                        failures = 0
                        if event.seq is not None:
                            last = event.seq
                        yield event
                        if event.kind == "end":
                            return
            except httpx.TransportError:
                pass
            failures += 1
            if failures > self.max_reconnects:
                raise ConnectionError(
                    f"Lost the stream of run {run_id} {failures} times in a row; last event "
                    f"seen: {last}. Call stream(run_id, after={last}) to go on."
                )
            time.sleep(min(0.1 * 2**failures, 2.0))
