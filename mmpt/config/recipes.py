"""The recipes shipped with mmpt: where they live, their names, and what their header comments say.

The source of truth is the package directory `mmpt/recipes/` (installed as package data, so names such
as `nyuv2/depth/deep_prompt` resolve after `pip install`); the repository's top-level `recipes` is a
symlink to it for people working in a clone. A recipe's name is its path under that directory without
`.yaml`. Its header is the leading block of `#` comments: the first `mmpt ...` line is the command to run
it, the other lines describe it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmpt.errors import ConfigError
from mmpt.registry import did_you_mean

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
"""Directory of the shipped recipes (`mmpt/recipes/`)."""


@dataclass(frozen=True)
class RecipeInfo:
    """A shipped recipe as `mmpt recipes ls` shows it.

    Attributes:
        name: path under `RECIPES_DIR` without `.yaml`, e.g. `nyuv2/depth/deep_prompt`.
        path: the YAML file.
        task: `task.name` in the recipe ('' when it does not say).
        tuner: `tuner.name` in the recipe ('' when it does not say).
        command: the `mmpt ...` line of the header comment ('' when there is none).
        description: the header's first paragraph besides the command.
    """

    name: str
    path: Path
    task: str
    tuner: str
    command: str
    description: str


def recipe_names() -> list[str]:
    """Names of the shipped recipes, sorted."""
    return sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.rglob("*.yaml"))


def recipe_kind(path: Path) -> str:
    """Which command runs a recipe ("tune" or "pretrain"), from its header's `mmpt <command> ...` line."""
    command, _ = read_header(path)
    return command.split()[1] if len(command.split()) > 1 else "tune"


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe path, or a shipped recipe's name (with or without `.yaml`), -> an existing file.

    An existing file wins over a shipped name, so a local copy made with `mmpt recipes cp` is what runs.

    Raises:
        ConfigError: neither a file nor a shipped name; says the closest name and how to list them.
    """
    path = Path(recipe).expanduser()
    if path.is_file():
        return path
    name = Path(recipe).as_posix().removesuffix(".yaml").strip("/")
    shipped = RECIPES_DIR / f"{name}.yaml"
    if name and shipped.is_file():
        return shipped
    if path.is_dir():
        raise ConfigError(f"Recipe {str(recipe)!r} is a directory; expected a YAML file or a recipe name.")
    names = recipe_names()
    raise ConfigError(
        f"Recipe {str(recipe)!r} is neither a file nor a shipped recipe.{did_you_mean(name, names)}",
        hint=f"`mmpt recipes ls` lists the shipped recipes ({', '.join(names[:4])}, ...); a path must exist",
    )


def read_header(path: Path) -> tuple[str, str]:
    """(command, description) from the leading `#` comment block of a recipe.

    The command is the first `mmpt ...` line; the description is the first paragraph of the other lines
    (up to the next empty `#` line), joined by spaces.
    """
    command, paragraphs = "", [[]]
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("mmpt ") and not command:
            command = text
        elif text:
            paragraphs[-1].append(text)
        elif paragraphs[-1]:
            paragraphs.append([])
    return command, " ".join(paragraphs[0])


def recipe_info(name: str) -> RecipeInfo:
    """Header and component names of one shipped recipe (read, not validated)."""
    from mmpt.config.load import read_recipe

    path = resolve_recipe(name)
    data = read_recipe(path)
    command, description = read_header(path)

    def pick(section: str) -> str:
        value = data.get(section)
        return str(value.get("name", "")) if isinstance(value, dict) else ""

    return RecipeInfo(name, path, pick("task"), pick("tuner"), command, description)


def list_recipes() -> list[RecipeInfo]:
    """Every shipped recipe, sorted by name."""
    return [recipe_info(name) for name in recipe_names()]
