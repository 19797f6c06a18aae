"""LoRA fine-tuning: the paper's recipe, resumable, one process or many through accelerate."""

from safedose.train._config import LoraSettings, TrainConfig, load_config, parse_config
from safedose.train._data import Example, length_grouped_batches, tokenize
from safedose.train._fingerprint import RECIPE_VERSION, differing_keys, fingerprint, fingerprint_inputs
from safedose.train._recipe import TrainResult, train

__all__ = [
    "RECIPE_VERSION",
    "Example",
    "LoraSettings",
    "TrainConfig",
    "TrainResult",
    "differing_keys",
    "fingerprint",
    "fingerprint_inputs",
    "length_grouped_batches",
    "load_config",
    "parse_config",
    "tokenize",
    "train",
]
