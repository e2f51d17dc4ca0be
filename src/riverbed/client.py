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


@dataclass
class _Call:
    """One request of the server's API, built once for both clients."""

    method: str
    url: str
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None
    timeout: Any = httpx.USE_CLIENT_DEFAULT


def _start_call(
    workflow: str, input: dict[str, Any] | None, run_id: str | None, wait: bool
) -> _Call:
    body: dict[str, Any] = {"input": input or {}}
    if run_id is not None:
        body["run_id"] = run_id
    url = f"/api/workflows/{workflow}/runs"
    if wait:  # the server answers when the run ends: no client timeout
        return _Call("POST", url, {"wait": "true"}, body, None)
    return _Call("POST", url, None, body)


def _list_call(workflow: str | None, status: str | None, limit: int, offset: int) -> _Call:
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if workflow:
        params["workflow"] = workflow
    if status:
        params["status"] = status
    return _Call("GET", "/api/runs", params)


def _event_call(
    run_id: str,
    type: str,
    data: dict[str, Any] | None,
    client_event_id: str | None,
    step: str | None,
) -> _Call:
    body: dict[str, Any] = {
        "type": type,
        "data": data or {},
        "client_event_id": client_event_id or uuid.uuid4().hex,
    }
    if step is not None:
        body["step"] = step
    return _Call("POST", f"/api/runs/{run_id}/events", body=body)


class _Waiting:
    """``wait()``'s long polls: each asks the server to hold the request up to 30 s."""

    def __init__(self, run_id: str, timeout: float | None) -> None:
        self.run_id = run_id
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.left = 30.0

    def next_call(self) -> _Call:
        if self.deadline is not None:
            self.left = max(0.0, min(30.0, self.deadline - time.monotonic()))
        return _Call("GET", f"/api/runs/{self.run_id}", {"wait": self.left}, None, self.left + 30)

    def done(self, run: dict[str, Any]) -> bool:
        return run["status"] in _TERMINAL or (self.deadline is not None and self.left <= 0)


class _Following:
    """``stream()``'s bookkeeping: where to resume, and how often the connection broke."""

    def __init__(self, run_id: str, after: int, max_reconnects: int) -> None:
        self.run_id = run_id
        self.last = after
        self.failures = 0
        self.max_reconnects = max_reconnects
        self.parser = _SseParser()

    def connect(self) -> tuple[str, dict[str, str]]:
        """The URL and headers of the next connection (which resumes after ``last``)."""
        self.parser = _SseParser()
        headers = {"last-event-id": str(self.last)} if self.last else {}
        return f"/api/runs/{self.run_id}/stream", headers

    def event(self, line: str) -> StreamEvent | None:
        message = self.parser.feed(line)
        event = _to_event(message) if message else None
        if event is not None:
            self.failures = 0
            if event.seq is not None:
                self.last = event.seq
        return event

    def lost(self) -> float:
        """The connection broke: seconds to wait before the next, or ConnectionError."""
        self.failures += 1
        if self.failures > self.max_reconnects:
            raise ConnectionError(
                f"Lost the stream of run {self.run_id} {self.failures} times in a row; last "
                f"event seen: {self.last}. Call stream(run_id, after={self.last}) to go on."
            )
        return min(0.1 * 2.0**self.failures, 2.0)


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
        return dict(_check(await self._send(_start_call(workflow, input, run_id, wait))))

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
        return list(_check(await self._send(_list_call(workflow, status, limit, offset)))["runs"])

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
        call = _event_call(run_id, type, data, client_event_id, step)
        try:
            response = await self._send(call)
        except httpx.TransportError:
            response = await self._send(call)  # same id: applied once
        return dict(_check(response))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a run; returns the run afterwards."""
        return dict(_check(await self._http.post(f"/api/runs/{run_id}/cancel")))

    async def state(self, run_id: str) -> Any:
        """The run's last committed state."""
        return _check(await self._http.get(f"/api/runs/{run_id}/state"))["state"]

    async def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The run once it has ended (or as it is after ``timeout`` seconds)."""
        waiting = _Waiting(run_id, timeout)
        while True:
            run = dict(_check(await self._send(waiting.next_call())))
            if waiting.done(run):
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
        following = _Following(run_id, after, self.max_reconnects)
        while True:
            url, headers = following.connect()
            try:
                async with self._http.stream("GET", url, headers=headers, timeout=None) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        _check(response)
                    async for line in response.aiter_lines():
                        event = following.event(line)
                        if event is None:
                            continue
                        yield event
                        if event.kind == "end":
                            return
            except httpx.TransportError:
                pass
            await asyncio.sleep(following.lost())

    async def _send(self, call: _Call) -> httpx.Response:
        return await self._http.request(
            call.method, call.url, params=call.params, json=call.body, timeout=call.timeout
        )


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
        return dict(_check(self._send(_start_call(workflow, input, run_id, wait))))

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
        return list(_check(self._send(_list_call(workflow, status, limit, offset)))["runs"])

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
        call = _event_call(run_id, type, data, client_event_id, step)
        try:
            response = self._send(call)
        except httpx.TransportError:
            response = self._send(call)  # same id: applied once
        return dict(_check(response))

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a run; returns the run afterwards."""
        return dict(_check(self._http.post(f"/api/runs/{run_id}/cancel")))

    def state(self, run_id: str) -> Any:
        """The run's last committed state."""
        return _check(self._http.get(f"/api/runs/{run_id}/state"))["state"]

    def wait(self, run_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The run once it has ended (or as it is after ``timeout`` seconds)."""
        waiting = _Waiting(run_id, timeout)
        while True:
            run = dict(_check(self._send(waiting.next_call())))
            if waiting.done(run):
                return run

    def result(self, run_id: str, timeout: float | None = None) -> Any:
        """Wait for the run and return its result (see :meth:`AsyncClient.result`)."""
        run = self.wait(run_id, timeout)
        if run["status"] not in _TERMINAL:
            raise TimeoutError(f"Run {run_id} is still running after {timeout} s.")
        return _outcome(run)

    def stream(self, run_id: str, *, after: int = 0) -> Iterator[StreamEvent]:
        """The run's stream (see :meth:`AsyncClient.stream`)."""
        following = _Following(run_id, after, self.max_reconnects)
        while True:
            url, headers = following.connect()
            try:
                with self._http.stream("GET", url, headers=headers, timeout=None) as response:
                    if response.status_code >= 400:
                        response.read()
                        _check(response)
                    for line in response.iter_lines():
                        event = following.event(line)
                        if event is None:
                            continue
                        yield event
                        if event.kind == "end":
                            return
            except httpx.TransportError:
                pass
            time.sleep(following.lost())

    def _send(self, call: _Call) -> httpx.Response:
        return self._http.request(
            call.method, call.url, params=call.params, json=call.body, timeout=call.timeout
        )
