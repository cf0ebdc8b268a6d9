"""mmpt: parameter-efficient fine-tuning for MultiMAE."""

__version__ = "0.1.0.dev0"
