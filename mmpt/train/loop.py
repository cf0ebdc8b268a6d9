"""The one training loop (`fit`) and evaluation (`evaluate`), on Accelerate.

Accelerate does devices, precision, DDP and checkpoint files; the loop stays readable top to bottom:
build → (resume) → for each optimizer step: accumulate micro-batches, clip, step, schedule, log →
evaluate every N steps, keeping the best artifact → checkpoint every N steps → results.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmpt.config.schema import RunConfig
from mmpt.errors import TrainingError
from mmpt.fileio import write_json_atomic
from mmpt.train import build
from mmpt.train.optim import build_optimizer, build_scheduler, param_groups
from mmpt.train.tracking import RunLog, environment


@dataclass
class TrainerState:
    """What a checkpoint must restore beyond weights and optimizer: where we are and the best so far."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "best_metric": self.best_metric, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.best_metric, self.best_step = state["step"], state["best_metric"], state["best_step"]


def _accelerator(cfg: RunConfig):
    from accelerate import Accelerator, DistributedDataParallelKwargs

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.train.mixed_precision != "no" and device_type == "cpu":
        raise TrainingError(
            f"train.mixed_precision={cfg.train.mixed_precision!r} needs a GPU: on CPUs without AMX, bf16 autocast "
            "is ~6.7x slower (benchmarks show it) and fp16 is unsupported.",
            hint="use train.mixed_precision=no on CPU",
        )
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        gradient_accumulation_steps=cfg.train.grad_accum,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )


def list_checkpoints(run_dir: Path) -> list[Path]:
    return sorted(p for p in (run_dir / "checkpoints").glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))


def save_checkpoint(accelerator, run_dir: Path, step: int, keep: int) -> None:
    final = run_dir / "checkpoints" / f"step_{step:07d}"
    tmp = final.with_name(final.name + ".tmp")
    accelerator.save_state(str(tmp))  # every process writes its RNG state; rank 0 the rest
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def evaluate(model, loader: DataLoader, task, accelerator, *, loss_fn=None) -> dict[str, Any]:
    """Metrics over the whole loader (sums across processes), plus the mean loss when `loss_fn` is given."""
    metric = task.metrics().to(accelerator.device)
    total_loss = torch.zeros(2, device=accelerator.device)  # (sum of batch losses × batch, samples)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = build.to_device(batch, accelerator.device)
            with accelerator.autocast():
                output = model(batch)
            output = output.float()
            task.update_metrics(metric, output, batch)
            if loss_fn is not None:
                n = output.shape[0]
                total_loss += torch.stack([loss_fn(output, batch).detach() * n, torch.tensor(n, device=output.device)])
    model.train(was_training)
    results = {k: (v.tolist() if v.ndim else v.item()) for k, v in metric.compute().items()}
    if loss_fn is not None:
        total = accelerator.reduce(total_loss, reduction="sum")
        results["loss"] = (total[0] / total[1].clamp(min=1)).item()
    return results


