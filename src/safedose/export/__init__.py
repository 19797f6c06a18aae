"""Export: an adapter merged into its base as HF weights (no PEFT needed) or as a GGUF file for llama.cpp."""

from safedose.export._api import RECORD, ExportResult, export, export_gguf, export_merged
from safedose.export._merge import ExportDtype

__all__ = ["RECORD", "ExportDtype", "ExportResult", "export", "export_gguf", "export_merged"]
