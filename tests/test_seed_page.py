"""The seed page ("Maintaining state", from LlamaIndex Workflows) runs on riverbed.

Two ways: the example programs in ``examples/`` (the page's code, import changed), always;
and the page's own code blocks, read from ``../shared/seed/maintaining-state.md`` when that
file is beside the checkout (it is in CI), with only the import line changed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "seed" / "maintaining-state.md"


def _run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_stateful_flow_example_loops_through_setup() -> None:
    out = _run_example("seed_stateful_flow.py").splitlines()
    assert out == ["Need to load data", "Data is  [1, 2, 3]", "[1, 2, 3]"]


def test_typed_state_example_round_trips_custom_object() -> None:
    out = _run_example("seed_typed_state.py").splitlines()
    assert re.fullmatch(
        r"my_obj=<__main__\.MyRandomObject object at 0x[0-9a-f]+> "
        r"some_key='some_value'",
        out[0],
    )
    assert out[1] == "Done! {'my_obj': 'new_name', 'some_key': 'some_value'}"


def _blocks() -> list[str]:
    text = SEED.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return [b.replace("llama_index.core.workflow", "riverbed") for b in blocks]


def _as_program(setup: str, body: str) -> str:
    """Module-level code plus the page's top-level ``await`` lines inside ``main()``."""
    return (
        setup
        + "\nimport asyncio\nasync def main():\n"
        + textwrap.indent(body, "    ")
        + ("\nasyncio.run(main())\n")
    )


def _exec(program: str, tmp_path: Path) -> str:
    script = tmp_path / "page.py"
    script.write_text(program)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not SEED.exists(), reason="shared/seed is not beside this checkout")
def test_page_first_example_as_written(tmp_path: Path) -> None:
    imports, classes, step_two, _edit, _typed = _blocks()
    # The page shows `step_two` on its own, unindented; it is a method of StatefulFlow.
    method, _, top_level = step_two.partition("\n\nw = ")
    program = _as_program(imports + classes + textwrap.indent(method, "    "), "w = " + top_level)
    out = _exec(program, tmp_path).splitlines()
    assert out == ["Need to load data", "Data is  [1, 2, 3]", "[1, 2, 3]"]


@pytest.mark.skipif(not SEED.exists(), reason="shared/seed is not beside this checkout")
def test_page_typed_state_example_as_written(tmp_path: Path) -> None:
    *_, typed = _blocks()
    definitions, _, top_level = typed.partition("\n\nw = ")
    out = _exec(_as_program(definitions, "w = " + top_level), tmp_path).splitlines()
    assert re.fullmatch(
        r"my_obj=<__main__\.MyRandomObject object at 0x[0-9a-f]+> "
        r"some_key='some_value'",
        out[0],
    )


@pytest.mark.skipif(not SEED.exists(), reason="shared/seed is not beside this checkout")
def test_page_edit_state_snippet_as_written(tmp_path: Path) -> None:
    imports, *_, edit_snippet, _typed = _blocks()
    program = imports + textwrap.dedent(
        """
        import asyncio

        class Flow(Workflow):
            @step
            async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        {snippet}
                return StopEvent(result=await ctx.store.get("some_key"))

        print(Flow().run_sync())
        """
    ).replace("{snippet}", textwrap.indent(edit_snippet, " " * 8))
    assert _exec(program, tmp_path).strip() == "some_value"
