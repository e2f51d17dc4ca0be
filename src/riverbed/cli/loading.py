"""Find a workflow from a command-line spec: ``module.path:name`` or ``path/to/file.py:name``.

The name may be a :class:`~riverbed.Workflow` instance, a ``Workflow`` subclass (created
with no arguments) or a function with no required arguments that returns a workflow::

    workflow = load_workflow("examples/research_assistant.py:ResearchAssistant")
    workflow = load_workflow("myapp.flows:build_flow")

Every problem is a :class:`LoadError` with a one-line message naming the problem and the
fix. Only this module, ``riverbed.cli`` and user code are imported; it needs no extra.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from riverbed.errors import WorkflowConfigurationError, WorkflowError
from riverbed.workflow import Workflow

__all__ = ["LoadError", "load_workflow", "split_spec"]


class LoadError(WorkflowConfigurationError):
    """A workflow spec names nothing that can be loaded; the message says why and how to
    fix it."""


def split_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:name"`` -> ``("pkg.mod", "name")``; a Windows drive (``C:\\x.py:name``)
    is kept in the module part."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name or not name.replace(".", "_").isidentifier():
        raise LoadError(
            f"{spec!r} is not a workflow spec: write MODULE:NAME, e.g. myapp.flows:MyWorkflow "
            "or path/to/file.py:MyWorkflow."
        )
    return module, name


def _ensure_cwd_on_path() -> None:
    # What `python -m` does: modules next to where the user stands can be imported.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise LoadError(f"No such file: {str(path)!r}. Check the path before the ':'.")
    resolved = path.resolve()
    # Named by its stem, as `python -m` from its folder would name it: the name is part of
    # the workflow's name and of the type keys a durable run stores, so a later
    # `riverbed runs resume` (another process) must load it under the same name.
    name = resolved.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == resolved:
            return loaded
        name = "_riverbed_file_" + "".join(c if c.isalnum() else "_" for c in str(resolved))
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise LoadError(f"Cannot import {str(path)!r}: not a Python file.")
    module = importlib.util.module_from_spec(spec)
    # Its folder goes on the path too, so it can import its neighbours as a script can.
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import(module_part: str) -> ModuleType:
    _ensure_cwd_on_path()
    is_file = module_part.endswith(".py") or os.sep in module_part or "/" in module_part
    try:
        if is_file:
            return _import_file(Path(module_part))
        return importlib.import_module(module_part)
    except LoadError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and module_part.split(".")[0] == exc.name.split(".")[0]:
            raise LoadError(
                f"Cannot import module {module_part!r}: no module named {exc.name!r}. Run "
                "from the directory that contains it, or give a file path (path/to/file.py)."
            ) from exc
        raise LoadError(
            f"Importing {module_part!r} failed: {exc}. Install the missing package."
        ) from exc
    except WorkflowError as exc:
        raise LoadError(f"Importing {module_part!r} failed: {_one_line(exc)}") from exc
    except Exception as exc:
        raise LoadError(
            f"Importing {module_part!r} failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc


def _short_repr(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:39] + "…"
    return f"{text} (type {type(value).__name__})"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _resolve(module: ModuleType, module_part: str, name: str) -> Any:
    target: Any = module
    for part in name.split("."):
        if not hasattr(target, part):
            found = sorted(n for n, v in vars(module).items() if _is_workflowish(v))
            hint = f" Workflows there: {', '.join(found)}." if found else ""
            raise LoadError(f"{module_part!r} has no attribute {name!r}.{hint}")
        target = getattr(target, part)
    return target


def _is_workflowish(value: Any) -> bool:
    return isinstance(value, Workflow) or (
        isinstance(value, type) and issubclass(value, Workflow) and value is not Workflow
    )


def _call(what: str, factory: Any) -> Any:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        if required:
            raise LoadError(
                f"{what} needs arguments ({', '.join(required)}); the CLI can only call it "
                "with none. Point at a module-level instance or a zero-argument factory."
            )
    try:
        return factory()
    except WorkflowError as exc:
        raise LoadError(f"Creating {what} failed: {_one_line(exc)}") from exc
    except Exception as exc:
        raise LoadError(f"Creating {what} failed: {type(exc).__name__}: {_one_line(exc)}") from exc


def load_workflow(spec: str) -> Workflow:
    """The workflow ``spec`` names (see the module docstring). Raises :class:`LoadError`."""
    module_part, name = split_spec(spec)
    module = _import(module_part)
    target = _resolve(module, module_part, name)
    if isinstance(target, Workflow):
        return target
    if isinstance(target, type):
        if not issubclass(target, Workflow):
            raise LoadError(
                f"{spec!r} is the class {target.__name__}, not a Workflow subclass. Name a "
                "Workflow instance, subclass or factory."
            )
        made = _call(f"workflow class {target.__name__}", target)
    elif callable(target):
        made = _call(f"factory {name}()", target)
        if inspect.isawaitable(made):
            close = getattr(made, "close", None)
            if close is not None:
                close()  # never awaited: no "coroutine was never awaited" warning
            raise LoadError(f"{name}() is async; the CLI needs a plain function.")
        if not isinstance(made, Workflow):
            raise LoadError(
                f"{name}() returned {type(made).__name__}, not a Workflow. Return a "
                "Workflow instance from the factory."
            )
    else:
        raise LoadError(
            f"{spec!r} is {_short_repr(target)}, not a workflow. Name a Workflow "
            "instance, a Workflow subclass or a zero-argument factory function."
        )
    assert isinstance(made, Workflow)
    return made
