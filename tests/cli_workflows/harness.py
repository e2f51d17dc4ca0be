"""Driving the ``riverbed`` command in tests: in-process (``main(argv)``) or as a user
would, in a subprocess (``python -m riverbed.cli``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FLOWS = Path(__file__).resolve().parent / "flows.py"


def flow(name: str) -> str:
    """The spec of a workflow in tests/cli_workflows/flows.py."""
    return f"{FLOWS}:{name}"


def example(file: str, name: str) -> str:
    """The spec of a workflow in examples/."""
    return f"{EXAMPLES / file}:{name}"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: no inherited store, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "RIVERBED_STORE"}
    env.update(extra)
    return env


def riverbed(
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``riverbed ARGS`` in a subprocess and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "riverbed.cli", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env or cli_env(),
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """Start ``riverbed ARGS`` in a subprocess without waiting."""
    return subprocess.Popen(
        [sys.executable, "-m", "riverbed.cli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
