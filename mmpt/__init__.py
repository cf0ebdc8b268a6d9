"""mmpt: parameter-efficient fine-tuning for MultiMAE.

`import mmpt` pulls in torch and timm only; the CLI (typer, rich) and plotting are imported lazily.
"""

from mmpt.backbone import MultiViT, load_backbone
from mmpt.errors import (
    ArtifactError,
    BaseMismatchError,
    CheckpointError,
    ConfigError,
    DatasetLayoutError,
    MmptError,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ArtifactError",
    "BaseMismatchError",
    "CheckpointError",
    "ConfigError",
    "DatasetLayoutError",
    "MmptError",
    "MultiViT",
    "__version__",
    "load_backbone",
]
