"""The frozen MultiViT backbone: architecture, checkpoint loading, registry of named weights."""

from mmpt.backbone.checkpoint import LoadReport, save_safetensors
from mmpt.backbone.hub import BACKBONES, BackboneSpec
from mmpt.backbone.load import load_backbone
from mmpt.backbone.multivit import DEFAULT_DOMAINS, DomainSpec, MultiViT, MultiViTConfig, TokenHook

__all__ = [
    "BACKBONES",
    "DEFAULT_DOMAINS",
    "BackboneSpec",
    "DomainSpec",
    "LoadReport",
    "MultiViT",
    "MultiViTConfig",
    "TokenHook",
    "load_backbone",
    "save_safetensors",
]
