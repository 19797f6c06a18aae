"""Models: the embedded default, the precisions they run in, and resolution of names, paths and HF ids to local
directories."""

from safedose.models._dtypes import PRECISIONS, Precision, torch_dtype
from safedose.models._embedded import EMBEDDED, EmbeddedModel, gguf_path, is_prepared, prepare, prepared_dir
from safedose.models._resolve import local_model_dir, model_hash, resolve_model, snapshot_commit

__all__ = [
    "EMBEDDED",
    "PRECISIONS",
    "EmbeddedModel",
    "Precision",
    "gguf_path",
    "is_prepared",
    "local_model_dir",
    "model_hash",
    "prepare",
    "prepared_dir",
    "resolve_model",
    "snapshot_commit",
    "torch_dtype",
]
