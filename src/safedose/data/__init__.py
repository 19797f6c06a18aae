"""Datasets: the registry, loaders for the upstream formats, exact-N mixing and fetching."""

from safedose.data._build_safety import build_safety
from safedose.data._catalog import CATALOG_VERSION, DATASETS, DataFile, DatasetSpec, Resolution, resolve
from safedose.data._fetch import fetch
from safedose.data._formats import REWRITE_VERSION, FormatResult, FormSource, convert_file, convert_format, detect_form
from safedose.data._mix import FORMATS, MixResult, default_contamination_sets, mix, test_file, train_file, val_file
from safedose.data._overlap import ContaminationIndex, normalize
from safedose.data._records import EvalPrompt, InstructionRecord, Kind
from safedose.data._sample import sample_prompts
from safedose.data._sources import load_any, load_eval_prompts, load_instructions, load_raw

__all__ = [
    "CATALOG_VERSION",
    "DATASETS",
    "FORMATS",
    "REWRITE_VERSION",
    "ContaminationIndex",
    "DataFile",
    "DatasetSpec",
    "EvalPrompt",
    "FormSource",
    "FormatResult",
    "InstructionRecord",
    "Kind",
    "MixResult",
    "Resolution",
    "build_safety",
    "convert_file",
    "convert_format",
    "default_contamination_sets",
    "detect_form",
    "fetch",
    "load_any",
    "load_eval_prompts",
    "load_instructions",
    "load_raw",
    "mix",
    "normalize",
    "resolve",
    "sample_prompts",
    "test_file",
    "train_file",
    "val_file",
]
