"""The study in one command: doses x seeds x formats, resumable at every step, ending with the report."""

from safedose.run import Choice, SearchLog
from safedose.sweep._config import AttackEntry, EvalSets, Judges, Search, SweepConfig, load_sweep_config
from safedose.sweep._executor import local_resources, resource_problems
from safedose.sweep._fingerprints import MIX_RECIPE_VERSION, Cell
from safedose.sweep._memory import detect_device_memory, parse_size, print_memory, sweep_memory
from safedose.sweep._plan import Step, check_names, plan
from safedose.sweep._recipe import SweepResult, sweep
from safedose.sweep._search import SearchResult, next_dose, search, search_doses, start_config

__all__ = [
    "MIX_RECIPE_VERSION",
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
    "detect_device_memory",
    "load_sweep_config",
    "local_resources",
    "next_dose",
    "parse_size",
    "plan",
    "print_memory",
    "resource_problems",
    "search",
    "search_doses",
    "start_config",
    "sweep",
    "sweep_memory",
]
