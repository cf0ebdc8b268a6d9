"""NYUv2 in the official MultiMAE layout: dataset, joint transforms, preparation, checks, synthetic scenes.

`mmpt.data.layout` (paths and PNG encodings), `mmpt.data.prepare` (raw .mat files → layout),
`mmpt.data.check` (validation report), `mmpt.data.synthetic` (synthetic scenes: rendering and writing) with
`mmpt.data.synthetic_scenes` (their seeded sampling and textures).
"""

from mmpt.data.nyuv2 import NYUv2
from mmpt.data.transforms import eval_transform, to_model_inputs, train_transform

__all__ = ["NYUv2", "eval_transform", "to_model_inputs", "train_transform"]
