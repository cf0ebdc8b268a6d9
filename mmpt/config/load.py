"""Recipes (commented YAML) + `key=value` overrides -> a validated `RunConfig`; resolved config files and hashes.

    cfg = load_config("nyuv2/depth/deep_prompt", ["data.root=/data/nyuv2", "train.lr=3e-4", "~train.grad_clip"])

Override grammar (torchtune's, without omegaconf):
  - `a.b=value` sets a key; the value is parsed as YAML (`3e-4`, `true`, `null`, `[rgb,depth]`, `{name: lora}`).
  - `~a.b` deletes a key, so it falls back to its default (`a.b=null` sets an optional key to null).
  - `backbone=PATH` is short for `backbone.source=PATH`; `tuner=NAME` / `head=NAME` switch the component,
    as does `tuner.name=NAME`: the old component's options are dropped (they belong to its config class),
    and switches are applied before the other overrides, so `tuner.rank=4 tuner=lora` works in any order.
A recipe may start from a base with a top-level `defaults: base.yaml` (a path relative to the recipe); the
recipe's keys are merged over the base's, mappings key by key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mmpt.config.recipes import resolve_recipe
from mmpt.config.schema import RunConfig
from mmpt.config.validate import INVALID, build_component, check_fields, instantiate, plain, unknown_key
from mmpt.errors import ConfigError
from mmpt.fileio import atomic_write
from mmpt.registry import Registry, did_you_mean

COMPONENTS = ("tuner", "head")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_VALIDATE_HINT = "correct each key above in the recipe or in the key=value overrides (`mmpt recipes show NAME`)"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars where 1.1 surprises: `1e-3` is a float (1.1 wants `1.0e-3`), and only
    true/false are bools (1.1 also reads yes/no/on/off, so `mixed_precision=no` would become False)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_FLOAT = (
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(*_FLOAT)


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists of scalars (`inputs: [rgb, depth]`); strings that either YAML
    1.1 or `_Loader` would read as something else (`'no'`, `'1e3'`) are quoted."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        flat = all(not isinstance(v, (dict, list)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_implicit_resolver(*_FLOAT)


def parse_value(text: str) -> Any:
    """Parses one override value as YAML, with `1e-3` read as a float."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader


def _shorthand(key: str, value: Any) -> Any:
    """`backbone: PATH` -> `{source: PATH}`; `tuner: NAME` / `head: NAME` -> `{name: NAME}`."""
    if isinstance(value, str) and key in ("backbone", *COMPONENTS):
        return {"source" if key == "backbone" else "name": value}
    return value


