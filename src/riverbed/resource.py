"""Resources: values a step receives through its annotations instead of through events.

``memory: Annotated[Memory, Resource(get_memory)]`` injects what ``get_memory()`` returns;
``cfg: Annotated[Model, ResourceConfig("cfg.json", path_selector="a.b")]`` injects a pydantic
model read from a JSON file. One :class:`ResourceManager` per workflow instance creates and
caches the values. The engine calls :func:`find_resource_params` once per step when the class
is created, :meth:`ResourceManager.resolve_params` once per step attempt, and
:func:`validate_resources` when the workflow is validated.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
import types
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, get_args, get_origin, get_type_hints, overload

from pydantic import BaseModel, ValidationError

from riverbed.errors import WorkflowValidationError

__all__ = [
    "Resource",
    "ResourceConfig",
    "ResourceDescriptor",
    "ResourceManager",
    "ResourceParam",
    "find_resource_params",
    "validate_resources",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def _display_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    if isinstance(fn, functools.partial):
        return f"partial({_display_name(fn.func)})"
    return type(fn).__qualname__


class Resource(Generic[T]):
    """Marks a parameter as injected: ``Annotated[T, Resource(factory, cache=True)]``.

    ``factory`` (a function, class, ``functools.partial`` or callable object) may be sync or
    async and may take ``Annotated`` resource parameters of its own; its other parameters
    must have defaults. With ``cache=True`` the value is created once per
    :class:`ResourceManager`, so every step and run of one workflow instance shares it; the
    cache is keyed by the factory object, so two factories with the same name never collide.
    With ``cache=False`` each step call gets a fresh value, but every use of that factory
    within the one call (nested dependencies included) gets the same value.

    An exception raised by a factory propagates unchanged, not wrapped, so retry policies
    and ``except`` clauses in the caller see its real type. Nothing is cached on failure.
    """

    __slots__ = ("_acyclic", "_deps", "cache", "factory", "name")

    # Two overloads so that mypy infers T from an async factory's awaited result too.
    @overload
    def __init__(self, factory: Callable[..., Awaitable[T]], cache: bool = True) -> None: ...
    @overload
    def __init__(self, factory: Callable[..., T], cache: bool = True) -> None: ...
    def __init__(self, factory: Callable[..., Any], cache: bool = True) -> None:
        if not callable(factory):
            raise WorkflowValidationError(
                f"Resource() needs a callable factory, got {factory!r}. Pass the function "
                "itself, e.g. Resource(get_llm), not Resource(get_llm())."
            )
        self.factory = factory
        self.cache = cache
        #: The factory's ``__qualname__``: the key of :meth:`ResourceManager.set`/``get_all``.
        self.name = _display_name(factory)
        self._deps: dict[str, ResourceParam] | None = None
        self._acyclic = False

    def __repr__(self) -> str:
        return f"Resource({self.name}, cache={self.cache})"

    def dependencies(self) -> dict[str, ResourceParam]:
        """The factory's own resource parameters, found once and remembered.

        Raises :class:`WorkflowValidationError` if the factory has a required parameter that
        is not a resource, since riverbed could not call it.
        """
        if self._deps is None:
            self._deps = _factory_dependencies(self)
        return self._deps


class ResourceConfig:
    """Injects a pydantic model read from JSON: ``Annotated[Model, ResourceConfig(...)]``.

    ``config_file`` is read when first needed (a relative path is taken from the working
    directory at that moment). ``path_selector`` such as ``"llm.options"`` or ``"models.0"``
    picks a nested value. ``label`` and ``description`` are for display; ``label`` also names
    the value in :meth:`ResourceManager.get_all`. A manager loads each config once.
    """

    __slots__ = ("config_file", "description", "label", "path_selector")

    def __init__(
        self,
        config_file: str | os.PathLike[str],
        path_selector: str | None = None,
        label: str | None = None,
        description: str | None = None,
    ) -> None:
        if path_selector is not None and not all(path_selector.split(".")):
            raise WorkflowValidationError(
                f"ResourceConfig path_selector {path_selector!r} has an empty segment. "
                "Write dotted keys such as 'llm.options', or pass None for the whole file."
            )
        self.config_file = os.fspath(config_file)
        self.path_selector = path_selector
        self.label = label
        self.description = description

    def __repr__(self) -> str:
        return f"ResourceConfig({self.config_file!r}, path_selector={self.path_selector!r})"

    @property
    def name(self) -> str:
        """``label`` if given, else ``config_file`` plus ``:path_selector``."""
        selector = f":{self.path_selector}" if self.path_selector else ""
        return self.label or self.config_file + selector

    def load(self, model: type[M]) -> M:
        """Read the file, select the sub-object and validate it as ``model``, uncached.

        Every failure raises :class:`WorkflowValidationError` naming the file and the problem.
        """
        _require_model(model, self)
        where = f"Resource config file '{self.config_file}'"
        try:
            node: Any = json.loads(Path(self.config_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WorkflowValidationError(
                f"{where} was not found (looked at {Path(self.config_file).absolute()}). "
                "Create it or fix config_file; a relative path is read from the working directory."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowValidationError(f"{where} could not be read: {exc}.") from None
        except json.JSONDecodeError as exc:
            raise WorkflowValidationError(
                f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
            ) from None
        if self.path_selector:
            where += f" at path_selector '{self.path_selector}'"
            for part in self.path_selector.split("."):
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    problem = (
                        f"no key {part!r} (keys: {list(node)})"
                        if isinstance(node, dict)
                        else f"cannot select {part!r} from a JSON {type(node).__name__}"
                    )
                    raise WorkflowValidationError(f"{where}: {problem}.")
        try:
            return model.model_validate(node)
        except ValidationError as exc:
            # One line per field reads better in validate()'s list than pydantic's layout.
            details = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
            raise WorkflowValidationError(
                f"{where} does not match {model.__name__}: {details}."
            ) from None


#: What goes inside ``Annotated[...]`` to mark a resource parameter.
ResourceDescriptor = Resource[Any] | ResourceConfig
#: A resource parameter: its descriptor and the ``T`` of ``Annotated[T, ...]``.
ResourceParam = tuple[ResourceDescriptor, Any]


def _require_model(tp: Any, desc: ResourceConfig) -> None:
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        raise WorkflowValidationError(
            f"{desc!r} annotates {tp!r}, which is not a pydantic model. Write "
            "Annotated[MyConfig, ResourceConfig(...)] with MyConfig a BaseModel subclass."
        )


def _annotated_target(fn: Any) -> Any:
    """The object whose annotations describe ``fn``'s call parameters."""
    if isinstance(fn, functools.partial):
        return _annotated_target(fn.func)
    if inspect.isclass(fn):
        return fn.__init__
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        return type(fn).__call__
    return fn


