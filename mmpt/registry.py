"""A tiny, uniform name → object registry with did-you-mean errors."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mmpt.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """Returns ' Did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Maps stable lowercase names to objects (classes, factories, specs).

    Args:
        kind: what is registered, used in error messages ("tuner", "backbone", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name`."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def register_class(self, name: str) -> Callable[[T], T]:
        """Class decorator: registers a component class under `name` and sets its `name` attribute."""

        def decorator(cls: T) -> T:
            cls.name = name
            self.add(name, cls)
            return cls

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, list(self._items))}",
                hint=f"valid {self.kind} names: {valid}",
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclass
class ComponentConfig:
    """Base of every component config (tuners, heads): dataclass fields with `metadata={"help": ...}`,
    validated in `__post_init__` (raise ConfigError naming the field, the value and the valid range)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ComponentConfig:
        """Builds the config, answering unknown keys with the valid ones."""
        fields = sorted(f.name for f in dataclasses.fields(cls))
        unknown = [k for k in values if k not in fields]
        if unknown:
            hints = "".join(did_you_mean(k, fields) for k in unknown)
            raise ConfigError(
                f"Unknown {cls.__name__} key(s) {unknown}.{hints}", hint=f"valid keys: {', '.join(fields)}"
            )
        return cls(**values)
