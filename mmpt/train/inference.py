"""Using an artifact: rebuild the tuned model on its backbone, evaluate it on a split, predict on images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmpt.artifacts import load_artifact, read_metadata
from mmpt.backbone import BACKBONES, load_backbone
from mmpt.errors import CheckpointError
from mmpt.train.model import TunedModel


@dataclass
class TunedTask:
    """An artifact ready to run: the model (backbone → tuner → head), its task and metadata."""

    model: TunedModel
    task: Any
    metadata: dict[str, Any]

    @property
    def image_size(self) -> int:
        return self.metadata["image_size"][0]


def load_tuned(
    artifact: str | Path,
    *,
    backbone: str | Path | None = None,
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
) -> TunedTask:
    """Loads the artifact's backbone (its domains and image size, so the fingerprint matches) and the tuned task.

    Args:
        artifact: `.safetensors` artifact file.
        backbone: checkpoint to load; default: the artifact's `backbone` if it is a registry name or a file here.
        num_heads: attention heads of the backbone (default: the checkpoint's metadata or dim // 64).
        device: where to run.
    """
    from mmpt.tasks import build_task

    metadata = read_metadata(artifact)
    source = backbone if backbone is not None else metadata["backbone"]
    if backbone is None and source not in BACKBONES and not Path(str(source)).exists():
        raise CheckpointError(
            f"{Path(artifact).name} was trained on backbone '{source}', which is neither a registry name nor a file "
            "here.",
            hint=f"pass the checkpoint with --backbone PATH (its sha256 is {metadata['backbone_sha256'] or 'unknown'})",
        )
    base = load_backbone(
        source, domains=metadata["domains"], image_size=tuple(metadata["image_size"]), num_heads=num_heads
    )
    loaded = load_artifact(artifact, base)
    model = TunedModel(base, loaded.tuner, loaded.head, metadata["domains"]).to(device).eval()
    return TunedTask(model=model, task=build_task(metadata["task"]), metadata=metadata)


def evaluate_artifact(
    artifact: str | Path,
    data_root: str | Path,
    *,
    split: str = "test",
    backbone: str | Path | None = None,
    num_heads: int | None = None,
    batch_size: int = 8,
    num_workers: int = 0,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Metrics of an artifact on a whole NYUv2-layout split, with the official evaluation resizing."""
    from accelerate import Accelerator
    from torch.utils.data import Subset

    from mmpt.data import NYUv2
    from mmpt.data.transforms import eval_transform
    from mmpt.train.build import _collate
    from mmpt.train.loop import evaluate

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    tuned = load_tuned(artifact, backbone=backbone, num_heads=num_heads, device=accelerator.device)
    targets = [k for k in tuned.task.target_keys if k in ("depth", "semseg")]
    domains = list(dict.fromkeys([*tuned.metadata["domains"], *targets]))
    dataset = NYUv2(data_root, split, domains=domains, transform=eval_transform(tuned.image_size))
    if max_samples is not None:
        dataset = Subset(dataset, range(min(max_samples, len(dataset))))
    shard = Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    return evaluate(tuned.model, loader, tuned.task, accelerator)


def _read_input(tuned: TunedTask, rgb_path: Path, depth_path: Path | None) -> tuple[dict, tuple[int, int]]:
    """One image (and optional depth PNG in the official encoding) as a batch of 1 at the model's scale:
    shorter side = the artifact's image size, both sides multiples of the patch."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from mmpt.data.layout import decode_depth
    from mmpt.data.transforms import to_model_inputs

    image = Image.open(rgb_path).convert("RGB")
    original = (image.height, image.width)
    patch = tuned.model.backbone.patch_size
    scale = tuned.image_size / min(original)
    size = [max(patch, round(s * scale / patch) * patch) for s in original]
    sample = {"rgb": TF.resize(TF.pil_to_tensor(image), size, antialias=True)}
    if "depth" in tuned.metadata["domains"]:
        if depth_path is None:
            raise CheckpointError(
                f"The artifact takes rgb+depth inputs; no depth PNG was given for {rgb_path.name}.",
                hint="pass --depth DEPTH.png (uint16, metres × 6553.6, the official NYUv2 encoding) per image",
            )
        metres = torch.from_numpy(decode_depth(np.array(Image.open(depth_path))))[None]
        sample["depth"] = TF.resize(metres, size, interpolation=TF.InterpolationMode.NEAREST)
    batch = {k: v[None] for k, v in to_model_inputs(sample).items()}
    return batch, original


def _thumbnail(pixels, height: int = 240):
    """Same-height grid cells, whatever the image sizes."""
    from PIL import Image

    image = Image.fromarray(pixels)
    return image.resize((max(1, round(image.width * height / image.height)), height), Image.Resampling.BILINEAR)


def predict_images(
    tuned: TunedTask, images: list[Path], out_dir: Path, *, depths: list[Path] | None = None
) -> list[Path]:
    """Predicts each image at the artifact's scale and writes pictures at the image's own size.

    depth: `<stem>_depth.png` (colourised, fixed 0–10 m) and `<stem>_depth16.png` (official uint16 encoding);
    semseg: `<stem>_semseg.png` (colours) and `<stem>_overlay.png`; both: `grid.png` (input | prediction).

    Returns:
        The files written.
    """
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    from mmpt.data.layout import encode_depth, write_png
    from mmpt.tasks import viz
    from mmpt.train.build import to_device

    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(tuned.model.parameters()).device
    written, rows = [], []
    for i, path in enumerate(images):
        batch, original = _read_input(tuned, path, depths[i] if depths else None)
        with torch.no_grad():
            output = tuned.model(to_device(batch, device))
        output = F.interpolate(output.float().cpu(), size=original, mode="bilinear", align_corners=False)
        picture = np.array(Image.open(path).convert("RGB"))
        prediction = tuned.task.prediction(output)[0]
        if tuned.task.name == "depth":
            coloured = viz.colorize_depth(prediction, valid=torch.ones_like(prediction, dtype=torch.bool))
            files = {f"{path.stem}_depth.png": coloured}
            metres = prediction[0].clamp(0, 9.9998).numpy()  # the uint16 encoding tops out just below 10 m
            write_png(Image.fromarray(encode_depth(metres)), out_dir / f"{path.stem}_depth16.png")
            written.append(out_dir / f"{path.stem}_depth16.png")
        else:
            coloured = viz.colorize_semseg(prediction)
            files = {f"{path.stem}_semseg.png": coloured, f"{path.stem}_overlay.png": viz.overlay(picture, prediction)}
        for name, pixels in files.items():
            Image.fromarray(pixels).save(out_dir / name)
            written.append(out_dir / name)
        rows.append([_thumbnail(picture), _thumbnail(coloured)])
    grid = viz.comparison_grid(rows, ["input", f"{tuned.task.name} prediction"])
    grid.save(out_dir / "grid.png")
    return [*written, out_dir / "grid.png"]