def find_resource_params(
    fn: Callable[..., Any], localns: Mapping[str, Any] | None = None
) -> dict[str, ResourceParam]:
    """Return ``{param_name: (descriptor, T)}`` for the resource parameters of ``fn``.

    String and ``from __future__ import annotations`` annotations are evaluated in the
    module globals of ``fn`` plus ``localns`` (pass the defining scope's locals when the
    names are local); the return annotation is not evaluated. Raises
    :class:`WorkflowValidationError` if a parameter annotation does not resolve, a parameter
    has two descriptors, or a ``ResourceConfig`` annotates a non-model type.
    """
    target = _annotated_target(fn)
    try:
        # The return annotation is skipped: factories often return a type imported only
        # under TYPE_CHECKING, and it never names a resource.
        annotations = dict(getattr(target, "__annotations__", None) or {})
        annotations.pop("return", None)
        if not annotations:
            return {}
        globalns = getattr(inspect.unwrap(target), "__globals__", None)
        holder = types.SimpleNamespace(__annotations__=annotations)
        hints = get_type_hints(holder, globalns, localns, include_extras=True)
    except Exception as exc:
        raise WorkflowValidationError(
            f"Failed to resolve type annotations for {_display_name(fn)}: {exc}. Define the "
            "names its annotations use at module level, or pass their namespace as localns."
        ) from exc
    found: dict[str, ResourceParam] = {}
    for name, hint in hints.items():
        if get_origin(hint) is not Annotated:
            continue
        base, *metadata = get_args(hint)
        descs = [m for m in metadata if isinstance(m, (Resource, ResourceConfig))]
        if len(descs) > 1:
            raise WorkflowValidationError(
                f"Parameter '{name}' of {_display_name(fn)} has {len(descs)} resource "
                "annotations; keep exactly one Resource(...) or ResourceConfig(...)."
            )
        if descs:
            if isinstance(descs[0], ResourceConfig):
                _require_model(base, descs[0])
            found[name] = (descs[0], base)
    if found:
        # A partial or a bound method hides some annotated parameters from its callers.
        try:
            callable_params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return found
        found = {k: v for k, v in found.items() if k in callable_params}
    return found


