"""The study in one command: doses x seeds x formats, resumable at every step, ending with the report."""

from safedose.sweep._config import EvalSets, Judges, SweepConfig, load_sweep_config
from safedose.sweep._plan import Cell, Step, check_names, plan
from safedose.sweep._recipe import SweepResult, sweep

__all__ = [
    "Cell",
    "EvalSets",
    "Judges",
    "Step",
    "SweepConfig",
    "SweepResult",
    "check_names",
    "load_sweep_config",
    "plan",
    "sweep",
]
