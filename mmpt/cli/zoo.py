"""`mmpt zoo ...`: list, show, add, verify, pull and push shared artifacts (see `mmpt/zoo/`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="The adapters zoo: an indexed folder of tuned-task artifacts, and pulling/pushing them (URLs, "
    "Hugging Face Hub).\n\nExample:  mmpt zoo ls",
    no_args_is_help=True,
)

ZooDir = Annotated[
    Path, typer.Option("--zoo", envvar="MMPT_ZOO", help="zoo folder (holds index.json); $MMPT_ZOO if set")
]
DEFAULT_ZOO = Path("adapters_zoo")
MAIN_METRICS = ("miou", "delta1", "rmse", "abs_rel")  # shown first in `ls`, when present


def _main_metrics(metrics: dict) -> str:
    from mmpt.zoo import format_metric

    keys = [k for k in MAIN_METRICS if k in metrics] or sorted(metrics)
    return ", ".join(f"{k} {format_metric(metrics[k])}" for k in keys[:2])


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.1f} KiB"


@app.command("ls")
def ls(
    zoo: ZooDir = DEFAULT_ZOO,
    as_json: bool = typer.Option(False, "--json", help="print the index entries as one JSON list"),
) -> None:
    """List the zoo's artifacts: name, task, tuner, backbone, main metrics, size, licence.

    Example:  mmpt zoo ls --zoo adapters_zoo
    """
    from mmpt.zoo import load_zoo

    entries = load_zoo(zoo).entries
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mmpt zoo  ({zoo})", caption="Details: mmpt zoo show NAME   Fetch one: mmpt zoo pull NAME")
    for column in ("name", "task", "tuner", "backbone", "metrics", "size", "licence"):
        table.add_column(column, justify="right" if column == "size" else "left", no_wrap=column == "name")
    for e in entries:
        table.add_row(e.name, e.task, e.tuner, e.backbone, _main_metrics(e.metrics), _size(e.bytes), e.licence)
    Console().print(table if entries else f"No artifacts in {zoo}; add one: mmpt zoo add ARTIFACT --zoo {zoo}")


@app.command("show")
def show(
    name: str = typer.Argument(..., help="entry name (see `mmpt zoo ls`)"),
    zoo: ZooDir = DEFAULT_ZOO,
    as_json: bool = typer.Option(False, "--json", help="print the entry as JSON"),
) -> None:
    """Show one entry in full: provenance, backbone fingerprint, metrics, file size and sha256.

    Example:  mmpt zoo show nyuv2-depth-lora
    """
    from mmpt.zoo import load_zoo

    entry = load_zoo(zoo).get(name).to_dict()
    if as_json:
        typer.echo(json.dumps(entry, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=name, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in entry.items():
        table.add_row(key, Text(value if isinstance(value, str) else json.dumps(value)))  # no markup
    Console().print(table)


@app.command("add")
def add(
    artifact: Path = typer.Argument(..., help="artifact (.safetensors) written by `mmpt tune`"),
    zoo: ZooDir = DEFAULT_ZOO,
    name: str = typer.Option(None, "--name", help="entry name (default: the file name without .safetensors)"),
    licence: str = typer.Option("Apache-2.0", "--licence", help="licence of the weights (SPDX id)"),
    description: str = typer.Option(None, "--description", help="one line about the artifact"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an entry of the same name"),
) -> None:
    """Verify an artifact, copy it to ZOO/artifacts/NAME.safetensors and index it (creates the zoo if needed).

    Example:  mmpt zoo add runs/depth_lora/depth_lora.safetensors --name nyuv2-depth-lora
    """
    from rich.console import Console

    from mmpt.zoo import add_artifact

    entry = add_artifact(zoo, artifact, name=name, licence=licence, description=description, overwrite=overwrite)
    Console().print(
        f"Added [bold]{entry.name}[/bold] ({entry.task}, {entry.tuner}) to {zoo}: {entry.path}, "
        f"{entry.bytes:,} bytes, sha256 {entry.sha256}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("verify")
def verify(zoo: ZooDir = DEFAULT_ZOO) -> None:
    """Check every file against the index (size, sha256, integrity, metadata) and list unindexed files; exit 1
    on any problem.

    Example:  mmpt zoo verify --zoo adapters_zoo
    """
    from rich.console import Console
    from rich.markup import escape

    from mmpt.zoo import load_zoo, verify_zoo

    console = Console()
    if problems := verify_zoo(zoo):
        for problem in problems:
            console.print(f"[red]✗[/red] {escape(problem)}", highlight=False, soft_wrap=True)
        console.print(f"[red]{len(problems)} problem(s)[/red] in {escape(str(zoo))}", highlight=False)
        raise typer.Exit(1)
    count = len(load_zoo(zoo).entries)
    console.print(f"[green]{count} artifact{'s' * (count != 1)} OK[/green] in {escape(str(zoo))}", highlight=False)


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="entry name, https://.../NAME.safetensors or hf://owner/repo/NAME.safetensors"),
    zoo: ZooDir = DEFAULT_ZOO,
    dest: Path = typer.Option(None, "--dest", help="folder for the file (default: the mmpt cache, zoo/)"),
) -> None:
    """Fetch one artifact (copy, download or Hugging Face Hub), verify it, and print its path.

    Examples:

        mmpt zoo pull nyuv2-depth-lora

        mmpt predict "$(mmpt zoo pull hf://owner/repo/nyuv2-depth-lora.safetensors)" photo.png --out predictions/
    """
    from mmpt.zoo import pull as pull_artifact

    # download() draws its bar on stdout: keep stdout to the path alone when it is captured, as in $(...)
    typer.echo(pull_artifact(ref, zoo_folder=zoo, dest_dir=dest, progress=sys.stdout.isatty()))


@app.command("push")
def push(
    name: str = typer.Argument(..., help="entry name (see `mmpt zoo ls`)"),
    repo: str = typer.Option(..., "--repo", help="Hugging Face model repo, owner/name (created if needed)"),
    zoo: ZooDir = DEFAULT_ZOO,
    token: str = typer.Option(None, "--token", help="Hub token with write access (default: `hf auth login`'s)"),
    private: bool = typer.Option(False, "--private", help="create the repo as private"),
) -> None:
    """Upload an artifact and a generated model card (README.md) to the Hugging Face Hub.

    Example:  mmpt zoo push nyuv2-depth-lora --repo alice/mmpt-adapters
    """
    from rich.console import Console

    from mmpt.zoo import push as push_artifact

    url = push_artifact(zoo, name, repo, token=token, private=private)
    Console().print(f"Pushed {name} to {url}\nPull it with: mmpt zoo pull {url}", highlight=False, soft_wrap=True)
