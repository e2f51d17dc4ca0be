"""Bad input gives one line naming the problem and exit code 2, with no traceback unless
``--debug``; ``serve`` and ``worker`` hand over to their extras or say which to install."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from cli_workflows.harness import FLOWS, cli_env, flow, riverbed
from riverbed import Workflow
from riverbed.cli import main


@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RIVERBED_STORE", raising=False)
    monkeypatch.chdir(tmp_path)


BAD_INPUT = [
    pytest.param(
        ["run", "no_such_module_xyz:Flow"], "Cannot import module 'no_such_module_xyz'", id="module"
    ),
    pytest.param(["run", "missing_file.py:Flow"], "No such file: 'missing_file.py'", id="file"),
    pytest.param(["run", "no-colon"], "is not a workflow spec: write MODULE:NAME", id="spec"),
    pytest.param(
        ["run", f"{FLOWS.parent / 'broken.py'}:x"],
        "No module named 'riverbed_no_such_package'",
        id="import-fails",
    ),
    pytest.param(
        ["run", flow("Nope")], "has no attribute 'Nope'. Workflows there: Boom,", id="name"
    ),
    pytest.param(
        ["run", flow("not_a_workflow")], "is 42 (type int), not a workflow", id="not-workflow"
    ),
    pytest.param(["run", flow("needs_arguments")], "needs arguments (name)", id="factory-args"),
    pytest.param(["run", flow("Greet")], "is the class Greet, not a Workflow subclass", id="class"),
    pytest.param(
        ["run", flow("greeter"), "--arg", "nmae=x"],
        "Greet has no field 'nmae'; its fields are: name, shout, tags, times.",
        id="unknown-arg",
    ),
    pytest.param(
        ["run", flow("greeter"), "--arg", "name=x", "--arg", "times=two"],
        "--arg times (type int): Input should be a valid integer",
        id="arg-type",
    ),
    pytest.param(
        ["run", flow("greeter")], "Greet needs 'name': pass --arg name=VALUE.", id="arg-missing"
    ),
    pytest.param(
        ["run", flow("greeter"), "--arg", "name"],
        "--arg takes key=value, got 'name'.",
        id="arg-form",
    ),
    pytest.param(
        ["run", flow("greeter"), "--json", "[1]"], "--json must be a JSON object", id="json-list"
    ),
    pytest.param(
        ["run", flow("greeter"), "--json", "{nope"], "--json is not valid JSON", id="json-bad"
    ),
    pytest.param(
        ["run", flow("greeter"), "-a", "name=x", "--store", "redis://h/0"],
        "Unknown store URL",
        id="store-scheme",
    ),
    pytest.param(
        ["run", flow("greeter"), "-a", "name=x", "--store", "sqlite:////proc/no/such/dir/r.db"],
        "/proc/no/such/dir",
        id="store-path",
    ),
    pytest.param(
        ["runs", "list"],
        "No run store given: pass --store sqlite:///runs.db or set RIVERBED_STORE.",
        id="no-store",
    ),
    pytest.param(
        ["runs", "list", "--store", "sqlite:///absent.db"], "No run store at", id="store-missing"
    ),
    pytest.param(
        ["runs", "list", "--store", "memory://"], "keeps runs in memory only", id="store-memory"
    ),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("riverbed: error: ")
    assert len(captured.err.splitlines()) == 1, captured.err
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_an_unknown_run_id_names_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "sqlite:///runs.db"
    assert main(["run", flow("greeter"), "-q", "-a", "name=x", "--store", url]) == 0
    capsys.readouterr()
    for argv in (["runs", "show", "zzz"], ["runs", "cancel", "zzz"]):
        assert main([*argv, "--store", url]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"riverbed: error: No run 'zzz' in sqlite:///{tmp_path / 'runs.db'}. List the runs "
            f"with `riverbed runs list --store sqlite:///{tmp_path / 'runs.db'}`.\n"
        )
    assert main(["runs", "resume", "zzz", flow("greeter"), "--store", url]) == 2
    assert "zzz" in capsys.readouterr().err


def test_a_taken_run_id_is_refused_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    url = "sqlite:///runs.db"
    argv = ["run", flow("greeter"), "-q", "-a", "name=x", "--store", url, "--run-id", "same"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert "Run id 'same' is already taken" in capsys.readouterr().err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "run", "no_such_module_xyz:Flow"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("riverbed: error: Cannot import module")
    # --debug after the command works too.
    assert main(["run", flow("greeter"), "--arg", "x=1", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_subprocess_user_sees_one_line_and_exit_2(tmp_path: Path) -> None:
    done = riverbed("run", "no_such_module_xyz:Flow", cwd=tmp_path, env=cli_env())
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_missing_rich_names_the_cli_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    assert main(["run", flow("greeter"), "-a", "name=x"]) == 2
    assert capsys.readouterr().err == (
        "riverbed: error: riverbed run needs the cli extra: pip install 'riverbed[cli]'\n"
    )
    # draw needs nothing beyond the core.
    assert main(["draw", flow("greeter")]) == 0


@pytest.mark.parametrize(
    ("argv", "module", "message"),
    [
        (
            ["serve", flow("greeter")],
            "riverbed.server",
            "riverbed serve needs the server extra: pip install 'riverbed[server]'",
        ),
        (
            ["worker", flow("greeter"), "--store", "sqlite:///r.db"],
            "riverbed.worker",
            "riverbed worker needs the postgres extra",
        ),
    ],
)
def test_serve_and_worker_without_their_extra(
    argv: list[str],
    module: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"riverbed: error: {message}")
    assert len(err.splitlines()) == 1


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str, function: str) -> list[Any]:
    calls: list[Any] = []
    fake = types.ModuleType(name)
    setattr(fake, function, lambda *args: calls.append(args))
    monkeypatch.setitem(sys.modules, name, fake)
    return calls


def test_serve_hands_the_workflows_and_options_to_run_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _fake_module(monkeypatch, "riverbed.server", "run_server")
    monkeypatch.setenv("RIVERBED_TOKEN", "s3cret")
    argv = ["serve", flow("greeter"), flow("Boom"), "--store", "sqlite:///r.db", "--port", "9001"]
    assert main(argv) == 0
    ((workflows, store_url, host, port, token),) = calls
    assert [type(w).__name__ for w in workflows] == ["Greeter", "Boom"]
    assert all(isinstance(w, Workflow) for w in workflows)
    assert (store_url, host, port, token) == ("sqlite:///r.db", "127.0.0.1", 9001, "s3cret")


def test_worker_hands_the_workflows_to_run_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_module(monkeypatch, "riverbed.worker", "run_worker")
    monkeypatch.setenv("RIVERBED_STORE", "postgresql://db/runs")
    assert main(["worker", flow("greeter"), "--slots", "3"]) == 0
    ((workflows, store_url, slots),) = calls
    assert [type(w).__name__ for w in workflows] == ["Greeter"]
    assert (store_url, slots) == ("postgresql://db/runs", 3)


def test_worker_needs_a_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", flow("greeter")]) == 2
    assert "riverbed worker needs the shared store" in capsys.readouterr().err
