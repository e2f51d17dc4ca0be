"""``riverbed run`` and ``runs resume`` as a user drives them: a subprocess, answers on
standard input, Ctrl-C (SIGINT) in the middle of a durable run, exit codes."""

from __future__ import annotations

import json
import shlex
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cli_workflows.harness import EXAMPLES, cli_env, example, flow, riverbed, start

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _last_json(stdout: str) -> object:
    """The JSON document at the end of stdout (steps may print before it)."""
    lines = stdout.rstrip("\n").splitlines()
    for first in range(len(lines)):
        try:
            return json.loads("\n".join(lines[first:]))
        except ValueError:
            continue
    raise AssertionError(f"no JSON at the end of {stdout!r}")


def test_the_seed_example_runs_and_prints_its_result_as_json(tmp_path: Path) -> None:
    done = riverbed(
        "run", example("seed_stateful_flow.py", "StatefulFlow"), "--arg", "query=hi", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert _last_json(done.stdout) == [1, 2, 3]
    assert "Need to load data" in done.stdout  # the step's own print
    progress = done.stderr
    # Progress (stderr): every step, the loop back through `start`, the end.
    assert progress.count("done start") == 2
    assert "done setup -> StartEvent" in progress
    assert "done step_two -> StopEvent" in progress
    assert "completed in" in progress


def test_the_typed_state_example_runs_from_a_module_path(tmp_path: Path) -> None:
    (tmp_path / "typed.py").write_text((EXAMPLES / "seed_typed_state.py").read_text())
    done = riverbed("run", "typed:MyStatefulFlow", cwd=tmp_path)  # cwd is on sys.path
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Done!\n"


def test_the_research_demo_streams_progress_and_retries_on_a_durable_store(
    tmp_path: Path,
) -> None:
    done = riverbed(
        "run",
        example("research_assistant.py", "ResearchAssistant"),
        "--arg",
        "question=why rivers bend",
        "--arg",
        "angles=2",
        "--store",
        "sqlite:///demo.db",
        "--run-id",
        "demo-1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = done.stdout.splitlines()
    assert report[0] == "Report: why rivers bend"
    assert len([line for line in report if line.startswith("  - ")]) == 2
    assert "event Progress message='planned 2 sub-questions'" in done.stderr
    assert "failed, will retry research attempt 1: ConnectionError" in done.stderr
    with sqlite3.connect(tmp_path / "demo.db") as db:
        assert db.execute("SELECT status FROM runs WHERE run_id = 'demo-1'").fetchone() == (
            "completed",
        )


def test_questions_are_answered_from_standard_input(tmp_path: Path) -> None:
    done = riverbed(
        "run",
        example("human_approval.py", "workflow"),
        "--arg",
        "topic=deltas",
        cwd=tmp_path,
        stdin="make it shorter\ny\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("published after 1 revision(s): Why deltas matter")
    assert "[revised: make it shorter]" in done.stdout
    assert done.stderr.count("Publish it? [y/note]") == 2


def test_a_returned_question_and_a_wait_for_event_question_are_both_asked(
    tmp_path: Path,
) -> None:
    done = riverbed("run", flow("Interview"), cwd=tmp_path, stdin="ana\nLisbon\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ana from Lisbon\n"
    assert done.stderr.index("Your name?") < done.stderr.index("Your city?")


def test_closed_standard_input_cancels_an_in_memory_run_that_asks(tmp_path: Path) -> None:
    done = riverbed("run", flow("Interview"), cwd=tmp_path, stdin="")
    assert done.returncode == 4
    assert "no answer (standard input closed)" in done.stderr
    assert done.stdout == ""


def test_a_run_that_times_out_while_asking_stops_waiting_for_the_keyboard(
    tmp_path: Path,
) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "riverbed.cli", "run", flow("impatient")],
        cwd=tmp_path,
        stdin=subprocess.PIPE,  # open, and nobody types
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            proc.wait(timeout=20)  # not communicate(): that would close stdin
        finally:
            proc.kill()
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 3, err
    assert "Quick, your name?" in err
    assert "timed out" in err.splitlines()[-1]
    assert out == ""


def _wait_for(proc: subprocess.Popen[str], text: str, times: int = 1) -> list[str]:
    """Read the process's stderr until ``text`` was seen ``times`` times."""
    assert proc.stderr is not None
    seen: list[str] = []
    while sum(text in line for line in seen) < times:
        line = proc.stderr.readline()
        if not line:
            proc.wait(10)
            raise AssertionError(f"{text!r} never came; stderr: {''.join(seen)}")
        seen.append(line)
    return seen


def test_ctrl_c_leaves_a_durable_run_resumable_and_resume_finishes_it(tmp_path: Path) -> None:
    spec = example("durable_long_run.py", "workflow")
    proc = start(
        "run",
        spec,
        "--arg",
        "steps=6",
        "--arg",
        "delay=0.15",
        "--store",
        "sqlite:///long.db",
        "--run-id",
        "long-1",
        cwd=tmp_path,
    )
    _wait_for(proc, "done work", times=2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert out == ""
    hint = err.split("Continue it with: ", 1)[1].strip()
    store_path = (tmp_path / "long.db").resolve()
    assert hint == f"riverbed runs resume long-1 {spec} --store sqlite:///{store_path}"
    with sqlite3.connect(tmp_path / "long.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("running",)]

    # The printed command, as printed, works from another directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = riverbed(*shlex.split(hint)[1:], cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == f"6 steps done, checksum {sum(i * i for i in range(1, 7))}\n"
    shown = riverbed(
        "runs", "show", "long-1", "--json", "--store", "sqlite:///long.db", cwd=tmp_path
    )
    details = json.loads(shown.stdout)
    assert details["run"]["status"] == "completed"
    assert details["state"]["done"] == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice
    committed = [a for a in details["attempts"] if a["outcome"] == "committed"]
    assert sorted(a["event_seq"] for a in committed) == list(range(1, 8))


def test_ctrl_c_cancels_an_in_memory_run(tmp_path: Path) -> None:
    proc = start("run", flow("Waits"), cwd=tmp_path)
    _wait_for(proc, "done again")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert "interrupted; run" in err
    assert err.rstrip().endswith("cancelled.")
    assert out == ""


def test_a_failed_run_exits_1_with_one_line_naming_the_error(tmp_path: Path) -> None:
    done = riverbed("run", flow("Boom"), "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("riverbed: run ")
    assert lines[0].endswith("failed: ValueError: the flux capacitor is empty")
    assert "Traceback" not in done.stderr


def test_a_timed_out_run_exits_3(tmp_path: Path) -> None:
    done = riverbed("run", flow("slow"), "-q", cwd=tmp_path)
    assert done.returncode == 3
    assert "timed out" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_installed_riverbed_script_works(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "riverbed"
    if not script.exists():
        pytest.skip("riverbed is not installed as a script in this environment")
    done = subprocess.run(
        [str(script), "run", flow("greeter"), "-a", "name=ana", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"greeting": "hello ana"}
