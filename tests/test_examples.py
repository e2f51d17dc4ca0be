"""The examples run as a user runs them, and the demo survives being killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

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
