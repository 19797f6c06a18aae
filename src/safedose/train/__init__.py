"""LoRA fine-tuning: the paper's recipe, resumable, one process or many through accelerate."""

from safedose.train._config import LoraSettings, TrainConfig, load_config, parse_config
from safedose.train._data import Example, length_grouped_batches, tokenize
from safedose.train._fingerprint import RECIPE_VERSION, differing_keys, fingerprint, fingerprint_inputs
from safedose.train._loss import CausalLMLoss, mean_token_nll, summed_token_nll
from safedose.train._outputs import CHECKPOINTS, MANIFEST, TrainResult
from safedose.train._recipe import train
from safedose.train._setup import check_requirements, frozen_linears_to, mixed_precision

__all__ = [
    "CHECKPOINTS",
    "MANIFEST",
    "RECIPE_VERSION",
    "CausalLMLoss",
    "Example",
    "LoraSettings",
    "TrainConfig",
    "TrainResult",
    "check_requirements",
    "differing_keys",
    "fingerprint",
    "fingerprint_inputs",
    "frozen_linears_to",
    "length_grouped_batches",
    "load_config",
    "mean_token_nll",
    "mixed_precision",
    "parse_config",
    "summed_token_nll",
    "tokenize",
    "train",
]
