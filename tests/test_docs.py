"""The documentation cannot drift from the code.

- Every ```python block in the README and in docs/ runs, on its own, as a script.
- The mkdocs site builds with ``--strict`` (no broken link, no missing page or docstring
  target), every page in its nav exists, and every page of docs/ is in the nav.
- Every ``riverbed ...`` command shown in a ```bash block names a real subcommand and real
  options, and every ``examples/*.py`` file the docs mention exists.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _blocks(language: str) -> Iterator[tuple[Path, int, str]]:
    for page in PAGES:
        pattern = rf"^```{language}\n(.*?)^```"
        for index, code in enumerate(re.findall(pattern, page.read_text(), re.S | re.M)):
            yield page, index, code


BLOCKS = [
    pytest.param(code, id=f"{page.relative_to(ROOT)}#{index}")
    for page, index, code in _blocks("python")
]


@pytest.mark.parametrize("code", BLOCKS)
def test_code_block_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# -- the site ---------------------------------------------------------------------------


def _nav_pages(nav: list[Any]) -> Iterator[str]:
    for entry in nav:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            if isinstance(value, list):
                yield from _nav_pages(value)
            else:
                yield value


def _config() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs (riverbed[docs])")
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())  # type: ignore[no-any-return]


def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    pages = list(_nav_pages(_config()["nav"]))
    assert len(pages) == len(set(pages)), "a page is listed twice in the nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"nav pages missing from docs/: {missing}"
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk - set(pages) == set(), "pages of docs/ that the nav does not list"


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs and mkdocstrings are not installed (pip install 'riverbed[docs]')",
)
def test_site_builds_strict(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "index.html").is_file()
    api = (tmp_path / "reference" / "workflow" / "index.html").read_text()
    assert "Start a run and return its handler" in api  # docstrings were rendered


# -- commands and files the docs name ----------------------------------------------------

COMMANDS = sorted(
    {
        line.split("#")[0].strip()
        for _, _, code in _blocks("bash")
        for line in code.splitlines()
        if line.startswith("riverbed ")
    }
)


def _help(path: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "riverbed.cli", *path, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_command_in_the_docs_exists(command: str) -> None:
    if importlib.util.find_spec("riverbed.cli") is None:
        pytest.skip("riverbed.cli is not there")
    words = shlex.split(command)[1:]
    path = words[:2] if words[:1] == ["runs"] else words[:1]
    done = _help(path)
    assert done.returncode == 0, f"`riverbed {' '.join(path)}` does not exist: {done.stderr}"
    options = {word.split("=")[0] for word in words if word.startswith("-")}
    unknown = sorted(
        o for o in options if not re.search(rf"(^|[\s,\[]){re.escape(o)}\b", done.stdout)
    )
    assert not unknown, f"`riverbed {' '.join(path)}` has no option {unknown}"


def test_examples_the_docs_name_exist() -> None:
    named = {name for page in PAGES for name in re.findall(r"examples/(\w+\.py)", page.read_text())}
    assert named, "the docs name no example"
    missing = sorted(name for name in named if not (ROOT / "examples" / name).is_file())
    assert not missing
