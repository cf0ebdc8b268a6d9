"""`mmpt pretrain`: MultiMAE pretraining from a recipe (glue only; the loop is `mmpt.pretrain.loop`)."""

from __future__ import annotations

import typer


def pretrain(
    recipe: str = typer.Argument(
        ..., help="pretraining recipe file or shipped name, e.g. pretrain/multimae_tiny_synth"
    ),
    overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. train.steps=200 data.root=DIR"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (metrics.jsonl only)"),
) -> None:
    """Pretrain a MultiMAE (masked rgb/depth/semseg autoencoding); writes a release-format checkpoint.

    Writes config.yaml, metrics.jsonl, resumable checkpoints/, checkpoint-final.pth (the official release
    layout, decoders included; `mmpt inspect` and `load_backbone` read it), <name>.safetensors (encoder only)
    and results.json into output_dir.

    Examples:

        mmpt data synth --out data/synth128 --train 2000 --test 0 --size 160 --seed 0

        mmpt pretrain pretrain/multimae_tiny_synth data.root=data/synth128

        mmpt pretrain pretrain/multimae_tiny_synth train.resume=true
    """
    from mmpt.pretrain.config import load_pretrain_config
    from mmpt.pretrain.loop import pretrain as run

    cfg = load_pretrain_config(recipe, overrides or [])
    results = run(cfg, progress=not no_progress)
    info, files = results["train_info"], results["files"]
    losses = ", ".join(f"{k}={v:.4f}" for k, v in info["final_losses"].items())
    typer.echo(
        f"{info['steps']} steps in {info['train_time_s']:.0f} s ({info['img_per_s']} img/s); last batch: {losses}"
    )
    typer.echo(f"checkpoint: {files['checkpoint']} ({files['checkpoint_bytes']:,} bytes)")
    typer.echo(f"encoder:    {files['safetensors']} ({files['safetensors_bytes']:,} bytes)")
