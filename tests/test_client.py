"""The Python client: errors as ApiError with the problem, the sync client, and a helpful
message when httpx is missing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from riverbed.client import ApiError, AsyncClient, Client, RunFailed
from riverbed.server import create_app
from riverbed.stores.sqlite import SqliteStore
from server_workflows.approval import Approval, Counter
from server_workflows.harness import serve, serve_in_thread

APPROVAL = Approval().workflow_name
COUNTER = Counter().workflow_name


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    store = SqliteStore(tmp_path / "runs.db")
    async with serve(create_app([Approval(store=store), Counter(store=store)])) as base:
        yield base
    await store.close()


async def test_refusals_are_api_errors_with_the_problem(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        with pytest.raises(ApiError) as caught:
            await client.get("no-such-run")
        assert caught.value.status == 404
        assert caught.value.kind == "run-not-found"
        with pytest.raises(ApiError, match="topic") as bad:
            await client.start(APPROVAL, {"topic": 3})
        assert bad.value.kind == "invalid-input"
        with pytest.raises(ApiError) as stream_error:
            async for _ in client.stream("no-such-run"):
                pass
        assert stream_error.value.status == 404


async def test_cancelled_run_result_raises_run_failed(base_url: str) -> None:
    async with AsyncClient(base_url) as client:
        run = await client.start(APPROVAL, {"topic": "x", "ticks": 0})
        async for event in client.stream(run["run_id"]):
            if event.type == "Question":
                break
        assert (await client.cancel(run["run_id"]))["status"] == "cancelled"
        with pytest.raises(RunFailed) as failed:
            await client.result(run["run_id"])
        assert failed.value.run["status"] == "cancelled"
        assert [w["name"] for w in await client.workflows()] == [APPROVAL, COUNTER]


def test_sync_client(tmp_path: Path) -> None:
    app = create_app([Counter(store=SqliteStore(tmp_path / "runs.db"))])
    with serve_in_thread(app) as base, Client(base) as client:
        run = client.start(COUNTER, {"upto": 3}, run_id="sync-1")
        assert [e.seq for e in client.stream("sync-1")] == [1, 2, 3, 4]
        assert client.result(run["run_id"], timeout=10) == {"total": 3}
        assert client.state("sync-1") == {}
        assert client.list(status="completed")[0]["run_id"] == "sync-1"
        assert client.wait("sync-1")["status"] == "completed"
        with pytest.raises(ApiError, match="takes no event"):
            client.send_event("sync-1", "Nope")


def test_missing_httpx_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "try:\n    import riverbed.client\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    ).stdout
    assert "pip install 'riverbed[client]'" in out
