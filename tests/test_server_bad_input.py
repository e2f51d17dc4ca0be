"""Bad requests get a 4xx problem-details body naming the problem, and change nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from riverbed.server import create_app
from riverbed.server.security import check_binding, is_loopback
from riverbed.stores.sqlite import SqliteStore
from server_workflows.approval import Approval, Counter
from server_workflows.harness import serve

TOKEN = "t0ken-for-the-tests-0123456789"
APPROVAL = Approval().workflow_name


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SqliteStore, str]]:
    store = SqliteStore(tmp_path / "runs.db")
    app = create_app(
        [Approval(store=store), Counter(store=store)], token=TOKEN, max_body_bytes=2_000
    )
    async with serve(app) as base:
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            start = await http.post(
                f"/api/workflows/{APPROVAL}/runs", json={"input": {"topic": "t", "ticks": 0}}
            )
            run_id = start.json()["run_id"]
            # wait until it asks its question, so the store is quiet
            async with http.stream("GET", f"/api/runs/{run_id}/stream") as stream:
                async for line in stream.aiter_lines():
                    if "Question" in line:
                        break
            yield http, store, run_id
    await store.close()


async def snapshot(store: SqliteStore, run_id: str) -> Any:
    runs = await store.list_runs(limit=1000)
    return (
        [(r.run_id, r.status) for r in runs],
        await store.read_events(run_id),
        await store.read_stream(run_id),
        await store.read_state(run_id),
    )


def assert_problem(response: httpx.Response, status: int, kind: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["type"] == f"urn:riverbed:problem:{kind}"
    for word in words:
        assert word in body["detail"], body["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind", "words"),
    [
        ("POST", "/api/runs/{run}/events", b"{not json", 400, "malformed-json", ["not valid JSON"]),
        ("POST", "/api/runs/{run}/events", b"[1, 2]", 422, "invalid-input", ["an array"]),
        ("POST", "/api/runs/nope/events", {"type": "Answer"}, 404, "run-not-found", ["nope"]),
        (
            "POST",
            "/api/runs/{run}/events",
            {"type": "Decision", "data": {}},
            422,
            "unknown-event-type",
            ["'Decision'", "Answer"],
        ),
        (
            "POST",
            "/api/runs/{run}/events",
            {"type": "os.system", "data": {}},
            422,
            "unknown-event-type",
            ["os.system"],
        ),
        (
            "POST",
            "/api/runs/{run}/events",
            {"type": "Answer", "data": {"approved": "perhaps"}},
            422,
            "invalid-input",
            ["approved"],
        ),
        (
            "POST",
            "/api/runs/{run}/events",
            {"type": "Answer", "data": {"approved": True}, "step": "prepare"},
            422,
            "unknown-step",
            ["prepare"],
        ),
        (
            "POST",
            "/api/runs/{run}/events",
            {"type": "Answer", "extra": 1},
            422,
            "invalid-input",
            ["extra"],
        ),
        (
            "POST",
            f"/api/workflows/{APPROVAL}/runs",
            {"input": {"topic": 5}},
            422,
            "invalid-input",
            ["topic"],
        ),
        (
            "POST",
            f"/api/workflows/{APPROVAL}/runs",
            {"input": {"topic": "a", "colour": "red"}},
            422,
            "invalid-input",
            ["colour"],
        ),
        (
            "POST",
            f"/api/workflows/{APPROVAL}/runs",
            {"input": {"topic": "a"}, "run_id": "{run}"},
            409,
            "run-exists",
            [],
        ),
        (
            "POST",
            f"/api/workflows/{APPROVAL}/runs",
            {"input": {"topic": "a"}, "run_id": "../etc"},
            422,
            "invalid-input",
            ["run_id"],
        ),
        (  # the start event's fields at the top level: the fix is named
            "POST",
            f"/api/workflows/{APPROVAL}/runs",
            {"topic": "a"},
            422,
            "invalid-input",
            ["'topic'", 'under "input"', '{"input": {"topic": ...}}'],
        ),
        ("POST", "/api/workflows/nope/runs", {}, 404, "workflow-not-found", [APPROVAL]),
        ("GET", "/api/runs/nope", None, 404, "run-not-found", []),
        ("GET", "/api/runs/nope/state", None, 404, "run-not-found", []),
        ("GET", "/api/runs/nope/stream", None, 404, "run-not-found", []),
        ("GET", "/api/runs?status=sleeping", None, 422, "invalid-query", ["status"]),
        ("GET", "/api/runs?limit=0", None, 422, "invalid-query", ["limit"]),
        ("GET", "/api/runs?limit=ten", None, 422, "invalid-query", ["limit"]),
        ("GET", "/api/runs?workflow=nope", None, 404, "workflow-not-found", []),
        ("GET", "/api/nothing-here", None, 404, "not-found", ["/api/nothing-here"]),
        ("DELETE", "/api/runs", None, 405, "method-not-allowed", ["DELETE"]),
    ],
)
async def test_bad_request_is_a_problem_and_changes_nothing(
    env: tuple[httpx.AsyncClient, SqliteStore, str],
    method: str,
    path: str,
    body: Any,
    status: int,
    kind: str,
    words: list[str],
) -> None:
    http, store, run_id = env
    before = await snapshot(store, run_id)
    path = path.replace("{run}", run_id)
    if isinstance(body, dict):
        body = json.dumps(body).replace("{run}", run_id).encode()
    response = await http.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, status, kind, *words)
    assert await snapshot(store, run_id) == before


async def test_wrong_content_type_and_large_body(
    env: tuple[httpx.AsyncClient, SqliteStore, str],
) -> None:
    http, store, run_id = env
    before = await snapshot(store, run_id)
    url = f"/api/runs/{run_id}/events"
    response = await http.post(url, content=b"type=Answer", headers={"content-type": "text/plain"})
    assert_problem(response, 415, "unsupported-media-type", "application/json")
    big = {"type": "Answer", "data": {"approved": True, "note": "x" * 5_000}}
    assert_problem(await http.post(url, json=big), 413, "body-too-large", "2000 bytes")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(10):
            yield b" " * 500

    response = await http.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert_problem(response, 413, "body-too-large")
    assert await snapshot(store, run_id) == before


async def test_token_is_required_and_checked(
    env: tuple[httpx.AsyncClient, SqliteStore, str],
) -> None:
    http, store, run_id = env
    before = await snapshot(store, run_id)
    base = str(http.base_url)
    async with httpx.AsyncClient(base_url=base) as anonymous:
        for path in ("/api/runs", "/openapi.json", f"/api/runs/{run_id}/stream"):
            response = await anonymous.get(path)
            assert_problem(response, 401, "unauthorized", "Authorization: Bearer")
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = {"authorization": "Bearer wrong-token-wrong-token"}
        response = await anonymous.post(
            f"/api/runs/{run_id}/events", json={"type": "Answer"}, headers=wrong
        )
        assert_problem(response, 401, "unauthorized", "does not match")
        page = await anonymous.get("/")  # the page's files hold no data
        assert page.status_code == 200
    assert await snapshot(store, run_id) == before


async def test_event_to_an_ended_run_is_a_conflict(
    env: tuple[httpx.AsyncClient, SqliteStore, str],
) -> None:
    http, store, run_id = env
    answer = {"type": "Answer", "data": {"approved": True}, "client_event_id": "c1"}
    assert (await http.post(f"/api/runs/{run_id}/events", json=answer)).status_code == 202
    ended = (await http.get(f"/api/runs/{run_id}", params={"wait": 10})).json()
    assert ended["status"] == "completed"
    before = await snapshot(store, run_id)
    again = await http.post(f"/api/runs/{run_id}/events", json=answer)  # a retry: fine
    assert again.status_code == 202
    other = {"type": "Answer", "data": {"approved": False}}
    assert_problem(await http.post(f"/api/runs/{run_id}/events", json=other), 409, "run-finished")
    assert await snapshot(store, run_id) == before


def test_binding_beyond_loopback_needs_a_token() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "example.com"))
    check_binding("127.0.0.1", None)
    check_binding("0.0.0.0", TOKEN)
    with pytest.raises(ValueError, match="without a token"):
        check_binding("0.0.0.0", None)
    with pytest.raises(ValueError, match="too short"):
        check_binding("0.0.0.0", "abc")


def test_memory_workflows_are_refused_with_a_fix() -> None:
    with pytest.raises(ValueError, match=r"store='sqlite:///runs\.db'"):
        create_app([Approval()])
