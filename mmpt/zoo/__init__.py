"""The adapters zoo: an indexed folder of artifacts (`index.py`); pulling them and pushing to the Hub (`hub.py`)."""

from mmpt.zoo.hub import hf_download, model_card, pull, push
from mmpt.zoo.index import (
    DEFAULT_LICENCE,
    INDEX_FILE,
    Zoo,
    ZooEntry,
    add_artifact,
    check_name,
    check_url,
    default_zoo_folder,
    entry_for_artifact,
    format_metric,
    load_zoo,
    parse_hf_url,
    verify_zoo,
)

__all__ = [
    "DEFAULT_LICENCE",
    "INDEX_FILE",
    "Zoo",
    "ZooEntry",
    "add_artifact",
    "check_name",
    "check_url",
    "default_zoo_folder",
    "entry_for_artifact",
    "format_metric",
    "hf_download",
    "load_zoo",
    "model_card",
    "parse_hf_url",
    "pull",
    "push",
    "verify_zoo",
]
