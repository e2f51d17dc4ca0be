"""Scale-out end to end, every part a separate process, as users run it:

a run is started through the CLI in process A (``riverbed run --submit``), executed by two
``riverbed worker`` processes (the one that took it is stopped mid-step, the other goes
on), answered through server B and streamed through server C (both ``riverbed serve
--no-execute``), with the right result. On SQLite (a file) and on PostgreSQL (a schema of
the test's own; the workers wake by ``LISTEN/NOTIFY`` there).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pg_cluster import pg_server, pg_url  # noqa: F401 (fixtures)
from riverbed.client import AsyncClient

ROOT = Path(__file__).resolve().parents[1]
SPEC = "tests/scale_out_flow.py:workflow"
CLI = [sys.executable, "-m", "riverbed.cli"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


async def wait_for(predicate: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return f"{request.getfixturevalue('pg_url')}&lease_seconds=2"
    return f"sqlite:///{tmp_path / 'runs.db'}?lease_seconds=2"


async def test_started_by_cli_run_by_two_workers_answered_via_b_streamed_via_c(
    store_url: str, tmp_path: Path
) -> None:
    port_b, port_c = free_port(), free_port()
    servers = [
        (port, ["serve", SPEC, "--store", store_url, "--no-execute", "--port", str(port)])
        for port in (port_b, port_c)
    ]
    logs = {name: tmp_path / f"{name}.log" for name in ("b", "c", "w1", "w2")}
    worker_args = ["worker", SPEC, "--store", store_url]
    with contextlib.ExitStack() as stack:
        b = stack.enter_context(process(servers[0][1], logs["b"]))
        c = stack.enter_context(process(servers[1][1], logs["c"]))
        w1 = stack.enter_context(process(worker_args, logs["w1"]))
        w2 = stack.enter_context(process(worker_args, logs["w2"]))
        url_b, url_c = f"http://127.0.0.1:{port_b}", f"http://127.0.0.1:{port_c}"
        await asyncio.to_thread(wait_healthy, url_b, b, logs["b"])
        await asyncio.to_thread(wait_healthy, url_c, c, logs["c"])

        started = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "run", SPEC, "--store", store_url, "--submit", "--arg", "item=boat"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        run_id = started.stdout.strip()

        # The worker that took the run is stopped while the first step runs: it releases
        # the run at once and the other worker continues it (running that step again).
        def taker() -> str | None:
            for name in ("w1", "w2"):
                if f"took run {run_id}" in logs[name].read_text():
                    return name
            return None

        await wait_for(lambda: taker() is not None, "a worker to take the run")
        first = taker()
        (w1 if first == "w1" else w2).send_signal(signal.SIGTERM)
        other = "w2" if first == "w1" else "w1"
        await wait_for(lambda: f"took run {run_id}" in logs[other].read_text(), "the other worker")

        seen: list[tuple[str, str]] = []
        async with AsyncClient(url_c) as via_c, AsyncClient(url_b) as via_b:
            async for event in via_c.stream(run_id):
                seen.append((event.kind, event.type))
                if event.type == "Approval":
                    assert event.data["item"] == "boat"
                    await via_b.send_event(
                        run_id,
                        "Verdict",
                        {"response": "yes", "approved": True},
                        client_event_id="answer-1",
                    )
            run = await via_c.get(run_id)
        assert seen == [("stream", "Progress"), ("stream", "Approval"), ("end", "StopEvent")]
        assert run["status"] == "completed"
        assert run["result"] == "boat: approved"
        assert (w1 if first == "w1" else w2).wait(15) == 0  # a clean, graceful exit
