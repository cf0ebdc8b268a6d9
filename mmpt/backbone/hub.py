"""Named backbones (`multimae-b`, ...) and resolution of any source to a verified local file."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from mmpt.download import cache_dir, download
from mmpt.errors import CheckpointError, DownloadError, IntegrityError
from mmpt.registry import Registry

_RELEASE = "https://github.com/EPFL-VILAB/MultiMAE/releases/download/pretrained-weights/"
PACKAGED = "package:"  # a spec URL with this prefix names a file shipped inside mmpt (mmpt/assets/)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt|safetensors)$")


@dataclass(frozen=True)
class BackboneSpec:
    """A named checkpoint: where it comes from and what it is (weights + provenance as data)."""

    name: str
    url: str
    sha256: str  # full digest or the prefix carried by the release file name
    size: int | None = None
    domains: tuple[str, ...] = ("rgb",)
    description: str = ""
    license: str = "CC-BY-NC-4.0"
    paper: str = "https://arxiv.org/abs/2204.01678"

    @property
    def filename(self) -> str:
        return Path(urllib.parse.urlparse(self.url.removeprefix(PACKAGED)).path).name


BACKBONES: Registry[BackboneSpec] = Registry("backbone")
for _spec in (
    BackboneSpec(
        "multimae-b",
        _RELEASE + "multimae-b_98_rgb+-depth-semseg_1600e_multivit-afff3f8c.pth",
        sha256="afff3f8c83f4e5a22f2edda21f00b2efeb077f3303c933dc4a133becf28c8345",
        size=394_406_915,
        domains=("rgb", "depth", "semseg"),
        description="MultiMAE ViT-B, RGB+D+S, 1600 epochs (official release, with its pretraining decoders)",
    ),
    BackboneSpec(
        "mae-b",
        _RELEASE + "mae-b_dec512d8b_1600e_multivit-c477195b.pth",
        sha256="c477195b",
        description="MAE ViT-B, RGB, 1600 epochs, in MultiViT format (official release)",
    ),
    BackboneSpec(
        "multimae-tiny-synth",
        PACKAGED + "multimae-tiny-synth.safetensors",
        sha256="00e7c920bb72ab3925a309f10c1a51a5b61a8c31f6f1dc014bd2045d1acca48d",
        size=11558016,
        domains=("rgb", "depth", "semseg"),
        description="MultiMAE ViT-Ti (dim 192, 12 blocks, 3 heads, patch 16, 128 px) pretrained by mmpt on "
        "synthetic NYUv2-format scenes (recipes pretrain/multimae_tiny_synth_stage1, then "
        "pretrain/multimae_tiny_synth); shipped in the package, fp16",
        license="Apache-2.0",
    ),
):
    BACKBONES.add(_spec.name, _spec)


def packaged_file(filename: str) -> Path:
    """Path of a backbone file shipped in the package (`mmpt/assets/<filename>`)."""
    from importlib.resources import files

    return Path(str(files("mmpt") / "assets" / filename))


def hash_from_filename(name: str) -> str | None:
    """The sha256 prefix a release file name carries (`...-afff3f8c.pth` → 'afff3f8c'), if any."""
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def resolve_source(source: str | Path) -> tuple[Path, BackboneSpec | None]:
    """Turns a registry name, URL or path into a local file (downloading into the cache if needed)."""
    text = str(source)
    if "://" in text:
        url = text
        name = Path(urllib.parse.urlparse(url).path).name
        return _fetch(url, name, sha256=hash_from_filename(name), size=None, label=url), None
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            raise CheckpointError(f"{path} is a directory; expected a .pth or .safetensors checkpoint file.")
        return path, None
    if text in BACKBONES:
        spec = BACKBONES.get(text)
        if spec.url.startswith(PACKAGED):
            path = packaged_file(spec.url.removeprefix(PACKAGED))
            if not path.exists():
                raise CheckpointError(
                    f"The shipped backbone {spec.name} is missing from the installation ({path}).",
                    hint="reinstall mmpt (pip install --force-reinstall mmpt) or pass a checkpoint path",
                )
            return path, spec
        return _fetch(spec.url, spec.filename, sha256=spec.sha256, size=spec.size, label=spec.name), spec
    if path.suffix in (".pth", ".pt", ".safetensors") or "/" in text:
        raise CheckpointError(f"Checkpoint file {path} does not exist.", hint="check the path")
    BACKBONES.get(text)  # raises the did-you-mean error listing the names
    raise AssertionError  # unreachable


def _fetch(url: str, filename: str, *, sha256: str | None, size: int | None, label: str) -> Path:
    dest = cache_dir() / "checkpoints" / filename
    if dest.exists():
        return dest
    try:
        return download(url, dest, sha256=sha256, size=size)
    except IntegrityError:
        raise
    except DownloadError as e:
        raise CheckpointError(
            f"Could not download {label}: {e.message}",
            hint=f"download it yourself and pass the path: `curl -L -o {filename} '{url}'`, then "
            f"`mmpt.load_backbone('/path/to/{filename}')` (or `backbone=/path/to/{filename}` in a recipe); "
            f"or place it at {dest} (the cache, set by MMPT_CACHE)",
        ) from e
