"""The pieces every component schema is built from (standard library only, so any
component module imports it without cycles or cost).

A component declares its schema next to its class, in its own module::

    class RebaseSelector:
        def __init__(self, temperature: float = 0.2) -> None: ...

    @schema("selector", "rebase", RebaseSelector)
    class RebaseConf(Component):
        temperature: float = num(gt=0)   # type and bounds here; the default is 0.2, read
                                         # from RebaseSelector.__init__

Rules of the :func:`schema` decorator:

- A key written with no value, or with ``num(...)``/``choice(...)`` and no default, takes
  its default from the target's ``__init__`` (walking base classes while a constructor
  passes ``**kwargs`` on), so a default is written once. A required parameter gives
  ``???`` (the user must set it). A value written in the schema wins: write one only where
  the config's default deliberately differs from the library's, or where ``__init__`` has
  none (a key taken through ``**kwargs``).
- A key that is a Python keyword is written with a trailing underscore (``lambda_`` is the
  config key ``lambda``).
- ``Enum`` types list their allowed values in composition errors; ``num`` bounds and
  ``choice`` values are checked by :func:`ets.config.validate` (errors name the full key).
- The class is registered as ``schema/<group>/<name>`` in Hydra's ConfigStore by
  :func:`ets.config.register_configs`, which imports the module of every ``_target_`` of
  ``conf/<group>/*.yaml``; the YAML names it in its defaults
  (``- /schema/<group>@_here_: <name>``) and sets only what its preset changes.
"""

from __future__ import annotations

import dataclasses
import inspect
import keyword
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

#: OmegaConf's mandatory-value marker (the same string; omegaconf is not imported here).
MISSING: Any = "???"


class _FromInit:
    def __repr__(self) -> str:
        return "<default of the target's __init__>"


#: A key's default comes from the target's ``__init__``.
FROM_INIT: Any = _FromInit()

#: ``REGISTRY[group][name]`` = the schema dataclass registered by :func:`schema`.
REGISTRY: dict[str, dict[str, type]] = {}


class SchemaError(TypeError):
    """A schema that cannot be built (a key the target does not accept, a missing default)."""


@dataclass
class Component:
    """Base of every component schema: ``_target_`` names the class Hydra instantiates."""

    _target_: str = MISSING


def num(default: Any = FROM_INIT, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None) -> Any:
    """A numeric key with bounds (``ge``: >=, ``gt``: >, ``le``: <=), checked after composition."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    return field(default=default, metadata=bounds)


def choice(*allowed: str, default: Any = FROM_INIT) -> Any:
    """A string key limited to ``allowed`` (for values an ``Enum`` cannot spell, e.g. ``async``)."""
    return field(default=default, metadata={"choices": tuple(allowed)})


# ---- enums shared by several components (one component's own enums live in its module) ----
class Aggregation(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum
    """How a path's step scores become one score."""

    last = "last"
    min = "min"
    prod = "prod"
    mean = "mean"


class ModelDtype(str, Enum):  # noqa: UP042
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


# ---- the decorator --------------------------------------------------------------------------
def schema(group: str, name: str, target: type | None = None) -> Callable[[type], type]:
    """Build the schema dataclass from the decorated class and register it.

    Args:
        group: Config group (``selector``, ``prm``, ...).
        name: Schema name; the YAML extends ``/schema/<group>@_here_: <name>``.
        target: The class the YAML's ``_target_`` instantiates; keys without a value take
            its ``__init__`` defaults. ``None``: every key must carry its default.
    """

    def build(cls: type) -> type:
        spec = _spec(cls)
        annotations: dict[str, Any] = {}
        ns: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
                              "__doc__": cls.__doc__, "__schema_spec__": spec,
                              "__schema_target__": target}
        for key, (tp, declared) in spec.items():
            annotations[key] = tp
            ns[key] = _resolve(cls.__name__, key, tp, declared, target)
        ns["__annotations__"] = annotations
        bases = cls.__bases__
        plain = not any(keyword.iskeyword(k) for k in spec)  # ``lambda`` cannot be an __init__ argument
        built = dataclass(init=plain, repr=plain, eq=plain)(type(cls.__name__, bases, ns))
        previous = REGISTRY.setdefault(group, {}).get(name)
        if previous is not None and _origin(previous) != _origin(built):
            raise SchemaError(f"schema/{group}/{name} is declared twice: "
                              f"{_origin(previous)} and {_origin(built)}")
        REGISTRY[group][name] = built
        return built

    return build


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _spec(cls: type) -> dict[str, tuple[Any, Any]]:
    """Every key of ``cls`` and its schema bases, in order: ``key -> (type, declared)``;
    ``declared`` is the written default (a value, a ``dataclasses.Field``) or FROM_INIT."""
    spec: dict[str, tuple[Any, Any]] = {"_target_": (str, MISSING)}
    for klass in reversed(cls.__mro__):
        if "__schema_spec__" in klass.__dict__:  # a built schema: its keys as declared
            spec.update(klass.__dict__["__schema_spec__"])
        elif klass not in (object, Component) and klass.__dict__.get("__annotations__"):
            spec.update(_declared(klass))  # the decorated class, or a plain mixin of keys
    return spec


def _declared(klass: type) -> dict[str, tuple[Any, Any]]:
    hints = typing.get_type_hints(klass)  # each class's annotations in its own module
    out = {}
    for attr in klass.__dict__["__annotations__"]:
        key = attr[:-1] if attr.endswith("_") and keyword.iskeyword(attr[:-1]) else attr
        out[key] = (hints[attr], klass.__dict__.get(attr, FROM_INIT))
    return out


def _init_default(target: type, key: str) -> Any:
    """The default of parameter ``key`` of ``target(...)``: FROM_INIT when no constructor in
    the chain names it, MISSING when it is required."""
    for klass in target.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        if key in params:
            default = params[key].default
            return MISSING if default is inspect.Parameter.empty else default
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            break  # this constructor passes nothing further up
    return FROM_INIT


def _enum_of(tp: Any) -> type[Enum] | None:
    for arg in (tp, *typing.get_args(tp)):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return arg
    return None


def _resolve(owner: str, key: str, tp: Any, declared: Any, target: type | None) -> Any:
    """The dataclass field of ``key``: the written default, else the target's."""
    metadata: Any = {}
    if isinstance(declared, dataclasses.Field):
        metadata = declared.metadata
        if declared.default_factory is not dataclasses.MISSING:
            return field(default_factory=declared.default_factory, metadata=metadata)
        declared = declared.default
    value = declared
    if value is FROM_INIT:
        value = _init_default(target, key) if target is not None else FROM_INIT
        if value is FROM_INIT:
            where = f"{target.__name__}.__init__" if target is not None else "no target"
            raise SchemaError(f"{owner}.{key}: no default written and none in {where}")
    enum = _enum_of(tp)
    if enum is not None and isinstance(value, str) and value != MISSING and not isinstance(value, enum):
        value = enum(value)
    if isinstance(value, (list, tuple)):
        items = list(value)
        return field(default_factory=lambda: list(items), metadata=metadata)
    if isinstance(value, dict):
        items_d = dict(value)
        return field(default_factory=lambda: dict(items_d), metadata=metadata)
    return field(default=value, metadata=metadata)


__all__ = ["MISSING", "FROM_INIT", "REGISTRY", "SchemaError", "Component", "num", "choice",
           "schema", "Aggregation", "ModelDtype"]
