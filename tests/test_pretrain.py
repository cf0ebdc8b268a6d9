"""MultiMAE pretraining: masking budget, decoder shapes and release key names, learning, checkpoint, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mmpt.backbone.load import load_backbone
from mmpt.cli.app import app
from mmpt.data.synthetic import write_synthetic_nyuv2
from mmpt.errors import CheckpointError, ConfigError, TrainingError
from mmpt.pretrain.config import (
    SEMSEG_CLASSES,
    MaskingConfig,
    PretrainConfig,
    PretrainDataConfig,
    PretrainModelConfig,
    PretrainTrainConfig,
    load_pretrain_config,
)
from mmpt.pretrain.data import PretrainSamples, robust_standardize
from mmpt.pretrain.loop import build_model, init_from_checkpoint, pretrain
from mmpt.pretrain.masking import masks_from_visible, sample_token_masks
from mmpt.pretrain.model import DecoderConfig, MultiMAE
from mmpt.testing import _decoder_state, make_tiny_checkpoint, tiny_config

DOMAINS = ("rgb", "depth", "semseg")
TINY_TRAIN = {"steps": 4, "lr": 2e-3, "warmup_steps": 1, "log_every": 1, "export_dtype": "float32"}
TINY_MODEL = {
    "dim": 32,
    "depth": 2,
    "num_heads": 2,
    "patch_size": 16,
    "image_size": 64,
    "decoder_dim": 32,
    "decoder_depth": 2,
    "decoder_heads": 2,
}


def _inputs(batch: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.randn(batch, 3, height, width, generator=gen),
        "depth": torch.randn(batch, 1, height, width, generator=gen),
        "semseg": torch.randint(0, SEMSEG_CLASSES, (batch, height // 4, width // 4), generator=gen),
    }


def _tiny_mae(**kwargs) -> MultiMAE:
    torch.manual_seed(0)
    config = tiny_config(dim=32, depth=2, num_heads=2, num_classes=SEMSEG_CLASSES, image_size=64)
    return MultiMAE(config, decoder=DecoderConfig(dim=32, depth=2, num_heads=2), semseg_ignore_index=40, **kwargs)


# ---- masking ------------------------------------------------------------------------------------
def test_mask_keeps_exactly_the_budget_in_every_sample() -> None:
    sizes = {"rgb": 64, "depth": 64, "semseg": 64}
    mask = sample_token_masks(sizes, 32, 48, alpha=1.0, seed=3)
    assert mask.ids_keep.shape == (32, 48)
    assert mask.counts.sum(1).tolist() == [48] * 32
    hidden = torch.stack([mask.masked[d].sum(1) for d in sizes], dim=1)  # (B, T)
    assert torch.equal(hidden, 64 - mask.counts)  # per-domain masks agree with the per-domain counts
    shares = mask.counts.float() / 48
    assert shares.std(0).min() > 0.1  # the Dirichlet split differs from sample to sample, for every domain
    assert len({tuple(row) for row in mask.counts.tolist()}) > 20


def test_ids_restore_inverts_ids_keep_and_matches_the_masks() -> None:
    mask = sample_token_masks({"rgb": 16, "depth": 16, "semseg": 16}, 8, 12, seed=1)
    visible = ~torch.cat([mask.masked[d] for d in ("rgb", "depth", "semseg")], dim=1)  # (B, N)
    rows = torch.arange(8)[:, None]
    assert visible[rows, mask.ids_keep].all() and visible.sum(1).tolist() == [12] * 8
    # kept token j sits at position ids_keep[j]; ids_restore sends it back to slot j of [kept..., masked...]
    assert torch.equal(mask.ids_restore[rows, mask.ids_keep], torch.arange(12).expand(8, -1))
    assert torch.equal(torch.argsort(mask.ids_restore, dim=1)[:, :12], mask.ids_keep)


def test_mask_respects_small_domains_and_is_a_function_of_the_seed() -> None:
    sizes = {"rgb": 4, "depth": 60}
    mask = sample_token_masks(sizes, 64, 40, alpha=0.2, seed=0)
    assert mask.counts[:, 0].max() <= 4 and mask.counts.sum(1).tolist() == [40] * 64
    again = sample_token_masks(sizes, 64, 40, alpha=0.2, seed=0)
    other = sample_token_masks(sizes, 64, 40, alpha=0.2, seed=1)
    assert torch.equal(mask.ids_keep, again.ids_keep) and not torch.equal(mask.ids_keep, other.ids_keep)


def test_small_alpha_gives_more_one_sided_splits() -> None:
    sizes = {"rgb": 64, "depth": 64, "semseg": 64}
    peaked = sample_token_masks(sizes, 256, 48, alpha=0.1, seed=0).counts.max(1).values.float().mean()
    even = sample_token_masks(sizes, 256, 48, alpha=10.0, seed=0).counts.max(1).values.float().mean()
    assert peaked > 40 and even < 26  # mostly one domain vs. close to 16 + 16 + 16


def test_explicit_masks_work_for_any_batch_size_and_refuse_ragged_ones() -> None:
    # Sample 0 shows two rgb tokens, sample 1 one rgb and one depth token: two per sample, as one batch.
    visible = {"rgb": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]]), "depth": torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0]])}
    mask = masks_from_visible(visible)
    assert mask.ids_keep.tolist() == [[0, 1], [3, 4]] and mask.counts.tolist() == [[2, 0], [1, 1]]
    assert mask.masked["depth"].tolist() == [[True] * 4, [False, True, True, True]]
    with pytest.raises(ConfigError, match=r"keep \[2, 3\] tokens"):
        masks_from_visible({"rgb": torch.tensor([[1, 1, 0], [1, 1, 1]])})


# ---- decoders and model -------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_decoders_predict_every_domain_at_its_resolution(size: tuple[int, int]) -> None:
    model = _tiny_mae(outputs=["rgb", "depth", "semseg", "norm_rgb"])
    h, w = size
    inputs = _inputs(2, h, w)
    preds = model(inputs, sample_token_masks(model.token_counts(inputs), 2, 10, seed=0))
    assert preds["rgb"].shape == preds["norm_rgb"].shape == (2, 3, h, w)
    assert preds["depth"].shape == (2, 1, h, w)
    assert preds["semseg"].shape == (2, SEMSEG_CLASSES, h // 4, w // 4)


def test_decoder_state_dict_has_the_release_key_names_and_shapes(tmp_path: Path) -> None:
    config = tiny_config(dim=64, depth=2, num_heads=4)  # what make_tiny_checkpoint writes in the release layout
    model = MultiMAE(config, outputs=["rgb", "depth", "semseg", "norm_rgb"], decoder=DecoderConfig(dim=32, num_heads=4))
    ours = {k: tuple(v.shape) for k, v in model.release_state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    for domain in ("rgb", "depth", "semseg", "norm_rgb"):
        official = {k: tuple(v.shape) for k, v in _decoder_state(domain, config, gen).items()}
        mine = {k: s for k, s in ours.items() if k.startswith(f"output_adapters.{domain}.")}
        assert mine == official and len(mine) == 49
    release = torch.load(make_tiny_checkpoint(tmp_path / "tiny.pth", dim=64), weights_only=True)["model"]
    assert {k: tuple(v.shape) for k, v in release.items()} == ours
    groups = [k.split(".")[0] for k in ours]
    assert list(dict.fromkeys(groups)) == ["global_tokens", "input_adapters", "output_adapters", "encoder"]


def test_encoder_with_every_token_visible_equals_the_multivit_forward() -> None:
    model = _tiny_mae().eval()
    inputs = _inputs(2, 64, 64)
    full = masks_from_visible({d: torch.ones(2, n, dtype=torch.bool) for d, n in model.token_counts(inputs).items()})
    with torch.no_grad():
        torch.testing.assert_close(model.encode(inputs, full), model.backbone(inputs), rtol=0, atol=1e-6)


def test_losses_cover_hidden_pixels_only() -> None:
    model = _tiny_mae()
    inputs = _inputs(2, 64, 64)
    mask = sample_token_masks(model.token_counts(inputs), 2, 24, seed=0)
    batch = {**inputs, "mask_valid": torch.ones(2, 1, 64, 64, dtype=torch.bool)}
    preds = {k: v.detach() for k, v in model(inputs, mask).items()}
    base = model.losses(preds, batch, mask)
    # Changing the depth target where the encoder saw the token must not change the depth loss.
    seen = (~mask.masked["depth"]).reshape(2, 1, 4, 4).repeat_interleave(16, 2).repeat_interleave(16, 3)
    moved = model.losses(preds, {**batch, "depth": batch["depth"] + 5.0 * seen}, mask)
    torch.testing.assert_close(moved["depth"], base["depth"])
    # Unlabeled semseg pixels (class 40) carry no loss: labelling everything unlabeled leaves nothing to learn.
    unlabeled = model.losses(preds, {**batch, "semseg": torch.full_like(batch["semseg"], 40)}, mask)
    assert unlabeled["semseg"].item() == 0.0
    torch.testing.assert_close(base["loss"], base["rgb"] + base["depth"] + base["semseg"])


def test_robust_standardize_uses_valid_pixels_only() -> None:
    depth = torch.linspace(1, 5, 100).reshape(1, 10, 10)
    valid = torch.ones_like(depth, dtype=torch.bool)
    valid[0, 0, :5] = False
    out = robust_standardize(depth, valid)
    assert (out[~valid] == 0).all()
    kept = out[valid].sort().values[9:85]  # the trimmed middle has mean 0, unit variance
    assert abs(kept.mean().item()) < 1e-5 and abs(kept.var().item() - 1) < 1e-4


# ---- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_nyuv2(tmp_path_factory.mktemp("synth"), train=8, test=0, size=64, seed=0, progress=False)


def _cfg(root: Path, out: Path, **train) -> PretrainConfig:
    return PretrainConfig(
        model=PretrainModelConfig(**TINY_MODEL, drop_path_rate=0.1),  # stochastic depth: resume must restore RNG
        masking=MaskingConfig(num_encoded_tokens=16),
        data=PretrainDataConfig(root=str(root), batch_size=4, num_workers=0),
        train=PretrainTrainConfig(**{**TINY_TRAIN, "checkpoint_every": 100, **train}),
        output_dir=str(out),
        name="tiny-pretrained",
    )


def test_a_few_steps_lower_the_loss_on_one_batch(synth: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth, tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    samples = PretrainSamples(synth, "train", DOMAINS, 64)
    torch.manual_seed(0)
    batch = torch.utils.data.default_collate([samples[i] for i in range(4)])
    inputs = {d: batch[d] for d in DOMAINS}
    mask = sample_token_masks(model.token_counts(inputs), 4, 16, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(25):
        losses = model.losses(model(inputs, mask), batch, mask)
        losses["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["loss"] < 0.6 * first["loss"]
    assert all(last[d] < first[d] for d in DOMAINS)


@pytest.fixture(scope="module")
def run(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 4-step run, through the CLI and a recipe file."""
    out = tmp_path_factory.mktemp("run")
    recipe = out / "recipe.yaml"
    model = "\n".join(f"  {k}: {v}" for k, v in {**TINY_MODEL, "drop_path_rate": 0.1}.items())
    recipe.write_text(f"model:\n{model}\nmasking:\n  num_encoded_tokens: 16\ndata:\n  root: {synth}\n  batch_size: 4\n")
    overrides = [f"train.{k}={v}" for k, v in TINY_TRAIN.items()]
    overrides += ["data.num_workers=0", f"output_dir={out / 'full'}", "name=tiny-pretrained"]
    result = CliRunner().invoke(app, ["pretrain", str(recipe), *overrides, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "checkpoint-final.pth" in result.output
    return out / "full"


def test_resume_reproduces_the_uninterrupted_run_exactly(synth: Path, run: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth, tmp_path)
    assert pretrain(cfg, progress=False, stop_at=2) == {"stopped_at": 2}
    cfg.train.resume = True
    pretrain(cfg, progress=False)
    full = torch.load(run / "checkpoint-final.pth", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "checkpoint-final.pth", weights_only=True)["model"]
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)

    def losses(path: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (path / "metrics.jsonl").read_text().splitlines()]

    assert losses(tmp_path) == losses(run) and len(losses(run)) == 4


def test_final_checkpoint_loads_like_the_release_file(run: Path) -> None:
    state = torch.load(run / "checkpoint-final.pth", weights_only=True)["model"]
    backbone = load_backbone(run / "checkpoint-final.pth", num_heads=2)
    skipped = backbone.load_report.skipped["pretraining decoder keys (output_adapters.*)"]
    assert len(skipped) == 3 * 49 and backbone.domains == list(DOMAINS)
    assert backbone.config.domains["semseg"].num_classes == SEMSEG_CLASSES
    # The pretraining model's encoder, rebuilt from the file, and the loaded backbone agree on unmasked input.
    model = build_model(load_pretrain_config(run / "config.yaml")).eval()
    model.load_release_state_dict(state)
    inputs = _inputs(2, 64, 64)
    with torch.no_grad():
        assert torch.equal(backbone(inputs), model.backbone(inputs))
    export = load_backbone(run / "tiny-pretrained.safetensors")  # heads from the file's metadata
    assert export.config.num_heads == 2 and export.source_name == "tiny-pretrained"
    assert all(
        torch.equal(a, b) for a, b in zip(export.state_dict().values(), backbone.state_dict().values(), strict=True)
    )
    results = json.loads((run / "results.json").read_text())
    assert results["train_info"]["steps"] == 4 and results["files"]["safetensors_dtype"] == "float32"


def test_a_non_finite_loss_stops_with_the_step_and_the_last_checkpoint(
    synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = MultiMAE.losses

    def losses(self, preds, batch, mask):  # finite for two steps, then the rgb loss overflows
        out = real(self, preds, batch, mask)
        if getattr(self, "_calls", 0) >= 2:
            out["rgb"] = out["rgb"] * torch.inf
            out["loss"] = out["loss"] + out["rgb"]
        self._calls = getattr(self, "_calls", 0) + 1
        return out

    monkeypatch.setattr(MultiMAE, "losses", losses)
    with pytest.raises(TrainingError, match=r"Non-finite loss at step 3 \(rgb=inf.*step_0000002"):
        pretrain(_cfg(synth, tmp_path, checkpoint_every=2), progress=False)


def test_recipe_errors_list_every_problem(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model:\n  dimm: 64\nmasking:\n  alpha: -1\n")
    with pytest.raises(ConfigError) as error:
        load_pretrain_config(recipe, ["train.stepz=3"])
    message = str(error.value)
    assert "model.dimm" in message and "Did you mean 'dim'" in message
    assert "masking.alpha=-1" in message and "train.stepz" in message


def test_init_from_continues_from_a_release_checkpoint(synth: Path, run: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth, tmp_path)
    cfg.model.init_from = str(run / "checkpoint-final.pth")
    model = build_model(cfg)
    init_from_checkpoint(model, Path(cfg.model.init_from))
    start = torch.load(run / "checkpoint-final.pth", weights_only=True)["model"]
    assert all(torch.equal(v, start[k]) for k, v in model.release_state_dict().items())  # every tensor, decoders too
    pretrain(cfg, progress=False, stop_at=1)  # the loop starts from it: the first loss is the trained model's
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    fresh = tmp_path / "fresh"
    pretrain(_cfg(synth, fresh), progress=False, stop_at=1)
    assert first < json.loads((fresh / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_init_from_names_the_file_when_it_is_missing_or_does_not_fit(synth: Path, run: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth, tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        init_from_checkpoint(build_model(cfg), tmp_path / "absent.pth")
    cfg.model.depth = TINY_MODEL["depth"] + 1
    with pytest.raises(CheckpointError, match=r"(?s)model\.init_from=.*checkpoint-final\.pth.*missing: encoder\.2\."):
        init_from_checkpoint(build_model(cfg), run / "checkpoint-final.pth")
