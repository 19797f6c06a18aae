"""The study in one command: doses x seeds x formats, resumable at every step, ending with the report."""

from safedose.sweep._config import EvalSets, Judges, SweepConfig, load_sweep_config
from safedose.sweep._recipe import Cell, SweepResult, sweep

__all__ = ["Cell", "EvalSets", "Judges", "SweepConfig", "SweepResult", "load_sweep_config", "sweep"]
