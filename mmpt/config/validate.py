"""Checks plain mappings against config dataclasses and reports every problem, not just the first.

torchtune's `_validate.py` habit: collect all errors into one message. Problems are appended to an
`errors` list as one line each, naming the dotted key, the value and what was expected; the functions
return the built object, or `INVALID` when anything under it was wrong.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from mmpt.errors import ConfigError
from mmpt.registry import Registry, did_you_mean

INVALID: Any = type("Invalid", (), {"__repr__": lambda self: "INVALID"})()
"""Returned in place of a value that failed a check (its problem is already in `errors`)."""

COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def describe(tp: Any) -> str:
    """A type hint in words for messages: `int | None` -> 'int or null', `list[str]` -> 'list of str'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        return f"list of {describe(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if dataclasses.is_dataclass(tp):
        return f"mapping of {tp.__name__} keys"
    return getattr(tp, "__name__", str(tp))


def unknown_key(path: str, key: str, valid: list[str]) -> str:
    """'unknown key train.lrr. Did you mean 'lr'? Valid keys in train: ...' (top level: 'at the top level')."""
    where = path.rpartition(".")[0]
    return (
        f"unknown key '{path}'.{did_you_mean(key, valid)} "
        f"Valid keys {'in ' + where if where else 'at the top level'}: {', '.join(valid)}."
    )


def _wrong_type(path: str, value: Any, tp: Any) -> str:
    return f"{path}={value!r} has the wrong type ({type(value).__name__}); expected {describe(tp)}."


