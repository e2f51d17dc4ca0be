"""CORS (off unless origins are configured, never with credentials), the generic 500
problem (no traceback leaks), and refusing to start without a token beyond loopback."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from riverbed.server import ServerConfigError, create_app, run_server
from riverbed.server.app import app_service
from riverbed.stores.sqlite import SqliteStore
from server_workflows.approval import Approval
from server_workflows.harness import TESTS, serve

ORIGIN = "http://app.example"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "runs.db")
    yield store
    await store.close()


async def test_cors_is_off_by_default(store: SqliteStore) -> None:
    async with serve(create_app([Approval(store=store)])) as base, httpx.AsyncClient() as http:
        response = await http.get(f"{base}/api/runs", headers={"origin": ORIGIN})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


async def test_cors_allows_only_configured_origins_without_credentials(
    store: SqliteStore,
) -> None:
    app = create_app([Approval(store=store)], cors_origins=[ORIGIN], token="x" * 20)
    async with serve(app) as base, httpx.AsyncClient() as http:
        preflight = await http.options(
            f"{base}/api/runs",
            headers={
                "origin": ORIGIN,
                "access-control-request-method": "GET",
                "access-control-request-headers": "authorization",
            },
        )
        assert preflight.status_code == 200  # no token needed for a preflight
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-credentials" not in preflight.headers
        denied = await http.get(f"{base}/api/runs", headers={"origin": ORIGIN})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == ORIGIN  # readable 401
        other = await http.get(f"{base}/api/runs", headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_an_unexpected_error_is_a_generic_problem_and_logged(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app([Approval(store=store)])

    async def broken(run_id: str) -> None:
        raise RuntimeError("secret internal detail")

    app_service(app).find = broken  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.ERROR, logger="riverbed.server"):
        async with serve(app) as base, httpx.AsyncClient() as http:
            response = await http.get(f"{base}/api/runs/some-run")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:riverbed:problem:internal-error"
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert "secret internal detail" in caplog.text  # the operator sees it in the log


def test_run_server_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    workflow = Approval(store=SqliteStore(tmp_path / "runs.db"))
    with pytest.raises(ServerConfigError, match="without a token"):
        run_server([workflow], None, "0.0.0.0", 8000, None)
    with pytest.raises(ServerConfigError, match="in memory"):
        run_server([Approval()], None, "127.0.0.1", 8000, None)


def test_module_entry_point_reports_bad_settings_in_one_line() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "riverbed.server", "server_workflows.approval:Approval"),
            *("--host", "0.0.0.0", "--store", "sqlite:///unused.db"),
        ],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: Refusing to listen on '0.0.0.0' without a token")
    assert "Traceback" not in done.stderr
    assert not (TESTS / "unused.db").exists()


def test_run_server_reports_a_taken_port_and_a_damaged_store_before_listening(
    tmp_path: Path,
) -> None:
    import socket

    from riverbed.errors import StoreCorruptError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        workflow = Approval(store=SqliteStore(tmp_path / "runs.db"))
        with pytest.raises(ServerConfigError, match=f"Port {port} on 127.0.0.1 is already in use"):
            run_server([workflow], None, "127.0.0.1", port, None)
    with pytest.raises(ServerConfigError, match="between 1 and 65535"):
        run_server([workflow], None, "127.0.0.1", 99999, None)
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database" * 300)
    with pytest.raises(StoreCorruptError, match="riverbed did not modify it"):
        # a free port: the store check comes right before listening
        run_server([workflow], f"sqlite:///{damaged}", "127.0.0.1", _free_port(), None)
    assert damaged.read_bytes() == b"not a database" * 300


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_run_server_says_what_it_serves_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    async def no_serving(self: object) -> None:
        return None

    monkeypatch.setattr(uvicorn.Server, "serve", no_serving)
    port = _free_port()
    run_server([Approval(store=SqliteStore(tmp_path / "runs.db"))], None, "127.0.0.1", port)
    err = capsys.readouterr().err
    assert f"serving {Approval().workflow_name} on http://127.0.0.1:{port}/" in err
    assert "runs page at /, API at /api" in err
