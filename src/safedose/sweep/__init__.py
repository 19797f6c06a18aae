"""The study in one command: doses x seeds x formats, resumable at every step, ending with the report."""

from safedose.sweep._config import AttackEntry, EvalSets, Judges, Search, SweepConfig, load_sweep_config
from safedose.sweep._plan import Cell, Step, check_names, plan
from safedose.sweep._recipe import SweepResult, sweep
from safedose.sweep._search import Choice, SearchLog, SearchResult, next_dose, search, search_doses, start_config

__all__ = [
    "AttackEntry",
    "Cell",
    "Choice",
    "EvalSets",
    "Judges",
    "Search",
    "SearchLog",
    "SearchResult",
    "Step",
    "SweepConfig",
    "SweepResult",
    "check_names",
    "load_sweep_config",
    "next_dose",
    "plan",
    "search",
    "search_doses",
    "start_config",
    "sweep",
]