def merge_recipes(base: dict[str, Any], top: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """Deep merge of `top` over `base`; a tuner/head with another name replaces the base's whole mapping."""
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        switched = depth == 0 and key in COMPONENTS and isinstance(old, Mapping) and isinstance(value, Mapping)
        switched = switched and old.get("name") != value.get("name", old.get("name"))
        if isinstance(old, Mapping) and isinstance(value, Mapping) and not switched:
            out[key] = merge_recipes(dict(old), value, depth + 1)
        else:
            out[key] = value
    return out


def read_recipe(recipe: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Reads a recipe (path or shipped name) into a plain mapping, `defaults:` bases merged in, nothing validated.

    Raises:
        ConfigError: unreadable YAML, a top level that is not a mapping, a missing or circular `defaults`.
    """
    path = resolve_recipe(recipe) if not _chain else Path(recipe)
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"Recipe bases form a loop: {cycle}.", hint="remove one of the `defaults:` lines")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}", hint="check the indentation and quoting there") from e
    except OSError as e:
        raise ConfigError(f"Cannot read recipe {path}: {e.strerror}.") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level is a {type(data).__name__}; expected a mapping of config keys.")
    data = {key: _shorthand(key, value) for key, value in data.items()}
    base_name = data.pop("defaults", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: defaults={base_name!r} is invalid; expected one relative path such as base.yaml.")
    base_path = path.parent / base_name
    if not base_path.is_file():
        raise ConfigError(
            f"{path}: defaults file {base_path} does not exist.", hint="the path is relative to the recipe"
        )
    return merge_recipes(read_recipe(base_path, (*_chain, path.resolve())), data)


def _split_override(item: str) -> tuple[str, str | None]:
    """'a.b=v' -> ('a.b', 'v'); '~a.b' -> ('~a.b', None). Raises ConfigError for anything else."""
    if item.startswith("-"):
        raise ConfigError(
            f"Override {item!r} looks like a flag; overrides are key=value (e.g. train.lr=3e-4) or ~key.",
            hint="put options such as --help before the recipe; everything after it is read as key=value",
        )
    key, eq, text = item.partition("=")
    key = key.strip()
    if key.startswith("~"):
        if eq:
            raise ConfigError(f"Override {item!r}: `~key` deletes a key and takes no value (use key=value to set).")
        return key, None
    if not eq:
        raise ConfigError(f"Override {item!r} has no '='; expected key=value (e.g. train.lr=3e-4) or ~key.")
    return key, text


def _schema_at(parts: Sequence[str], registries: Mapping[str, Registry | None], data: Mapping[str, Any]) -> list[str]:
    """Valid keys of the mapping that `parts[:-1]` leads to, or [] where that is not known."""
    cls: Any = RunConfig
    for i, part in enumerate(parts[:-1]):
        if i == 0 and part in COMPONENTS:
            registry, current = registries.get(part), data.get(part)
            name = current.get("name") if isinstance(current, Mapping) else None
            if registry is None or not isinstance(name, str) or name not in registry or len(parts) != 2:
                return []
            config_class = getattr(registry.get(name), "config_class", None)
            fields = dataclasses.fields(config_class) if dataclasses.is_dataclass(config_class) else ()
            return ["name", *(f.name for f in fields if f.init)]
        hint = typing.get_type_hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
        if not (dataclasses.is_dataclass(hint) and isinstance(hint, type)):
            return []
        cls = hint
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _delete(data: dict[str, Any], key: str, registries: Mapping[str, Registry | None], errors: list[str]) -> None:
    parts = key.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return
    valid = _schema_at(parts, registries, data)
    if valid and parts[-1] not in valid:  # a valid key that is merely unset is already at its default
        errors.append(f"~{key}: " + unknown_key(key, parts[-1], valid))


def _set(data: dict[str, Any], key: str, value: Any, errors: list[str]) -> None:
    parts = key.split(".")
    if parts[0] in COMPONENTS and parts[1:] in ([], ["name"]):
        value = _shorthand(parts[0], value) if len(parts) == 1 else {"name": value}
        old = data.get(parts[0])
        if isinstance(old, Mapping) and isinstance(value, Mapping) and list(value) == ["name"]:
            value = dict(old) if old.get("name") == value["name"] else value  # same name: keep its options
        data[parts[0]] = value
        return
    if parts == ["backbone"] and not isinstance(value, Mapping):
        parts = ["backbone", "source"]
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            errors.append(f"{key}: cannot set a key inside {'.'.join(parts[: i + 1])}={child!r} (not a mapping).")
            return
        node = child
    node[parts[-1]] = value


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], registries: Mapping[str, Registry | None] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Applies `key=value` / `~key` overrides to a copy of a recipe mapping.

    Returns:
        The new mapping and the problems found (malformed keys, unparsable values, unknown deleted keys).

    Raises:
        ConfigError: an item that is not an override at all (`--lr=3`, `lr`).
    """
    registries = component_registries() if registries is None else registries
    out = copy.deepcopy(dict(data))
    errors: list[str] = []
    parsed = [_split_override(item) for item in overrides]
    switches = [(k, t) for k, t in parsed if k.lstrip("~") in (*COMPONENTS, *(f"{c}.name" for c in COMPONENTS))]
    for key, text in switches + [p for p in parsed if p not in switches]:
        if not _KEY.match(key.lstrip("~")):
            errors.append(f"override key {key!r} is malformed; expected dotted names such as train.lr.")
        elif text is None:
            _delete(out, key[1:], registries, errors)
        else:
            try:
                value = parse_value(text)
            except yaml.YAMLError as e:
                errors.append(f"{key}={text!r}: the value is not valid YAML ({str(e).splitlines()[0]}).")
                continue
            _set(out, key, value, errors)
    return out, errors


def component_registries() -> dict[str, Registry | None]:
    """`{'tuner': TUNERS, 'head': HEADS, 'task': TASKS}`; None where a package does not (yet) provide one.

    Without `HEADS` only a head's name shape is checked; without `TASKS`, `task.loss` is not checked.
    """
    import importlib

    found: dict[str, Registry | None] = {}
    sources = (("tuner", "mmpt.tuners", "TUNERS"), ("head", "mmpt.heads", "HEADS"), ("task", "mmpt.tasks", "TASKS"))
    for kind, module_name, attr in sources:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            module = None
        found[kind] = getattr(module, attr, None)
    return found


def _check_loss(cfg: RunConfig, tasks: Registry | None, errors: list[str]) -> None:
    """`task.loss` must be one of the task's losses (checked when the tasks package registers them)."""
    if cfg.task.loss is None or tasks is None or cfg.task.name not in tasks:
        return
    losses = sorted(getattr(tasks.get(cfg.task.name), "losses", None) or ())
    if losses and cfg.task.loss not in losses:
        errors.append(
            f"task.loss={cfg.task.loss!r} is not a {cfg.task.name} loss.{did_you_mean(cfg.task.loss, losses)} "
            f"Valid: {', '.join(losses)}."
        )


def config_from_dict(
    data: Mapping[str, Any], *, source: str = "config", registries: Mapping[str, Registry | None] | None = None
) -> RunConfig:
    """Validates a plain mapping into a RunConfig, raising one ConfigError that lists every problem."""
    registries = component_registries() if registries is None else registries
    return _build(data, [], source, registries)


def _build(data: Mapping[str, Any], errors: list[str], source: str, registries: Mapping[str, Any]) -> RunConfig:
    data = {key: _shorthand(key, value) for key, value in data.items()}
    components = {kind: data[kind] for kind in COMPONENTS if kind in data}
    plain_part = {k: v for k, v in data.items() if k not in COMPONENTS}
    checked = check_fields(RunConfig, plain_part, "", errors)
    resolved = {kind: build_component(kind, value, registries.get(kind), errors) for kind, value in components.items()}
    cfg = instantiate(RunConfig, {**checked, **resolved}, "", errors) if not errors else INVALID
    if cfg is not INVALID:
        _check_loss(cfg, registries.get("task"), errors)
    if errors:
        count = f"{len(errors)} problem{'s' if len(errors) > 1 else ''}"
        raise ConfigError(f"{count} in {source}:\n" + "\n".join(f"  - {e}" for e in errors), hint=_VALIDATE_HINT)
    return cfg


def load_config(recipe: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Reads a recipe, applies overrides and validates the result against the RunConfig dataclasses.

    Args:
        recipe: a YAML path, or the name of a shipped recipe (`nyuv2/depth/deep_prompt`, see `mmpt recipes ls`).
        overrides: `key=value` and `~key` items (module docstring), applied in order after tuner/head switches.

    Returns:
        The validated config; `tuner` and `head` hold their name and the options given (checked, normalised).

    Raises:
        ConfigError: every unknown key (with did-you-mean and the valid keys), wrong type and bad value at once.
    """
    registries = component_registries()
    data = read_recipe(recipe)
    data, errors = apply_overrides(data, overrides, registries)
    source = str(resolve_recipe(recipe)) + (" with overrides" if overrides else "")
    return _build(data, errors, source, registries)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain dicts/lists/scalars, in field order."""
    return plain(cfg)


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML in field order; `load_config` on the text gives an equal config."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def config_hash(cfg: RunConfig) -> str:
    """First 12 hex digits of the sha256 of the config's canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def save_resolved(cfg: RunConfig, run_dir: str | Path) -> Path:
    """Writes `run_dir/config.yaml` atomically (temp file + rename), headed by the config hash; returns its path."""
    from mmpt import __version__

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    text = (
        f"# Resolved mmpt {__version__} config, config_hash {config_hash(cfg)}.\n"
        f"# Re-run it: mmpt tune {path}\n" + dump_config(cfg)
    )
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
