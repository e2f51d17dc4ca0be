"""A server that only records runs (``execute=False``) while a worker executes them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from riverbed.client import AsyncClient
from riverbed.server import create_app
from riverbed.worker import Worker
from server_workflows.approval import Approval
from server_workflows.harness import serve

pytestmark = pytest.mark.usefixtures("hang_guard")


async def test_a_recording_server_leaves_execution_to_a_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}?lease_seconds=1"
    app_workflow = Approval(store=url)
    app = create_app([app_workflow], execute=False)
    worker = Worker([Approval()], store=url, poll_interval=0.05, park_after=0.3)
    task = asyncio.create_task(worker.run())
    try:
        async with serve(app) as base, AsyncClient(base) as client:
            run = await client.start(app_workflow.workflow_name, {"topic": "fees", "ticks": 1})
            run_id = run["run_id"]
            seen = []
            async for event in client.stream(run_id):
                seen.append((event.kind, event.type))
                if event.type == "Question":
                    # The worker parks the waiting run; the answer goes through the server
                    # to the store, and a worker picks the run up again.
                    await asyncio.sleep(0.6)
                    assert worker.running == []
                    await client.send_event(run_id, "Answer", {"approved": True, "note": "ok"})
            assert seen == [("stream", "Tick"), ("stream", "Question"), ("end", "Decision")]
            result = await client.result(run_id)
            assert result["approved"] is True
        assert worker.taken == 2
        assert worker.parked == 1
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
        await app_workflow.store.close()
