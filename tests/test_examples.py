"""The examples run as a user runs them; the durable ones survive being killed or stopped."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from riverbed import Workflow

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "research_assistant.py"


def _demo(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_demo_runs_durably_on_sqlite(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "Report: how do rivers shape valleys" in lines
    assert lines[-2] == "3 findings, 2 of them after a retry (5 LLM calls)"
    assert lines[-1].endswith("completed, recorded in riverbed-demo.db")
    assert (tmp_path / "riverbed-demo.db").exists()


def test_demo_killed_after_its_first_commit_resumes_to_the_same_report(tmp_path: Path) -> None:
    killed = _demo(tmp_path, env={"RIVERBED_CRASHPOINTS": "after_commit:1"})
    assert killed.returncode == -signal.SIGKILL
    with sqlite3.connect(tmp_path / "riverbed-demo.db") as db:
        ((run_id, status),) = db.execute("SELECT run_id, status FROM runs").fetchall()
    assert status == "running"

    resumed = _demo(tmp_path, "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    fresh = _demo(tmp_path / ".." / tmp_path.name)  # same question, a new run
    report = [line for line in resumed.stdout.splitlines() if line.startswith("  - ")]
    assert report == [line for line in fresh.stdout.splitlines() if line.startswith("  - ")]
    assert (
        resumed.stdout.splitlines()[-1] == f"run {run_id} completed, recorded in riverbed-demo.db"
    )


# -- human approval -------------------------------------------------------------------------

APPROVAL = ROOT / "examples" / "human_approval.py"


def _approval(answers: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(APPROVAL), "rivers"],
        input=answers,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_human_approval_asks_until_the_answer_is_yes() -> None:
    done = _approval("make it shorter\ny\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Publish it? [y/note] ") == 2
    assert done.stdout.splitlines()[-1] == (
        "Publish it? [y/note] published after 1 revision(s): Why rivers matter: they carve "
        "valleys, carry silt and feed deltas. [revised: make it shorter]"
    )


def test_human_approval_without_an_answer_is_not_published() -> None:
    done = _approval("")
    assert done.returncode == 1
    assert done.stderr.strip() == "not published: no answer"


def test_human_approval_prompts_when_run_by_the_cli() -> None:
    pytest.importorskip("riverbed.cli")
    done = subprocess.run(
        [sys.executable, "-m", "riverbed.cli", "run", "--quiet", f"{APPROVAL}:workflow"],
        input="y\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Publish it? [y/note]" in done.stderr
    assert done.stdout.strip() == (
        "published after 0 revision(s): Why rivers matter: they carve valleys, carry silt "
        "and feed deltas."
    )


def test_human_approval_exposes_its_workflow() -> None:
    spec = importlib.util.spec_from_file_location("human_approval", APPROVAL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.workflow, Workflow)
    assert module.workflow.validate() is True  # it asks for human input


# -- durable long run -----------------------------------------------------------------------

LONG_RUN = ROOT / "examples" / "durable_long_run.py"


def _interrupt_long_run(db: Path) -> tuple[str, list[str]]:
    """Start the long run, press Ctrl-C after its fifth step; return the run id and output."""
    command = [sys.executable, str(LONG_RUN), "--db", str(db), "--delay", "0.1"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("step 5/"):
            line = child.stdout.readline()
            assert line, f"the example ended early: {lines}"
            lines.append(line.rstrip("\n"))
        child.send_signal(signal.SIGINT)  # what Ctrl-C does
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    lines += out.splitlines()
    assert child.returncode == 130, err
    assert lines[-1].startswith("interrupted: the run is saved")
    run_id = lines[0].split()[1]
    with sqlite3.connect(db) as conn:
        (status,) = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    assert status == "running"
    return run_id, lines


def _check_long_run_finished_once(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        status, state_json = conn.execute("SELECT status, state FROM runs").fetchone()
        retried = conn.execute(
            "SELECT COUNT(*) FROM deliveries WHERE step = 'work' AND attempts > 1"
        ).fetchone()[0]
    assert status == "completed"
    assert json.loads(state_json)["done"] == list(range(1, 21))  # no step appended twice
    assert retried <= 1  # only the step Ctrl-C interrupted ran again


def test_long_run_interrupted_with_ctrl_c_resumes_without_repeating_a_step(
    tmp_path: Path,
) -> None:
    db = tmp_path / "long.db"
    run_id, first = _interrupt_long_run(db)
    resumed = subprocess.run(
        [sys.executable, str(LONG_RUN), "--db", str(db), "--resume", run_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    second = resumed.stdout.splitlines()
    before = int(second[0].split(": ")[1].split()[0])
    assert before >= 5
    assert second[-1] == "20 steps done, checksum 2870"  # the sum of i*i for i in 1..20
    printed = [int(line.split()[1].split("/")[0]) for line in first + second if line[:5] == "step "]
    assert sorted(printed) == list(range(1, 21))  # each step reported once, over both runs
    _check_long_run_finished_once(db)


def test_long_run_started_by_the_script_resumes_with_the_cli(tmp_path: Path) -> None:
    pytest.importorskip("riverbed.cli")
    db = tmp_path / "long.db"
    run_id, _ = _interrupt_long_run(db)
    resumed = subprocess.run(
        [
            *(sys.executable, "-m", "riverbed.cli", "runs", "resume", "--quiet", run_id),
            *(f"{LONG_RUN}:workflow", "--store", f"sqlite:///{db}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[-1] == "20 steps done, checksum 2870"
    _check_long_run_finished_once(db)


def test_long_run_resume_of_an_unknown_run_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(LONG_RUN), "--db", str(tmp_path / "x.db"), "--resume", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "No run with id 'nope'" in done.stderr
