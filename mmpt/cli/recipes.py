"""`mmpt recipes ...`: list, show, copy and validate recipes (torchtune's `tune ls/cat/cp/validate`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mmpt.errors import ConfigError

app = typer.Typer(
    help="List, show, copy and validate recipes: commented YAML files that describe a tuning run.\n\n"
    "Example:  mmpt recipes ls",
    no_args_is_help=True,
)


@app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="print one JSON list instead of a table")) -> None:
    """List the shipped recipes: name, task, tuner and what each one does.

    Example:  mmpt recipes ls
    """
    from mmpt.config.recipes import list_recipes

    recipes = list_recipes()
    if as_json:
        rows = [{"name": r.name, "task": r.task, "tuner": r.tuner, "command": r.command, "description": r.description}
                for r in recipes]  # fmt: skip
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title="mmpt recipes", caption="Run one: mmpt tune NAME data.root=...   Edit one: mmpt recipes cp NAME"
    )
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("task", no_wrap=True)
    table.add_column("tuner", no_wrap=True)
    table.add_column("description", overflow="fold")
    for recipe in recipes:
        table.add_row(recipe.name, recipe.task, recipe.tuner, Text(recipe.description))  # no markup
    Console().print(table)


@app.command("show")
def show(
    recipe: str = typer.Argument(..., help="shipped recipe name (see `mmpt recipes ls`) or a YAML path"),
) -> None:
    """Print a recipe with its comments, syntax-highlighted on a terminal and verbatim when piped.

    Example:  mmpt recipes show nyuv2/depth/deep_prompt
    """
    from rich.console import Console
    from rich.syntax import Syntax

    from mmpt.config.recipes import resolve_recipe

    path = resolve_recipe(recipe)
    text = path.read_text(encoding="utf-8")
    console = Console()
    if not console.is_terminal:  # `mmpt recipes show NAME > my.yaml` gives the file itself
        typer.echo(text, nl=False)
        return
    console.print(f"# {path}", style="dim", highlight=False, soft_wrap=True)
    console.print(Syntax(text, "yaml", word_wrap=True, background_color="default"))


@app.command("cp")
def cp(
    recipe: str = typer.Argument(..., help="shipped recipe name (see `mmpt recipes ls`) or a YAML path"),
    dest: Path = typer.Argument(..., help="file to write, or an existing directory to copy into"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite DEST if it exists"),
) -> None:
    """Copy a recipe to edit it; the copy's header command is pointed at the copy.

    Example:  mmpt recipes cp nyuv2/depth/deep_prompt my_depth.yaml
    """
    from rich.console import Console

    from mmpt.config.recipes import RECIPES_DIR, resolve_recipe

    source = resolve_recipe(recipe)
    target = dest / source.name if dest.is_dir() else dest
    if target.suffix not in (".yaml", ".yml"):
        target = target.with_name(target.name + ".yaml")
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; not overwriting it.", hint="pass --force to overwrite it")
    if target.resolve() == source.resolve():
        raise ConfigError(f"{target} is the recipe itself; choose another destination.")
    text = source.read_text(encoding="utf-8")
    if source.resolve().is_relative_to(RECIPES_DIR):
        name = source.resolve().relative_to(RECIPES_DIR).with_suffix("").as_posix()
        text = _point_command_at(text, name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    Console().print(f"Copied {source} to {target}. Edit it, then: mmpt tune {target}", highlight=False, soft_wrap=True)


def _point_command_at(text: str, name: str, target: Path) -> str:
    """Rewrites the header's `mmpt tune NAME ...` line so that the copy's own command runs the copy."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        if line.startswith(f"# mmpt tune {name}"):
            lines[i] = line.replace(f"mmpt tune {name}", f"mmpt tune {target}", 1)
            break
    return "".join(lines)


@app.command("validate")
def validate(
    recipe: str = typer.Argument(..., help="shipped recipe name (see `mmpt recipes ls`) or a YAML path"),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, ~key to delete a key", show_default=False),
    print_config: bool = typer.Option(False, "--print-config", help="also print the resolved config as YAML"),
) -> None:
    """Check a recipe and overrides without running anything: OK and the config hash, or every problem (exit 2).

    Examples:

        mmpt recipes validate nyuv2/depth/lora tuner.rank=16 train.lr=5e-4

        mmpt recipes validate my_depth.yaml ~train.grad_clip
    """
    from rich.console import Console
    from rich.markup import escape

    from mmpt.config.load import component_registries, config_hash, dump_config, load_config
    from mmpt.config.recipes import recipe_kind, resolve_recipe

    console = Console()
    kind = recipe_kind(resolve_recipe(recipe))
    if kind == "bench":
        from mmpt.bench.spec import load_bench

        if overrides:
            raise ConfigError("bench recipes take no key=value overrides; edit a copy (`mmpt recipes cp`).")
        rows = load_bench([recipe], "runs/bench").rows
        console.print(f"[green]OK[/green] {escape(recipe)}  (bench recipe, {len(rows)} rows)", highlight=False)
        return
    if kind == "pretrain":
        from mmpt.pretrain.config import load_pretrain_config

        load_pretrain_config(recipe, overrides or [])
        console.print(f"[green]OK[/green] {escape(recipe)}  (pretraining recipe)", highlight=False, soft_wrap=True)
        return
    cfg = load_config(recipe, overrides or [])
    if print_config:
        from rich.syntax import Syntax

        console.print(Syntax(dump_config(cfg), "yaml", background_color="default"))
    console.print(
        f"[green]OK[/green] {escape(recipe)}  config_hash {config_hash(cfg)}", highlight=False, soft_wrap=True
    )
    what = {"tuner": "tuner options", "head": "head options", "task": "task.loss"}
    if unchecked := [what[kind] for kind, registry in component_registries().items() if registry is None]:
        console.print(f"note: not checked (no registry installed yet): {', '.join(unchecked)}", highlight=False)