def coerce(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Checks `value` against the type hint `tp`, converting where the meaning is unambiguous.

    Conversions: int -> float; a number -> str for str fields (`name=2024`); a scalar -> a one-item list for
    list fields (`data.inputs=rgb`); a list -> tuple for tuple fields; a mapping -> the dataclass for
    dataclass fields. bool is never accepted as a number (YAML reads `yes`/`no` as bools).

    Args:
        value: the parsed YAML value.
        tp: the field's resolved type hint.
        path: the dotted key, for messages.
        errors: problems are appended here.

    Returns:
        The (converted) value, or `INVALID`.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arm in (a for a in args if a is not type(None)):
            scratch: list[str] = []
            result = coerce(value, arm, path, scratch)
            if not scratch:
                return result
            if dataclasses.is_dataclass(arm) and isinstance(value, Mapping):
                errors.extend(scratch)  # the right shape with bad contents: report the contents
                return INVALID
        errors.append(_wrong_type(path, value, tp))
        return INVALID
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_dataclass(tp, value, path, errors)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, int, float, bool)) and args:
            value = [value]
        if not isinstance(value, (list, tuple)):
            errors.append(_wrong_type(path, value, tp))
            return INVALID
        item_tp = args[0] if args else Any
        count = len(errors)
        items = [coerce(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        if len(errors) > count:
            return INVALID
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            errors.append(_wrong_type(path, value, tp))
            return INVALID
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            errors.append(f"{path}={value!r} is invalid; expected one of {', '.join(repr(a) for a in args)}.")
            return INVALID
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        return value  # a hint this checker does not model: leave it to the class's own validation
    errors.append(_wrong_type(path, value, tp))
    return INVALID


def check_fields(
    cls: type, values: Any, prefix: str, errors: list[str], also_valid: tuple[str, ...] = ()
) -> dict[str, Any] | Any:
    """Checks keys and value types of `values` against dataclass `cls`, reporting every problem in one pass.

    Args:
        cls: the config dataclass.
        values: the mapping from the recipe.
        prefix: the dotted key of the mapping ('' at the top level).
        errors: problems are appended here.
        also_valid: keys handled by the caller (e.g. a component's `name`), listed as valid in messages.

    Returns:
        The converted values of the good keys (so `__post_init__` can still check them even when other keys
        were bad), or `INVALID` when `values` is not a mapping.
    """
    if not isinstance(values, Mapping):
        errors.append(f"{prefix}={values!r} has the wrong type; expected a mapping of {cls.__name__} keys.")
        return INVALID
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in valid:
            errors.append(unknown_key(path, str(key), [*also_valid, *valid]))
        elif (converted := coerce(value, hints[key], path, errors)) is not INVALID:
            kwargs[key] = converted
    return kwargs


def _value_error(prefix: str, error: Exception) -> str:
    message = error.message if isinstance(error, ConfigError) else str(error)
    head = message.split("=", 1)[0].split(" ", 1)[0]
    line = message if head.startswith(prefix) or not prefix else f"{prefix}: {message}"
    hint = getattr(error, "hint", None)
    return f"{line} ({hint})" if hint else line


def instantiate(cls: type, kwargs: dict[str, Any], prefix: str, errors: list[str]) -> Any:
    """`cls(**kwargs)`, with a bad value raised by its `__post_init__` collected instead of raised."""
    try:
        return cls(**kwargs)
    except (ConfigError, ValueError, TypeError) as e:
        errors.append(_value_error(prefix, e))
        return INVALID


def build_dataclass(cls: type, values: Any, prefix: str, errors: list[str]) -> Any:
    """Builds `cls` from a mapping: `check_fields`, then `instantiate` (which still runs after bad keys, so
    their siblings' bad values are reported in the same pass); `INVALID` if anything was wrong."""
    count = len(errors)
    kwargs = check_fields(cls, values, prefix, errors)
    if kwargs is INVALID:
        return INVALID
    built = instantiate(cls, kwargs, prefix, errors)
    return built if len(errors) == count else INVALID


def plain(value: Any) -> Any:
    """Dataclasses, tuples and nested containers -> dicts/lists/scalars (what YAML and JSON write)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def build_component(kind: str, value: Any, registry: Registry | None, errors: list[str]) -> dict[str, Any] | Any:
    """Validates a `{name: ..., <options>}` mapping against the registered class's `config_class`.

    Unknown keys and wrong types are all reported (via `check_fields`), then the class's `from_dict` runs
    its `__post_init__` checks. The returned mapping holds the name and the options *given*, as the config
    class normalised them (`targets: qkv` -> `[qkv]`); defaults are not spelled out, because some fields
    are filled in when the run is built (a head's `dim`, `patch_size`, `out_channels` come from the
    backbone and the task), so `build_head(name, dim=..., **options)` stays valid. Without a registry
    only the name's shape is checked and the options are returned as given.

    Args:
        kind: 'tuner' or 'head' (the recipe key).
        value: the mapping from the recipe.
        registry: `TUNERS` / `HEADS`, or None.
        errors: problems are appended here.
    """
    example = "deep_prompt" if kind == "tuner" else "linear"
    if not isinstance(value, Mapping) or "name" not in value:
        errors.append(f"{kind}={value!r} is invalid; expected a mapping with a 'name' key, e.g. {{name: {example}}}.")
        return INVALID
    name, options = value["name"], {k: v for k, v in value.items() if k != "name"}
    if not isinstance(name, str) or not COMPONENT_NAME.match(name):
        errors.append(f"{kind}.name={name!r} is invalid; expected a lowercase registry name such as '{example}'.")
        return INVALID
    if registry is None:
        return {"name": name, **options}
    try:
        component = registry.get(name)
    except ConfigError as e:
        errors.append(_value_error(f"{kind}.name", e))
        return INVALID
    config_class = getattr(component, "config_class", None)
    if config_class is None:
        if options:
            errors.append(f"{kind} '{name}' takes no options; got {sorted(options)}.")
            return INVALID
        return {"name": name}
    count = len(errors)
    if dataclasses.is_dataclass(config_class):
        kwargs = check_fields(config_class, options, kind, errors, also_valid=("name",))
    else:
        kwargs = options
    try:
        config = config_class.from_dict(kwargs) if hasattr(config_class, "from_dict") else config_class(**kwargs)
    except (ConfigError, ValueError, TypeError) as e:
        errors.append(_value_error(kind, e))
        return INVALID
    if len(errors) > count:
        return INVALID
    if not dataclasses.is_dataclass(config):
        return {"name": name, **plain(kwargs)}
    return {"name": name, **{key: plain(getattr(config, key)) for key in kwargs}}
