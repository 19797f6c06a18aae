"""Judges of model responses."""

from safedose.judges._strmatch import strmatch_label

__all__ = ["strmatch_label"]
