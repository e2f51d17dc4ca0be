"""The HTTP API end to end through a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from riverbed.client import AsyncClient, RunFailed
from riverbed.server import create_app
from server_workflows.approval import Approval, Boom, Counter, Flaky
from server_workflows.harness import serve

APPROVAL = Approval().workflow_name
COUNTER = Counter().workflow_name
BOOM = Boom().workflow_name
FLAKY = Flaky().workflow_name


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    from riverbed.stores.urls import store_from_url

    store = store_from_url(url)
    app = create_app(
        [Approval(store=store), Counter(store=store), Boom(store=store), Flaky(store=store)]
    )
    async with serve(app) as base:
        yield base
    await store.close()


async def test_start_stream_answer_result(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run = await client.start(APPROVAL, {"topic": "budget", "ticks": 2})
        assert run["status"] == "running"
        run_id = run["run_id"]
        seen = []
        async for event in client.stream(run_id):
            seen.append((event.kind, event.seq, event.type))
            if event.type == "Question":
                assert event.data == {"prompt": "Approve budget?"}
                await client.send_event(run_id, "Answer", {"approved": True, "note": "ok"})
        assert seen == [
            ("stream", 1, "Tick"),
            ("stream", 2, "Tick"),
            ("stream", 3, "Question"),
            ("end", 4, "Decision"),
        ]
        result = await client.result(run_id)
        assert result == {"result": None, "topic": "budget", "approved": True, "note": "ok"}
        assert await client.state(run_id) == {"topic": "budget", "ticks": 2, "answered": True}
        runs = await client.list(workflow=APPROVAL)
        assert [r["run_id"] for r in runs] == [run_id]
        assert runs[0]["status"] == "completed"


async def test_start_with_wait_returns_the_result(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run = await client.start(COUNTER, {"upto": 4}, run_id="count-4", wait=True)
        assert run["status"] == "completed"
        assert run["result"] == {"total": 4}
        assert run["run_id"] == "count-4"


async def test_failed_run_streams_its_failure_and_result_raises(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run = await client.start(BOOM, {}, wait=True)
        assert run["status"] == "failed"
        assert "the fuse was short" in run["error"]
        events = [e async for e in client.stream(run["run_id"])]
        assert [(e.kind, e.type) for e in events] == [("end", "WorkflowFailedEvent")]
        with pytest.raises(RunFailed, match="fuse"):
            await client.result(run["run_id"])


async def test_several_clients_follow_one_run(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run = await client.start(COUNTER, {"upto": 20, "delay": 0.01})

        async def follow() -> list[int]:
            return [e.seq or 0 async for e in client.stream(run["run_id"])]

        results = await asyncio.gather(*(follow() for _ in range(5)))
        assert all(r == list(range(1, 22)) for r in results)


async def test_repeated_client_event_id_applies_once(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run_id = (await client.start(APPROVAL, {"topic": "x", "ticks": 0}))["run_id"]
        async for event in client.stream(run_id):
            if event.type == "Question":
                break
        for _ in range(3):
            await client.send_event(run_id, "Answer", {"approved": False}, client_event_id="a1")
        assert (await client.wait(run_id))["status"] == "completed"
        async with httpx.AsyncClient(base_url=base_url) as http:
            events = (await http.get(f"/api/runs/{run_id}/events")).json()["events"]
        assert [e["type"] for e in events] == ["Ask", "Question", "Answer", "Decision"]
        assert events[2]["client_event_id"] == "a1"


async def test_cancel_a_waiting_run_and_an_ended_one(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run_id = (await client.start(APPROVAL, {"topic": "x", "ticks": 0}))["run_id"]
        async for event in client.stream(run_id):
            if event.type == "Question":
                break
        cancelled = await client.cancel(run_id)
        assert cancelled["status"] == "cancelled"
        again = await client.cancel(run_id)
        assert again["status"] == "cancelled"
        last = [e async for e in client.stream(run_id, after=1)]
        assert [(e.kind, e.type) for e in last] == [("end", "WorkflowCancelledEvent")]


async def test_runs_waiting_for_an_answer_are_flagged_and_listed(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        done = await client.start(COUNTER, {"upto": 2}, run_id="counted", wait=True)
        assert done["status"] == "completed"
        run_id = (await client.start(APPROVAL, {"topic": "y", "ticks": 0}))["run_id"]
        async for event in client.stream(run_id):
            if event.type == "Question":
                break
        flags = {r["run_id"]: r["waiting"] for r in await client.list()}
        assert flags == {run_id: True, "counted": False}
        assert [r["run_id"] for r in await client.list(status="waiting")] == [run_id]
        assert await client.list(status="waiting", offset=1) == []
        await client.send_event(run_id, "Answer", {"approved": False})
        assert (await client.result(run_id))["approved"] is False
        assert await client.list(status="waiting") == []


async def test_workflow_endpoints(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        listed = (await http.get("/api/workflows")).json()["workflows"]
        assert {w["name"] for w in listed} == {APPROVAL, COUNTER, BOOM, FLAKY}
        approval = next(w for w in listed if w["name"] == APPROVAL)
        assert approval["accepts"] == ["Answer", "HumanResponseEvent"]
        assert approval["human_input"] is True
        schema = (await http.get(f"/api/workflows/{APPROVAL}/schema")).json()
        assert schema["input"]["required"] == ["topic"]
        assert "approved" in schema["output"]["properties"]
        assert "approved" in schema["events"]["Answer"]["properties"]
        graph = (await http.get(f"/api/workflows/{APPROVAL}/graph")).json()
        assert {"step:prepare", "step:decide"} <= {n["id"] for n in graph["graph"]["nodes"]}
        assert graph["svg"].startswith("<svg")
        doc = (await http.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.1")
        page = await http.get("/")
        assert page.status_code == 200
        assert "<title>riverbed" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        script = await http.get("/static/app.js")
        assert script.status_code == 200
        assert "http://" not in script.text  # no CDN: everything is served from here
        assert "https://" not in script.text + page.text


async def test_timeline_details_and_graph_of_a_retried_run(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run = await client.start(FLAKY, {}, wait=True)
        assert run["result"] == 2
    async with httpx.AsyncClient(base_url=base_url) as http:
        rid = run["run_id"]
        timeline = (await http.get(f"/api/runs/{rid}/timeline")).json()["timeline"]
        attempts = [(r["kind"], r["step"], r["attempt"]) for r in timeline if r["kind"] != "event"]
        assert attempts == [("failure", "shaky", 1), ("commit", "shaky", 2)]
        failure = next(r for r in timeline if r["kind"] == "failure")
        assert "the network blinked" in failure["error"]
        assert failure["duration"] is not None
        details = (await http.get(f"/api/runs/{rid}/details")).json()
        assert details["run"]["status"] == "completed"
        assert [a["outcome"] for a in details["attempts"]] == ["retrying", "committed"]
        graph = (await http.get(f"/api/runs/{rid}/graph")).json()
        assert "step:shaky" in graph["taken"]["nodes"]
        assert graph["taken"]["step_runs"] == {"shaky": 1}
        assert "rb-taken" in graph["svg"]


async def test_mounted_in_another_app_without_its_lifespan(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from riverbed.stores.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "mounted.db")
    parent = Starlette(routes=[Mount("/riverbed", app=create_app([Counter(store=store)]))])
    async with serve(parent) as base, AsyncClient(f"{base}/riverbed") as client:
        run = await client.start(COUNTER, {"upto": 2}, wait=True)
        assert run["result"] == {"total": 2}
        assert [e.seq async for e in client.stream(run["run_id"])] == [1, 2, 3]
        async with httpx.AsyncClient(base_url=base) as http:
            page = await http.get("/riverbed/")
            assert 'src="static/app.js"' in page.text  # relative: works under any prefix
            assert (await http.get("/riverbed/static/app.js")).status_code == 200
    await store.close()
