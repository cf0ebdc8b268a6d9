"""Typer commands: glue only, no logic. Importing `mmpt` never imports this package."""