def fit(cfg: RunConfig, *, progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Trains `cfg.tuner` + `cfg.head` on `cfg.task` and writes the run directory.

    Args:
        cfg: the validated run configuration.
        progress: show a rich progress bar (main process only).
        stop_at: stop after this optimizer step as if interrupted (checkpoint written, no results);
            `train.resume=true` continues exactly from there. For tests and time-sliced jobs.

    Returns:
        The content of `results.json`.
    """
    from accelerate.utils import set_seed

    accelerator = _accelerator(cfg)
    run_dir = Path(cfg.output_dir)
    state = TrainerState()
    set_seed(cfg.train.seed)  # tuner and head initialisation
    run = build.build_run(cfg, device=accelerator.device)
    groups = param_groups(
        run.tuner.trainable_parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, group="tuner"
    )
    groups += param_groups(
        run.head.named_parameters(),
        lr=cfg.train.head_lr or cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        group="head",
    )
    optimizer = build_optimizer(groups, cfg.train, accelerator.device)
    scheduler = build_scheduler(optimizer, cfg.train)
    model, optimizer = accelerator.prepare(run.model, optimizer)
    accelerator.register_for_checkpointing(scheduler, state)

    resume_from = list_checkpoints(run_dir)[-1] if cfg.train.resume and list_checkpoints(run_dir) else None
    if cfg.train.resume and resume_from is None:
        raise TrainingError(
            f"train.resume=true but {run_dir / 'checkpoints'} holds no checkpoint.",
            hint="start the run without resume=true",
        )
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        build.save_run_config(cfg, run_dir)
    log = RunLog(run_dir, resume_step=state.step if resume_from else None) if accelerator.is_main_process else None

    global_batch = cfg.data.batch_size * cfg.train.grad_accum * accelerator.num_processes
    batches = iter(build.train_loader(cfg, run, accelerator, start=state.step * global_batch))
    eval_loader = build.eval_loader(cfg, run, accelerator)
    loss_fn = run.loss_fn
    bar = build.progress_bar(enabled=progress and accelerator.is_main_process, total=cfg.train.steps)
    started, last_good = time.perf_counter(), resume_from
    model.train()
    with bar:
        task_id = bar.add_task(
            cfg.run_name, total=cfg.train.steps, completed=state.step, loss=math.nan, lr=0.0, ips=0.0
        )
        while state.step < cfg.train.steps:
            step_start = time.perf_counter()
            for _ in range(cfg.train.grad_accum):
                batch = build.to_device(next(batches), accelerator.device)
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        output = model(batch)
                    loss = loss_fn(output.float(), batch)
                    extra = run.extra_loss()
                    if extra is not None:
                        loss = loss + extra
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"Non-finite loss ({loss.item()}) at step {state.step + 1}; training stopped. "
                            f"The last good checkpoint is {last_good or '(none yet)'}.",
                            hint="lower train.lr, enable train.grad_clip, or check the data with `mmpt data check`",
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.train.grad_clip:
                        accelerator.clip_grad_norm_(
                            [p for _, p in run.model.trainable_parameters()], cfg.train.grad_clip
                        )
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            state.step += 1
            ips = global_batch / (time.perf_counter() - step_start)
            lr = optimizer.param_groups[0]["lr"]
            bar.update(task_id, advance=1, loss=loss.item(), lr=lr, ips=ips)
            if log is not None and (state.step % cfg.train.log_every == 0 or state.step == cfg.train.steps):
                log.log({"step": state.step, "loss": loss.item(), "lr": lr, "img_per_s": ips})
            if state.step % cfg.train.eval_every == 0 or state.step == cfg.train.steps:
                _evaluate_and_keep_best(cfg, run, model, eval_loader, accelerator, state, log, loss, lr)
            if state.step % cfg.train.checkpoint_every == 0 or state.step == stop_at:
                save_checkpoint(accelerator, run_dir, state.step, cfg.train.keep_checkpoints)
                last_good = run_dir / "checkpoints" / f"step_{state.step:07d}"
            if state.step == stop_at:
                return {"stopped_at": state.step}
    results = build.results(
        cfg, run, state, accelerator, train_time=time.perf_counter() - started, environment=environment()
    )
    if accelerator.is_main_process:
        write_json_atomic(run_dir / "results.json", results)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def _evaluate_and_keep_best(cfg, run, model, eval_loader, accelerator, state, log, loss, lr) -> None:
    metrics = evaluate(model, eval_loader, run.task, accelerator, loss_fn=run.loss_fn)
    value = metrics[run.task.primary_metric]
    better = state.best_metric is None or (
        value > state.best_metric if run.task.higher_is_better else value < state.best_metric
    )
    if better:
        state.best_metric, state.best_step = value, state.step
        if accelerator.is_main_process:
            build.save_best_artifact(cfg, run, metrics={**_scalars(metrics), "step": state.step})
    if accelerator.is_main_process:
        _save_pictures(
            run, model, eval_loader, accelerator, Path(cfg.output_dir) / "viz" / f"step_{state.step:07d}.png"
        )
    if log is not None:
        log.log({"step": state.step, **{f"eval_{k}": v for k, v in _scalars(metrics).items()}})
        log.summary(
            {
                "step": state.step,
                "train_loss": loss.item(),
                "lr": lr,
                **{f"eval_{k}": v for k, v in _scalars(metrics).items()},
            }
        )
    accelerator.wait_for_everyone()


def _save_pictures(run, model, loader: DataLoader, accelerator, path: Path, max_samples: int = 4) -> None:
    """input | ground truth | prediction | error for the first evaluation samples (`viz/step_N.png`)."""
    batch = build.to_device(next(iter(loader)), accelerator.device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        output = model(batch).float()
    model.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    run.task.visualise(batch, output, max_samples=max_samples).save(path)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}
