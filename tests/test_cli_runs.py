"""``riverbed runs list | show | cancel | prune | resume`` on a SQLite store, in-process
through ``main(argv)`` (plus one live run in a subprocess for ``cancel``)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from cli_workflows.harness import flow, riverbed, start
from riverbed.cli import main


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store with a completed run g1 (greeter, name=ana) and a failed run b1 (Boom)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RIVERBED_STORE", raising=False)
    url = "sqlite:///runs.db"
    assert main(["run", flow("greeter"), "-a", "name=ana", "--store", url, "--run-id", "g1"]) == 0
    assert main(["run", flow("Boom"), "-q", "--store", url, "--run-id", "b1"]) == 1
    return url


def test_list_shows_a_table_of_runs_newest_first(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["runs", "list", "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "RUN",
        "ID",
        "WORKFLOW",
        "STATUS",
        "STARTED",
        "DURATION",
        "RESULT",
        "/",
        "ERROR",
    ]
    # Full workflow names: the names `runs list --workflow` filters on.
    assert lines[1].split()[:3] == ["b1", "flows.Boom", "failed"]
    assert "ValueError: the flux capacitor is empty" in lines[1]
    assert lines[2].split()[:3] == ["g1", "flows.Greeter", "completed"]
    assert '{"greeting": "hello ana"}' in lines[2]
    assert main(["runs", "list", "--workflow", "flows.Boom", "--store", store]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["b1"]


def test_list_filters_pages_and_prints_json(
    store: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIVERBED_STORE", store)  # no --store: the environment names it
    capsys.readouterr()
    assert main(["runs", "list", "--json", "--status", "completed"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["status"], r["result"]) for r in runs] == [
        ("g1", "completed", {"greeting": "hello ana"})
    ]
    assert main(["runs", "list", "--json", "--limit", "1", "--offset", "1"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["g1"]
    assert main(["runs", "list", "--workflow", "flows.Nothing"]) == 0
    assert capsys.readouterr().out == "No runs.\n"


def test_show_prints_the_timeline_state_and_result(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["runs", "show", "g1", "--store", store]) == 0
    out = capsys.readouterr().out
    assert out.startswith("run g1  flows.Greeter\nstatus completed")
    timeline = out.split("Timeline\n")[1].split("\n\n")[0].splitlines()
    rows = [line.split()[1:4] for line in timeline[1:]]
    assert rows == [
        ["event", "#1", "Greet"],
        ["commit", "compose", "#1"],
        ["event", "#2", "Greeting"],
        ["commit", "finish", "#2"],
        ["event", "#3", "StopEvent"],
    ]
    assert "Result\n" in out
    assert '"greeting": "hello ana"' in out.split("Result\n")[1]


def test_show_of_a_failed_run_names_the_error(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["runs", "show", "b1", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "status failed" in out
    # one attempt, which failed; the commit that records its failure is not another one
    assert "1 events, 1 attempts (1 failed)" in out
    timeline = [line.split() for line in out.split("Timeline")[1].split("State")[0].splitlines()]
    assert ["failure", "explode", "#1", "1", "gave", "up:"] in [row[1:7] for row in timeline]
    assert ["commit", "explode", "#1", "1", "records", "the", "failure", "above"] in [
        row[1:] for row in timeline
    ]
    assert out.rstrip().endswith("ValueError: the flux capacitor is empty")


def test_show_json_is_the_whole_run_for_machines(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["runs", "show", "g1", "--json", "--store", store]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["run"]["run_id"] == "g1"
    assert details["result"] == {"greeting": "hello ana"}
    assert details["waiting"] == []  # ended: nothing waits
    assert [e["type"] for e in details["events"]] == ["Greet", "Greeting", "StopEvent"]
    assert [e["type"] for e in details["stream"]][:1] == ["Greeting"]
    assert [(a["step"], a["outcome"]) for a in details["attempts"]] == [
        ("compose", "committed"),
        ("finish", "committed"),
    ]


def test_resume_of_a_finished_run_is_refused_in_one_line(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["runs", "resume", "g1", "--workflow", flow("greeter"), "--store", store]) == 2
    err = capsys.readouterr().err
    assert err.startswith("riverbed: error: ")
    assert "Run 'g1' already finished" in err
    assert "`riverbed runs show g1 --store sqlite:///" in err  # a command, not Python
    assert len(err.splitlines()) == 1
    assert main(["runs", "resume", "nope", flow("greeter"), "--store", store]) == 2
    err = capsys.readouterr().err
    assert "No run 'nope' in sqlite:///" in err
    assert "`riverbed runs list --store sqlite:///" in err


def test_resume_takes_the_workflow_after_the_options_too(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `runs resume RUN_ID --store URL MODULE:NAME` (the order riverbed printed before):
    # argparse left MODULE:NAME unrecognized, so the command failed with a usage error.
    capsys.readouterr()
    assert main(["runs", "resume", "g1", "--store", store, flow("greeter")]) == 2
    err = capsys.readouterr().err
    assert "already finished" in err  # got as far as the run: the workflow was taken
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error, as before
        main(["runs", "resume", "g1", "--store", store, flow("greeter"), "extra"])
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_resume_needs_the_workflow(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["runs", "resume", "g1", "--store", store]) == 2
    assert "runs resume RUN_ID MODULE:NAME" in capsys.readouterr().err


def test_prune_deletes_finished_runs_older_than_the_age(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["runs", "prune", "--older-than", "7d", "--store", store]) == 0
    assert "Deleted 0 finished run(s) older than 7d." in capsys.readouterr().err
    time.sleep(0.02)
    assert main(["runs", "prune", "--older-than", "0.01s", "--store", store]) == 0
    assert "Deleted 2 finished run(s)" in capsys.readouterr().err
    assert main(["runs", "list", "--json", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_prune_rejects_an_age_without_a_unit(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["runs", "prune", "--older-than", "7", "--store", store]) == 2
    assert "like 7d or 12h" in capsys.readouterr().err


def test_cancel_stops_a_run_going_on_in_another_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A short lease: the running process heartbeats (and so sees the cancel) every 0.2 s.
    url = "sqlite:///live.db?lease_seconds=0.6"
    proc = start("run", flow("Waits"), "--store", url, "--run-id", "w1", cwd=tmp_path)
    deadline = time.monotonic() + 20
    while not (tmp_path / "live.db").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert main(["runs", "cancel", "w1", "--store", url]) == 0
    assert "Run w1 cancelled." in capsys.readouterr().err
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 4, err
    assert "was cancelled" in err
    with sqlite3.connect(tmp_path / "live.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("cancelled",)]
    assert main(["runs", "cancel", "w1", "--store", url]) == 2
    assert "already ended (cancelled)" in capsys.readouterr().err


def test_show_says_which_step_waits_and_for_what(tmp_path: Path) -> None:
    # One answer piped, then standard input closes: the run is left waiting in the store
    # for the second question (a wait_for_event); `runs show` says so.
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    asked = riverbed(
        "run", flow("Interview"), "--store", url, "--run-id", "i1", cwd=tmp_path, stdin="ana\n"
    )
    assert asked.returncode == 4, asked.stderr
    shown = riverbed("runs", "show", "i1", "--store", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "waiting: step answer waits for HumanResponseEvent" in shown.stdout
    assert "running: step answer" not in shown.stdout  # it waits, as the line above says
    details = json.loads(
        riverbed("runs", "show", "i1", "--json", "--store", url, cwd=tmp_path).stdout
    )
    [wait] = details["waiting"]
    assert (wait["step"], wait["event_type"], wait["requirements"]) == (
        "answer",
        "HumanResponseEvent",
        {},
    )


def test_show_says_a_run_waits_for_input(tmp_path: Path) -> None:
    # Standard input closes at the first question (a returned InputRequiredEvent, no
    # wait_for_event): the run is left in the store waiting for its answer.
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    asked = riverbed("run", flow("Interview"), "--store", url, "--run-id", "i2", cwd=tmp_path)
    assert asked.returncode == 4, asked.stderr
    shown = riverbed("runs", "show", "i2", "--store", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "waiting for input: the run asked" in shown.stdout
    assert 'asks: InputRequiredEvent {"prefix": "Your name?"}' in shown.stdout
    assert "riverbed runs resume" in shown.stdout
    assert "waiting: step" not in shown.stdout  # no wait_for_event
    details = json.loads(
        riverbed("runs", "show", "i2", "--json", "--store", url, cwd=tmp_path).stdout
    )
    assert (details["waiting_for_input"], details["open_work"], details["waiting"]) == (
        True,
        [],
        [],
    )


def test_list_shows_and_filters_runs_that_wait_for_an_answer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    # i3 asked with a returned question; i4 got its first answer and now waits in a
    # wait_for_event; g1 completed.
    assert (
        riverbed(
            "run", flow("Interview"), "--store", url, "--run-id", "i3", cwd=tmp_path
        ).returncode
        == 4
    )
    assert (
        riverbed(
            "run", flow("Interview"), "--store", url, "--run-id", "i4", cwd=tmp_path, stdin="ana\n"
        ).returncode
        == 4
    )
    assert (
        riverbed(
            "run", flow("greeter"), "-a", "name=bo", "--store", url, "--run-id", "g1", cwd=tmp_path
        ).returncode
        == 0
    )
    listed = riverbed("runs", "list", "--store", url, "--json", cwd=tmp_path)
    waiting = {r["run_id"]: r["waiting"] for r in json.loads(listed.stdout)}
    assert waiting == {"i3": True, "i4": True, "g1": False}
    only = riverbed("runs", "list", "--status", "waiting", "--store", url, "--json", cwd=tmp_path)
    assert [r["run_id"] for r in json.loads(only.stdout)] == ["i4", "i3"]  # newest first
    paged = riverbed(
        "runs",
        "list",
        "--status",
        "waiting",
        "--offset",
        "1",
        "--limit",
        "5",
        "--store",
        url,
        "--json",
        cwd=tmp_path,
    )
    assert [r["run_id"] for r in json.loads(paged.stdout)] == ["i3"]
    table = riverbed("runs", "list", "--store", url, cwd=tmp_path).stdout
    assert table.count("waiting") == 2
    assert "completed" in table


def test_show_says_which_process_executes_a_running_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import os
    import socket

    from riverbed.stores.base import RunRecord, RunStatus
    from riverbed.stores.durable import EventRow
    from riverbed.stores.sqlite import SqliteStore

    host = socket.gethostname()
    owners = {
        "alive": f"{host}:{os.getpid()}:x",  # this process: alive
        "gone": f"{host}:999999999:x",  # no such pid on this host
        "lapsed": "elsewhere.example:1:x",  # another host; heartbeat written 60 s ago
    }

    async def make() -> None:
        now = time.time()
        clocks = {"alive": now, "gone": now, "lapsed": now - 60}
        for name, owner in owners.items():
            store = SqliteStore(tmp_path / "runs.db", wall_clock=lambda n=name: clocks[n])
            async with store:
                record = RunRecord(name, "flows.Slow", RunStatus.RUNNING, now)
                start = EventRow(1, "riverbed.events.StartEvent", "{}")
                await store.create_run(record, start, ("crawl",), "{}", "t.S", owner, None)

    asyncio.run(make())
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    shown = {}
    for name in owners:
        assert main(["runs", "show", name, "--store", url]) == 0
        shown[name] = capsys.readouterr().out
    assert f"executed by: {owners['alive']}, last heartbeat 0s ago\n" in shown["alive"]
    assert "(gone: `riverbed runs resume`" in shown["gone"]
    assert "last heartbeat 60s ago (gone" in shown["lapsed"]
    listed = json.loads(riverbed("runs", "list", "--store", url, "--json", cwd=tmp_path).stdout)
    assert {r["run_id"]: r["owner"] for r in listed} == owners
