"""`mmpt inspect PATH`: what a checkpoint or artifact holds (being written; see issue 2)."""

from __future__ import annotations

import typer


def inspect(path: str = typer.Argument(..., help="checkpoint or artifact")) -> None:
    """Show what a checkpoint or artifact holds."""
    raise typer.Exit(1)
