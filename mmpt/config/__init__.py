"""Run configuration: recipes (commented YAML) + `key=value` overrides -> a validated `RunConfig`."""

from mmpt.config.load import config_hash, config_to_dict, dump_config, load_config, read_recipe, save_resolved
from mmpt.config.recipes import RECIPES_DIR, list_recipes, recipe_names, resolve_recipe
from mmpt.config.schema import BackboneConfig, DataConfig, RunConfig, TaskConfig, TrainConfig

__all__ = [
    "RECIPES_DIR",
    "BackboneConfig",
    "DataConfig",
    "RunConfig",
    "TaskConfig",
    "TrainConfig",
    "config_hash",
    "config_to_dict",
    "dump_config",
    "list_recipes",
    "load_config",
    "read_recipe",
    "recipe_names",
    "resolve_recipe",
    "save_resolved",
]
