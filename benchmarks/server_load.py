"""Load on the HTTP server, loopback only: many SSE clients on one run, and many runs
started through the API. Prints throughput and memory, and checks that nothing is left
behind (connections, feeds, tasks, handlers).

    .venv/bin/python benchmarks/server_load.py                # 200 clients, 1,000 runs
    .venv/bin/python benchmarks/server_load.py --clients 50 --runs 200 --events 100

The server runs in a thread of this process (its own event loop) so that its tasks and
feeds can be counted; the clients run on the main thread's loop with httpx. Both share
the interpreter (and the GIL): numbers are a lower bound for a server in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from riverbed import Context, Event, StartEvent, StopEvent, Workflow, step
from riverbed.server import create_app
from riverbed.server.app import app_service
from riverbed.stores.sqlite import SqliteStore


class Go(StartEvent):
    events: int = 200
    delay: float = 0.005


class Tick(Event):
    n: int


class Ticker(Workflow):
    """Writes ``events`` stream events, ``delay`` apart, in one step."""

    @step
    async def tick(self, ctx: Context, ev: Go) -> StopEvent:
        for n in range(1, ev.events + 1):
            ctx.write_event_to_stream(Tick(n=n))
            await asyncio.sleep(ev.delay)
        return StopEvent(result=ev.events)


class Quick(Workflow):
    """Ends at once."""

    @step
    async def done(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="ok")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


@contextlib.contextmanager
def server_thread(app: Any) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", backlog=2048))
    loops: list[asyncio.AbstractEventLoop] = []

    def main() -> None:
        loop = asyncio.new_event_loop()
        loops.append(loop)
        loop.run_until_complete(server.serve(sockets=[sock]))
        loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", loops[0]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def server_tasks(loop: asyncio.AbstractEventLoop) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # not this one

    return asyncio.run_coroutine_threadsafe(count(), loop).result(5)


async def follow(http: httpx.AsyncClient, run_id: str) -> list[int]:
    seqs: list[int] = []
    async with http.stream("GET", f"/api/runs/{run_id}/stream") as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                seqs.append(int(line[4:]))
    return seqs


async def many_followers(base: str, clients: int, events: int, delay: float) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
        # Start the run only once every client is connected and waiting: all of them must
        # see every event live, through the one shared feed.
        run_id = "load-follow"
        start = time.perf_counter()
        started = asyncio.Event()

        async def client() -> list[int]:
            await started.wait()
            return await follow(http, run_id)

        await http.post(
            f"/api/workflows/{Ticker().workflow_name}/runs",
            json={"input": {"events": events, "delay": delay}, "run_id": run_id},
        )
        start = time.perf_counter()
        started.set()
        results = await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
    expected = list(range(1, events + 2))  # the events, then the end event
    exact = sum(r == expected for r in results)
    delivered = sum(len(r) for r in results)
    return {
        "clients": clients,
        "events_per_client": events + 1,
        "exactly_once": f"{exact}/{clients}",
        "wall_s": round(wall, 2),
        "messages_per_s": round(delivered / wall),
    }


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client connection: httpx itself costs more CPU per
    request than the server at high concurrency, which would measure the client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base: str) -> RawConnection:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def many_runs(base: str, runs: int, concurrency: int) -> dict[str, Any]:
    name = Quick().workflow_name
    path = f"/api/workflows/{name}/runs"
    queue = list(range(runs))
    latencies: list[float] = []

    async def worker() -> None:
        conn = await RawConnection.open(base)
        try:
            while queue:
                queue.pop()
                t0 = time.perf_counter()
                status, body = await conn.post(path, b'{"input": {}}')
                if status != 202:
                    raise RuntimeError(f"start failed: {status} {body[:200]!r}")
                latencies.append(time.perf_counter() - t0)
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    started = time.perf_counter() - start
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        while True:
            page = await http.get(
                "/api/runs",
                params={"workflow": name, "status": "completed", "limit": 1, "offset": runs - 1},
            )
            if page.json()["runs"]:
                break
            await asyncio.sleep(0.05)
    finished = time.perf_counter() - start
    latencies.sort()
    return {
        "runs": runs,
        "concurrency": concurrency,
        "start_wall_s": round(started, 2),
        "runs_started_per_s": round(runs / started),
        "all_completed_s": round(finished, 2),
        "p50_start_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_start_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "load.db")
        app = create_app([Ticker(store=store), Quick(store=store)])
        service = app_service(app)
        sockets_before = open_sockets()
        rss_before = rss_mb()
        with server_thread(app) as (base, loop):
            tasks_idle = server_tasks(loop)
            print(f"server up: {base}, {tasks_idle} tasks idle, RSS {rss_before:.0f} MB")
            follow_stats = asyncio.run(many_followers(base, args.clients, args.events, args.delay))
            rss_follow = rss_mb()
            print("SSE fan-out:", follow_stats, f"RSS {rss_follow:.0f} MB")
            run_stats = asyncio.run(many_runs(base, args.runs, args.concurrency))
            rss_runs = rss_mb()
            print("starting runs:", run_stats, f"RSS {rss_runs:.0f} MB")
            time.sleep(0.5)  # let the last connections close
            tasks_after = server_tasks(loop)
            leftovers = {
                "feeds": len(service.hub),
                "live_handlers": len(service.handlers),
                "tasks_above_idle": tasks_after - tasks_idle,
            }
        leftovers["sockets_above_start"] = open_sockets() - sockets_before
        print("left behind:", leftovers)
        asyncio.run(store.close())
    ok = follow_stats["exactly_once"] == f"{args.clients}/{args.clients}" and not any(
        leftovers.values()
    )
    print("OK" if ok else "PROBLEM")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
