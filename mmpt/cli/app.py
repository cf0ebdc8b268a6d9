"""The `mmpt` command line: one typer app with a sub-command per step of the data flow."""

from __future__ import annotations

import click
import typer
from typer.core import TyperGroup

from mmpt.cli import bench, data, demo, env, inspect_cmd, pretrain, recipes, tune, zoo
from mmpt.errors import MmptError


def print_error(error: MmptError) -> None:
    """Prints an MmptError as a red panel on stderr, without a traceback."""
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    markup = escape(error.message) + (f"\n\n[bold]Fix:[/bold] {escape(error.hint)}" if error.hint else "")
    text = Text.from_markup(markup, overflow="fold")
    Console(stderr=True).print(Panel(text, title=type(error).__name__, border_style="red", expand=False))


class _MmptGroup(TyperGroup):
    """Turns every MmptError raised by a sub-command into a panel and an exit code (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MmptError as e:
            print_error(e)
            ctx.exit(e.exit_code)


app = typer.Typer(
    name="mmpt",
    cls=_MmptGroup,
    help="Parameter-efficient fine-tuning for MultiMAE.\n\nExample:  mmpt inspect multimae-b.pth",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("demo")(demo.demo)
app.command("tune")(tune.tune)
app.command("eval")(tune.eval_)
app.command("predict")(tune.predict)
app.command("inspect")(inspect_cmd.inspect)
app.command("env")(env.env)
app.command("pretrain")(pretrain.pretrain)
app.command("bench")(bench.bench)
app.add_typer(data.app, name="data")
app.add_typer(recipes.app, name="recipes")
app.add_typer(zoo.app, name="zoo")


def main() -> None:
    """Console-script entry point."""
    app()
