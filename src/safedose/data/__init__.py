"""Datasets: the registry, loaders for the upstream formats, exact-N mixing, fetching, prompt forms, labelled sets."""

from safedose.data._catalog import CATALOG_VERSION, DATASETS, DataFile, DatasetSpec, Resolution, resolve
from safedose.data._fetch import fetch
from safedose.data._formats import Conversion, FormatResult, FormSource, Responder, convert_format, read_prompt_records
from safedose.data._forms import (
    FORMS,
    REWRITE_VERSION,
    Form,
    check_form,
    check_rewrite,
    checks_settings,
    clean_rewrite,
    content_share,
    detect_form,
    form_problem,
    rewrite_prompt,
)
from safedose.data._labelled import (
    XSTEST_LABELS,
    Labelled,
    gptfuzz,
    hh_pairs,
    last_exchange,
    xstest_gpt4_labels,
    xstest_labelled,
    xstest_rows,
)
from safedose.data._loaders import jsonl_rows, read_rows
from safedose.data._mix import FORMATS, MixResult, default_contamination_sets, mix, test_file, train_file, val_file
from safedose.data._overlap import ContaminationIndex, ngrams, normalize
from safedose.data._records import EvalPrompt, InstructionRecord, Kind
from safedose.data._sample import allocate, sample_prompts
from safedose.data._sources import load_any, load_eval_prompts, load_instructions, load_raw, missing_source

__all__ = [
    "CATALOG_VERSION",
    "DATASETS",
    "FORMATS",
    "FORMS",
    "REWRITE_VERSION",
    "XSTEST_LABELS",
    "ContaminationIndex",
    "Conversion",
    "DataFile",
    "DatasetSpec",
    "EvalPrompt",
    "Form",
    "FormSource",
    "FormatResult",
    "InstructionRecord",
    "Kind",
    "Labelled",
    "MixResult",
    "Resolution",
    "Responder",
    "allocate",
    "check_form",
    "check_rewrite",
    "checks_settings",
    "clean_rewrite",
    "content_share",
    "convert_format",
    "default_contamination_sets",
    "detect_form",
    "fetch",
    "form_problem",
    "gptfuzz",
    "hh_pairs",
    "jsonl_rows",
    "last_exchange",
    "load_any",
    "load_eval_prompts",
    "load_instructions",
    "load_raw",
    "missing_source",
    "mix",
    "ngrams",
    "normalize",
    "read_prompt_records",
    "read_rows",
    "resolve",
    "rewrite_prompt",
    "sample_prompts",
    "test_file",
    "train_file",
    "val_file",
    "xstest_gpt4_labels",
    "xstest_labelled",
    "xstest_rows",
]