def _factory_dependencies(res: Resource[Any]) -> dict[str, ResourceParam]:
    deps = find_resource_params(res.factory)
    try:
        params = inspect.signature(res.factory).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature; they are called bare
        return deps
    for p in params:
        required = p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        if required and p.name not in deps:
            raise WorkflowValidationError(
                f"Resource factory {res.name} has a required parameter '{p.name}' that "
                "riverbed cannot fill. Give it a default, or annotate it as "
                "Annotated[T, Resource(...)] or Annotated[Model, ResourceConfig(...)]."
            )
    return deps


def _check_acyclic(root: Resource[Any]) -> None:
    # Checked over the whole graph before any factory runs: a cycle is reported before side
    # effects, and resolutions waiting on each other's creation locks cannot deadlock.
    path: list[Resource[Any]] = []

    def visit(res: Resource[Any]) -> None:
        for i, seen in enumerate(path):
            if seen.factory == res.factory:
                chain = " -> ".join(r.name for r in [*path[i:], res])
                raise WorkflowValidationError(
                    f"Circular resource dependency detected: {chain}. A factory cannot "
                    "depend on itself, directly or through others; remove one of these."
                )
        if not res._acyclic:
            path.append(res)
            for dep, _ in res.dependencies().values():
                if isinstance(dep, Resource):
                    visit(dep)
            path.pop()
            res._acyclic = True

    visit(root)


