"""`mmpt data ...`: prepare, synthesise and check NYUv2-format datasets."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare, synthesise and check NYUv2 datasets in the official MultiMAE layout.", no_args_is_help=True)
