"""The public surface is deliberate: ``__all__`` is exactly the public names, the submodules
a LlamaIndex user imports from exist, and ``import riverbed`` pulls in nothing heavy."""

import importlib
import inspect
import json
import subprocess
import sys
import types

import pytest

import riverbed


def test_all_is_sorted() -> None:
    assert sorted(riverbed.__all__) == riverbed.__all__


def test_all_has_no_duplicates() -> None:
    assert len(set(riverbed.__all__)) == len(riverbed.__all__)


def test_every_name_in_all_is_importable() -> None:
    for name in riverbed.__all__:
        assert getattr(riverbed, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from riverbed import *", namespace)
    assert set(riverbed.__all__) <= set(namespace)


def test_every_public_class_or_function_is_in_all() -> None:
    public = {
        name
        for name, value in vars(riverbed).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith("riverbed")
    }
    assert public - set(riverbed.__all__) == set(), "public but not in __all__"
    # ...and __all__ names nothing that is not there
    assert set(riverbed.__all__) - set(vars(riverbed)) == set()


def test_the_package_has_a_version() -> None:
    assert isinstance(riverbed.__version__, str)
    assert riverbed.__version__


SUBMODULE_NAMES = {
    "riverbed.events": [
        "Event",
        "StartEvent",
        "StopEvent",
        "InputRequiredEvent",
        "HumanResponseEvent",
        "StepFailedEvent",
        "WorkflowTimedOutEvent",
        "WorkflowCancelledEvent",
        "WorkflowFailedEvent",
    ],
    "riverbed.errors": [
        "WorkflowError",
        "WorkflowRuntimeError",
        "WorkflowTimeoutError",
        "WorkflowValidationError",
        "WorkflowConfigurationError",
        "WorkflowCancelledByUser",
        "ContextSerdeError",
        "ContextStateError",
    ],
    "riverbed.retry_policy": [
        "RetryPolicy",
        "ConstantDelayRetryPolicy",
        "ExponentialBackoffRetryPolicy",
        "retry_policy",
        "retry_if_exception_type",
        "stop_after_attempt",
        "stop_after_delay",
        "stop_before_delay",
        "wait_fixed",
        "wait_exponential",
        "wait_random",
        "retry_if_exception_message",
    ],
    "riverbed.context": ["Context", "BaseSerializer", "JsonSerializer", "PickleSerializer"],
    "riverbed.decorators": ["step", "catch_error"],
    "riverbed.resource": ["Resource", "ResourceConfig", "ResourceManager"],
    "riverbed.workflow": ["Workflow"],
    "riverbed.handler": ["WorkflowHandler"],
}


@pytest.mark.parametrize("module_name", sorted(SUBMODULE_NAMES))
def test_submodules_expose_the_names_llama_index_users_import(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in SUBMODULE_NAMES[module_name]:
        assert name in module.__all__, f"{module_name}.__all__ lacks {name}"
        value = getattr(module, name)
        # the top-level name, when there is one, is the very same object
        if name in riverbed.__all__:
            assert getattr(riverbed, name) is value, f"{module_name}.{name}"


def test_submodule_all_names_exist() -> None:
    for module_name in SUBMODULE_NAMES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            assert hasattr(module, name), f"{module_name}.{name}"


def test_errors_share_one_root() -> None:
    errors = importlib.import_module("riverbed.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), riverbed.WorkflowError), name


CORE = {
    "riverbed",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
}

IMPORT_CHECK = """
import json, sys
before = set(sys.modules)
import riverbed
new = {name.split(".")[0] for name in set(sys.modules) - before}
stdlib = set(sys.stdlib_module_names)
# sysconfig's platform data module is stdlib but has a per-platform name
print(json.dumps(sorted(n for n in new - stdlib if not n.startswith("_sysconfigdata"))))
"""


def test_importing_riverbed_loads_only_core_dependencies() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "riverbed" in loaded  # the check itself works
    assert loaded - CORE == set()
