"""Following a run over Server-Sent Events: resuming after a dropped connection gets every
event exactly once; two server processes on one SQLite file serve the same runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from riverbed.client import AsyncClient, Client
from riverbed.server import create_app
from riverbed.stores.sqlite import SqliteStore
from server_workflows.approval import Approval, Counter
from server_workflows.harness import serve, server_process

COUNTER = Counter().workflow_name
APPROVAL = Approval().workflow_name


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    store = SqliteStore(tmp_path / "runs.db")
    async with serve(create_app([Counter(store=store), Approval(store=store)])) as base:
        yield base
    await store.close()


async def read_ids(response: httpx.Response, stop_at: int | None = None) -> list[int]:
    ids = []
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            ids.append(int(line[4:]))
            if stop_at is not None and ids[-1] >= stop_at:
                break
    return ids


async def test_reconnecting_with_last_event_id_continues_without_gap_or_repeat(
    base_url: str,
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:
        started = await http.post(
            f"/api/workflows/{COUNTER}/runs", json={"input": {"upto": 30, "delay": 0.005}}
        )
        run_id = started.json()["run_id"]
        url = f"/api/runs/{run_id}/stream"
        async with http.stream("GET", url) as first:
            assert first.headers["content-type"].startswith("text/event-stream")
            before = await read_ids(first, stop_at=10)
        # the connection is closed mid-run; come back with the last id seen
        async with http.stream("GET", url, headers={"last-event-id": str(before[-1])}) as again:
            after = await read_ids(again)
        assert before + after == list(range(1, 32))  # 30 numbers, then the end event
        async with http.stream("GET", url, headers={"last-event-id": "31"}) as done:
            assert await read_ids(done) == []  # the client had everything
        async with http.stream("GET", url, params={"after": 29}) as tail:
            assert await read_ids(tail) == [30, 31]


class DroppingTransport(httpx.AsyncBaseTransport):
    """Cuts the first ``drops`` stream responses after a few chunks (a flaky network)."""

    def __init__(self, drops: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.drops = drops

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/stream") or self.drops == 0:
            return response
        self.drops -= 1
        inner = response.stream

        class Cut(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                count = 0
                async for chunk in inner:  # type: ignore[union-attr]
                    yield chunk[: len(chunk) // 2] if count == 1 else chunk
                    if count == 1:
                        raise httpx.ReadError("connection reset (simulated)")
                    count += 1

            async def aclose(self) -> None:
                await inner.aclose()  # type: ignore[union-attr]

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut())

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_client_stream_resumes_by_itself(base_url: str) -> None:
    transport = DroppingTransport(drops=3)
    async with AsyncClient(base_url, transport=transport) as client:
        run = await client.start(COUNTER, {"upto": 25, "delay": 0.005})
        events = [e async for e in client.stream(run["run_id"])]
    assert transport.drops == 0
    assert [e.seq for e in events] == list(range(1, 27))
    assert [e.data["n"] for e in events[:-1]] == list(range(1, 26))
    assert events[-1].kind == "end"
    assert events[-1].data == {"result": {"total": 25}}


def test_two_server_processes_share_one_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    spec = "server_workflows.approval:Approval"
    token = "two-processes-token-0123456789"
    with (
        server_process([spec], url, token) as first,
        server_process([spec], url, token) as second,
        Client(first, token=token) as one,
        Client(second, token=token) as two,
    ):
        run_id = one.start(APPROVAL, {"topic": "merger", "ticks": 2})["run_id"]
        kinds = []
        for event in two.stream(run_id):  # followed through the other process
            kinds.append(event.type)
            if event.type == "Question":
                answer = two.send_event(run_id, "Answer", {"approved": True, "note": "yes"})
                assert answer["executes_here"] is False  # the first process runs it
        assert kinds == ["Tick", "Tick", "Question", "Decision"]
        assert two.result(run_id, timeout=10)["approved"] is True
        assert one.get(run_id)["status"] == "completed"
        assert [r["run_id"] for r in two.list()] == [run_id]
        # a run executing in the first process, cancelled through the second
        other = one.start(APPROVAL, {"topic": "picnic", "ticks": 0})["run_id"]
        assert next(iter(two.stream(other))).type == "Question"
        assert two.cancel(other)["status"] == "cancelled"
        assert [e.type for e in one.stream(other)] == ["Question", "WorkflowCancelledEvent"]