class _Flight:
    """A lock shared by resolutions creating the same cached resource at the same time."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class ResourceManager:
    """Creates and caches the resources of one workflow instance.

    Pass one to the ``Workflow`` constructor to share resources between workflows, or
    pre-fill it with :meth:`set`, e.g. ``await manager.set("get_llm", FakeLLM())`` in tests.
    """

    def __init__(self) -> None:
        self._cache: dict[Any, Any] = {}  # key: a factory, or (file, selector, model)
        self._names: dict[Any, str] = {}
        self._named: dict[str, Any] = {}
        # An entry is dropped once nobody waits, so no lock outlives its event loop.
        self._flights: dict[Any, _Flight] = {}

    async def set(self, name: str, val: Any) -> None:
        """Make every cached resource named ``name`` resolve to ``val`` from now on.

        ``name`` is a factory's ``__qualname__`` or a config's :attr:`ResourceConfig.name`.
        Uncached resources still call their factory, as in LlamaIndex.
        """
        self._named[name] = val
        for key, key_name in self._names.items():
            if key_name == name:
                self._cache[key] = val

    async def get(self, descriptor: ResourceDescriptor, annotation_type: Any = None) -> Any:
        """LlamaIndex's name for :meth:`resolve`."""
        return await self.resolve(descriptor, annotation_type)

    def get_all(self) -> dict[str, Any]:
        """A new ``{name: value}`` dict of everything cached or :meth:`set` so far."""
        values = {self._names[key]: val for key, val in self._cache.items()}
        values.update(self._named)
        return values

    async def resolve(self, descriptor: ResourceDescriptor, annotation_type: Any = None) -> Any:
        """Resolve one descriptor in a resolution scope of its own.

        ``annotation_type`` is the ``T`` of ``Annotated[T, ...]``: the model a
        ``ResourceConfig`` loads. A ``Resource`` ignores it.
        """
        return await self._resolve(descriptor, annotation_type, {})

    async def resolve_params(self, params: Mapping[str, ResourceParam]) -> dict[str, Any]:
        """Resolve all resource parameters of one step call in one scope: ``{name: value}``.

        ``params`` is what :func:`find_resource_params` returned for the step. Once every
        value is cached this costs one dict lookup per parameter.
        """
        values: dict[str, Any] = {}
        cache = self._cache
        scope: dict[Any, Any] = {}
        for name, (desc, tp) in params.items():
            if isinstance(desc, ResourceConfig):
                values[name] = self.load_config(desc, tp)
            elif desc.cache and desc.factory in cache:
                values[name] = cache[desc.factory]
            else:
                values[name] = await self._resolve(desc, tp, scope)
        return values

    def load_config(self, descriptor: ResourceConfig, model: type[M]) -> M:
        """:meth:`ResourceConfig.load`, cached in this manager."""
        key = (descriptor.config_file, descriptor.path_selector, model)
        if key not in self._cache:
            name = descriptor.name
            self._cache[key] = self._named[name] if name in self._named else descriptor.load(model)
            self._names[key] = name
        value: M = self._cache[key]
        return value

    async def _resolve(self, desc: ResourceDescriptor, tp: Any, scope: dict[Any, Any]) -> Any:
        if isinstance(desc, ResourceConfig):
            return self.load_config(desc, tp)
        if not isinstance(desc, Resource):
            raise WorkflowValidationError(
                f"{desc!r} is not a Resource or ResourceConfig; annotate resource parameters "
                "as Annotated[T, Resource(factory)] or Annotated[Model, ResourceConfig(...)]."
            )
        if desc.cache:
            return await self._resolve_cached(desc, scope)
        if desc.factory not in scope:
            scope[desc.factory] = await self._create(desc, scope)
        return scope[desc.factory]

    async def _resolve_cached(self, desc: Resource[Any], scope: dict[Any, Any]) -> Any:
        key = desc.factory
        if key in self._cache:
            return self._cache[key]
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
        flight.users += 1
        try:
            # Two steps asking at once must share one instance, not each create one.
            async with flight.lock:
                if key not in self._cache:
                    named = desc.name in self._named
                    value = self._named[desc.name] if named else await self._create(desc, scope)
                    self._cache[key] = value
                    self._names[key] = desc.name
                return self._cache[key]
        finally:
            flight.users -= 1
            if not flight.users:
                del self._flights[key]

    async def _create(self, desc: Resource[Any], scope: dict[Any, Any]) -> Any:
        _check_acyclic(desc)
        kwargs = {
            name: await self._resolve(dep, dep_tp, scope)
            for name, (dep, dep_tp) in desc.dependencies().items()
        }
        value = desc.factory(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value


def validate_resources(
    steps: Mapping[str, Mapping[str, ResourceParam]],
    *,
    manager: ResourceManager | None = None,
    load_configs: bool = True,
) -> list[str]:
    """Check the resources of a workflow's steps without running any factory.

    ``steps`` maps each step name to its :func:`find_resource_params` result. Checked through
    nested dependencies: cycles, factory parameters riverbed cannot fill and, if
    ``load_configs``, that every ``ResourceConfig`` file loads and validates. With
    ``manager`` the loaded configs stay cached there for the run. Returns one readable line
    per problem, starting ``step 'name', parameter 'p': ``; ``[]`` means all is well.
    """
    problems: list[str] = []
    for step_name, params in steps.items():
        for param, (desc, tp) in params.items():
            for problem in _problems(desc, tp, manager, load_configs):
                line = f"step '{step_name}', parameter '{param}': {problem}"
                if line not in problems:
                    problems.append(line)
    return problems


def _problems(
    desc: ResourceDescriptor, tp: Any, manager: ResourceManager | None, load_configs: bool
) -> Iterator[str]:
    try:
        if isinstance(desc, ResourceConfig):
            if load_configs and manager is not None:
                manager.load_config(desc, tp)
            elif load_configs:
                desc.load(tp)
            return
        _check_acyclic(desc)  # also checks the signature of every factory in the graph
    except WorkflowValidationError as exc:
        yield str(exc)
        return
    for dep, dep_tp in desc.dependencies().values():
        yield from _problems(dep, dep_tp, manager, load_configs)
