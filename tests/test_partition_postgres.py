"""A network partition: a worker on another "host" loses PostgreSQL mid-step.

The test makes a host of its own, a Linux network namespace joined to this machine by a
veth pair (``tests/netns.py``), and a PostgreSQL cluster that also listens on this side of
the link. Worker A runs in the namespace and takes a run; while A is inside the run's slow
step, the link goes down. Worker B, on this machine, takes the run over once A's lease
lapses (A cannot renew it), runs the step again and completes the run. Then the link comes
back and A's late commit of its attempt reaches the server: it is refused (claim-token
fencing; or A learns from its heartbeat that the run is no longer its own and stops before
committing). Whichever happens first, the rows show one commit per delivery, none of them
A's, and the right result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns import NetnsHost, netns_problem

asyncpg = pytest.importorskip("asyncpg")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pg-test-cluster"
SPEC = "tests/partition_flow.py:workflow"
LEASE = 1.5
STEP_SECONDS = 4.0

pytestmark = pytest.mark.skipif(
    netns_problem() is not None or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
    reason=f"needs network namespaces ({netns_problem()}) and PostgreSQL's binaries",
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def cluster(extra_listen: str) -> Iterator[int]:
    """A private cluster on 127.0.0.1 and ``extra_listen``; yields its port."""
    directory = tempfile.mkdtemp(prefix="riverbed-partition-")
    port = free_port()
    env = {**os.environ, "PG_EXTRA_LISTEN": extra_listen}
    started = subprocess.run(
        [str(SCRIPT), "start", directory, str(port)], env=env, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    try:
        yield port
    finally:
        subprocess.run([str(SCRIPT), "stop", directory, "immediate"], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def worker(
    argv_prefix: list[str], url: str, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*argv_prefix, sys.executable, "-m", "riverbed.cli", "worker", SPEC, "--store", url],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_for(predicate: object, what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_partitioned_worker_cannot_commit_and_the_run_completes_elsewhere(
    tmp_path: Path,
) -> None:
    from partition_flow import Job, PartitionFlow

    effects = tmp_path / "effects.log"
    effects.touch()
    env = {
        **os.environ,
        "RIVERBED_PARTITION_LOG": str(effects),
        "RIVERBED_PARTITION_SECONDS": str(STEP_SECONDS),
        "PYTHONPATH": str(ROOT / "tests"),
    }
    with NetnsHost() as host, cluster(host.host_ip) as port:
        local_url = f"postgresql://postgres@127.0.0.1:{port}/postgres?lease_seconds={LEASE}"
        remote_url = f"postgresql://postgres@{host.host_ip}:{port}/postgres?lease_seconds={LEASE}"
        client = PartitionFlow(store=local_url, workflow_name="partition-flow")
        run_id = await client.submit(Job(n=4))

        a = worker(host.command([]), remote_url, tmp_path / "a.log", env)
        b: subprocess.Popen[bytes] | None = None
        try:
            await wait_for(lambda: str(a.pid) in effects.read_text(), "worker A's attempt", 30)
            host.cut()  # A is inside the slow step: it loses the database
            b = worker([], local_url, tmp_path / "b.log", env)

            async def ended() -> bool:
                return (await client.store.get_run(run_id)).status.is_terminal

            deadline = time.monotonic() + 60
            while not await ended():
                assert time.monotonic() < deadline, (tmp_path / "b.log").read_text()
                await asyncio.sleep(0.1)
            record = await client.store.get_run(run_id)
            assert record.status.value == "completed", record.error
            assert record.result == "41"

            host.heal()  # A's late commit (or heartbeat) reaches the server now
            await wait_for(
                lambda: any(
                    marker in (tmp_path / "a.log").read_text()
                    for marker in ("was fenced", "taken over", "no longer")
                ),
                "worker A to find out it lost the run: " + (tmp_path / "a.log").read_text()[-3000:],
                60,
            )
        finally:
            stop(a)
            if b is not None:
                stop(b)
            await client.store.close()

        attempts = [line.split() for line in effects.read_text().splitlines()]
        assert [pid for pid, _ in attempts] == [str(a.pid), str(b.pid)]
        assert [attempt for _, attempt in attempts] == ["1", "2"]
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        try:
            schema = await conn.fetchval(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'commits'"
            )
            commits = await conn.fetch(
                f'SELECT step, attempt FROM "{schema}".commits WHERE run_id = $1'
                " ORDER BY commit_seq",
                run_id,
            )
        finally:
            await conn.close()
        # One commit per delivery, and the slow step's is B's attempt 2, not A's attempt 1.
        assert [(r["step"], r["attempt"]) for r in commits] == [("slow", 2), ("finish", 1)]
