"""MultiMAE pretraining: multi-modal masking, spatial decoders, the masked autoencoder, its loop.

The loop (`mmpt.pretrain.loop.pretrain`, CLI `mmpt pretrain`) is not imported here: it pulls in Accelerate.
"""

from mmpt.pretrain.config import PretrainConfig, load_pretrain_config
from mmpt.pretrain.decoders import SpatialOutputAdapter
from mmpt.pretrain.masking import TokenMask, masks_from_visible, sample_token_masks
from mmpt.pretrain.model import DecoderConfig, MultiMAE

__all__ = [
    "DecoderConfig",
    "MultiMAE",
    "PretrainConfig",
    "SpatialOutputAdapter",
    "TokenMask",
    "load_pretrain_config",
    "masks_from_visible",
    "sample_token_masks",
]
