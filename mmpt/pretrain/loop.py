"""`pretrain`: the MultiMAE pretraining loop on Accelerate, readable top to bottom.

build model → (resume) → for each step: batch → mask (a pure function of seed and step) → forward →
masked losses → step → log → checkpoint → finally the release-format checkpoint, the encoder export and
`results.json`. Resuming from a checkpoint continues exactly as the uninterrupted run: the data order
and augmentation come from `ResumableSampler`/`SeededSamples`, the masks from (seed, step), and
Accelerate restores weights, optimizer, schedule and RNG states.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmpt.backbone.checkpoint import read_state_dict, save_safetensors
from mmpt.backbone.multivit import DomainSpec, MultiViTConfig
from mmpt.config.validate import plain
from mmpt.errors import CheckpointError, ConfigError, TrainingError
from mmpt.fileio import atomic_write, write_json_atomic
from mmpt.pretrain.config import SEMSEG_CLASSES, SEMSEG_UNLABELED, PretrainConfig, dump_pretrain_config
from mmpt.pretrain.data import PretrainSamples
from mmpt.pretrain.masking import sample_token_masks
from mmpt.pretrain.model import DecoderConfig, MultiMAE
from mmpt.train.build import progress_bar, to_device
from mmpt.train.loop import TrainerState, list_checkpoints, save_checkpoint
from mmpt.train.optim import lr_factor
from mmpt.train.sampling import resumable_loader
from mmpt.train.tracking import RunLog, environment

_CHANNELS = {"rgb": 3, "depth": 1}
_NO_DECAY = ("global_tokens", "pos_emb", "mask_token", "task_embeddings")


def build_model(cfg: PretrainConfig) -> MultiMAE:
    """The MultiMAE a config describes (semseg with mmpt's 41 NYU-40 + unlabeled classes)."""
    m = cfg.model
    domains = {
        d: DomainSpec("semseg", num_classes=SEMSEG_CLASSES) if d == "semseg" else DomainSpec(channels=_CHANNELS[d])
        for d in m.domains
    }
    grid = (m.image_size // m.patch_size,) * 2
    encoder = MultiViTConfig(
        domains=domains,
        dim=m.dim,
        depth=m.depth,
        num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio,
        patch_size=m.patch_size,
        grid=grid,
        drop_path_rate=m.drop_path_rate,
    )
    decoder = DecoderConfig(dim=m.decoder_dim, depth=m.decoder_depth, num_heads=m.decoder_heads, mlp_ratio=m.mlp_ratio)
    return MultiMAE(
        encoder, outputs=m.outputs, decoder=decoder, semseg_ignore_index=SEMSEG_UNLABELED, loss_weights=cfg.loss_weights
    )


def init_from_checkpoint(model: MultiMAE, path: Path) -> None:
    """Loads a release-format checkpoint (`model.init_from`) into `model`, strictly, naming the file on failure."""
    if not path.is_file():
        raise ConfigError(
            f"model.init_from={str(path)!r}: no such file.",
            hint="point it to a release-format checkpoint such as runs/pretrain/<run>/checkpoint-final.pth",
        )
    state, _ = read_state_dict(path)
    try:
        model.load_release_state_dict(state)
    except CheckpointError as err:
        raise CheckpointError(
            f"model.init_from={str(path)!r} does not fit model.*: {err}",
            hint="make model.* (dim, depth, heads, patch, image_size, decoder_*) match the checkpoint's run",
        ) from None


def _param_groups(model: MultiMAE, cfg: PretrainConfig) -> list[dict[str, Any]]:
    """No weight decay on 1-D tensors (norms, biases) and on tokens/embeddings, as the official optimiser."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or any(k in name for k in _NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _accelerator(cfg: PretrainConfig):
    from accelerate import Accelerator

    if cfg.train.mixed_precision != "no" and not torch.cuda.is_available():
        raise TrainingError(
            f"train.mixed_precision={cfg.train.mixed_precision!r} needs a GPU (bf16 autocast is several times slower "
            "on CPUs without AMX; fp16 is unsupported).",
            hint="use train.mixed_precision=no on CPU",
        )
    return Accelerator(mixed_precision=cfg.train.mixed_precision)


def _loader(cfg: PretrainConfig, accelerator, *, start: int) -> DataLoader:
    """Endless, deterministic, resumable batches (see `mmpt.train.sampling`)."""
    dataset = PretrainSamples(
        cfg.data.root,
        cfg.data.split,
        cfg.model.domains,
        cfg.model.image_size,
        scale=cfg.data.crop_scale,
        hflip=cfg.data.hflip,
        max_samples=cfg.data.max_samples,
    )
    return resumable_loader(
        dataset,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.train.seed,
        accelerator=accelerator,
        start=start,
    )


def _mask_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def pretrain(cfg: PretrainConfig, *, progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Pretrains a MultiMAE and writes the run directory.

    Writes `config.yaml`, `metrics.jsonl` (one line every `log_every` steps), `checkpoints/step_*` (resumable),
    and at the end `checkpoint-final.pth` (`{'model': state}` in the official release layout, decoders
    included), `<name>.safetensors` (encoder only, mmpt's backbone format) and `results.json`.

    Args:
        cfg: the validated configuration.
        progress: show a rich progress bar with loss, lr, img/s and ETA (main process only).
        stop_at: stop after this step as if interrupted (checkpoint written, no final files);
            `train.resume=true` continues exactly from there.

    Returns:
        The content of `results.json` (or `{"stopped_at": step}`).

    Raises:
        TrainingError: a non-finite loss (naming the step, the domain losses and the last good checkpoint),
            or `train.resume=true` without a checkpoint.
    """
    threads = torch.get_num_threads()
    if cfg.train.cpu_threads:
        # On a small CPU, threads that spin while a data worker or another job holds a core can make every step
        # several times slower; one compute thread beside one worker avoids that.
        torch.set_num_threads(cfg.train.cpu_threads)
    try:
        return _pretrain(cfg, progress=progress, stop_at=stop_at)
    finally:
        torch.set_num_threads(threads)


def _pretrain(cfg: PretrainConfig, *, progress: bool, stop_at: int | None) -> dict[str, Any]:
    from accelerate.utils import set_seed

    accelerator = _accelerator(cfg)
    run_dir = Path(cfg.output_dir)
    set_seed(cfg.train.seed)  # the initial weights
    net = build_model(cfg)
    if cfg.model.init_from and not cfg.train.resume:
        init_from_checkpoint(net, Path(cfg.model.init_from))
    optimizer = torch.optim.AdamW(
        _param_groups(net, cfg),
        lr=cfg.train.lr,
        betas=(0.9, cfg.train.beta2),
        eps=1e-8,
        fused=accelerator.device.type in ("cpu", "cuda"),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg.train))
    state = TrainerState()
    model, optimizer = accelerator.prepare(net, optimizer)
    accelerator.register_for_checkpointing(scheduler, state)

    found = list_checkpoints(run_dir)
    if cfg.train.resume and not found:
        raise TrainingError(
            f"train.resume=true but {run_dir / 'checkpoints'} holds no checkpoint.", hint="start without resume=true"
        )
    resume_from = found[-1] if cfg.train.resume else None
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(f"# mmpt pretrain {run_dir / 'config.yaml'}\n" + dump_pretrain_config(cfg))
    log = RunLog(run_dir, resume_step=state.step if resume_from else None) if accelerator.is_main_process else None

    global_batch = cfg.data.batch_size * accelerator.num_processes
    batches = iter(_loader(cfg, accelerator, start=state.step * global_batch))
    outputs = list(net.output_adapters)
    window: dict[str, list[float]] = {}
    losses: dict[str, torch.Tensor] = {}  # stays empty when resuming a finished run
    started, last_good, first_step = time.perf_counter(), resume_from, state.step
    bar = progress_bar(enabled=progress and accelerator.is_main_process, total=cfg.train.steps)
    model.train()
    with bar:
        task = bar.add_task("pretrain", total=cfg.train.steps, completed=state.step, loss=math.nan, lr=0.0, ips=0.0)
        while state.step < cfg.train.steps:
            step_start = time.perf_counter()
            batch = to_device(next(batches), accelerator.device)
            inputs = {d: batch[d] for d in cfg.model.domains}
            mask = sample_token_masks(
                net.token_counts(inputs),
                cfg.data.batch_size,
                cfg.masking.num_encoded_tokens,
                cfg.masking.alpha,
                seed=_mask_seed(cfg.train.seed, state.step, accelerator.process_index),
                device=accelerator.device,
            )
            with accelerator.autocast():
                preds = model(inputs, mask)
            losses = net.losses(preds, batch, mask)
            if not torch.isfinite(losses["loss"]):
                parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                raise TrainingError(
                    f"Non-finite loss at step {state.step + 1} ({parts}); pretraining stopped. "
                    f"The last good checkpoint is {last_good or '(none yet)'}.",
                    hint="lower train.lr or set train.grad_clip=1.0, then resume with train.resume=true",
                )
            accelerator.backward(losses["loss"])
            if cfg.train.grad_clip:
                accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.step += 1

            ips = global_batch / (time.perf_counter() - step_start)
            lr = optimizer.param_groups[0]["lr"]
            for key, value in {**{k: v.item() for k, v in losses.items()}, "img_per_s": ips}.items():
                window.setdefault(key, []).append(value)
            bar.update(task, advance=1, loss=losses["loss"].item(), lr=lr, ips=ips)
            if log is not None and (state.step % cfg.train.log_every == 0 or state.step == cfg.train.steps):
                # Means over the steps since the last line (or the resume): less noisy than one batch.
                log.log({"step": state.step, "lr": lr, **{k: float(np.mean(v)) for k, v in window.items()}})
                window.clear()
            if state.step % cfg.train.checkpoint_every == 0 or state.step == stop_at:
                save_checkpoint(accelerator, run_dir, state.step, cfg.train.keep_checkpoints)
                last_good = run_dir / "checkpoints" / f"step_{state.step:07d}"
            if state.step == stop_at:
                return {"stopped_at": state.step}

    train_time = time.perf_counter() - started
    results = None
    if accelerator.is_main_process:
        results = _export(cfg, net, run_dir, outputs, losses, train_time, (state.step - first_step) * global_batch)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results or {}


def _export(
    cfg: PretrainConfig,
    net: MultiMAE,
    run_dir: Path,
    outputs: list[str],
    losses: dict[str, torch.Tensor],
    train_time: float,
    images: int,
) -> dict[str, Any]:
    """Writes checkpoint-final.pth (release layout), the encoder .safetensors and results.json."""
    final = run_dir / "checkpoint-final.pth"
    atomic_write(final, lambda tmp: torch.save({"model": net.release_state_dict()}, tmp))
    dtype = torch.float16 if cfg.train.export_dtype == "float16" else torch.float32
    export = save_safetensors(
        net.backbone,
        run_dir / f"{cfg.name}.safetensors",
        dtype=dtype,
        name=cfg.name,
        semseg_classes=f"{SEMSEG_CLASSES} (ids 0..39 = NYU-40 classes 1..40, {SEMSEG_UNLABELED} = unlabeled)",
        pretraining=f"MultiMAE, {cfg.train.steps} steps on {cfg.data.root}",
    )
    encoder_params = sum(t.numel() for t in net.backbone.base_state_dict().values())
    results = {
        "run_info": {"name": cfg.name, "config": plain(cfg)},
        "train_info": {
            "steps": cfg.train.steps,
            "encoder_params": encoder_params,
            "decoder_params": {d: sum(p.numel() for p in net.output_adapters[d].parameters()) for d in outputs},
            "train_time_s": round(train_time, 2),
            "img_per_s": round(images / train_time, 2) if train_time > 0 else None,
            "final_losses": {k: round(v.item(), 6) for k, v in losses.items()},
        },
        "files": {
            "checkpoint": str(final),
            "checkpoint_bytes": final.stat().st_size,
            "safetensors": str(export),
            "safetensors_bytes": export.stat().st_size,
            "safetensors_dtype": cfg.train.export_dtype,
        },
        "meta_info": environment(),
    }
    write_json_atomic(run_dir / "results.json", results)
    return results
