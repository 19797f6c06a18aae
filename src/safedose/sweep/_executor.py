"""Where a sweep's work runs: in this process (`local`) or as Ray tasks on a node's devices or a cluster (`ray`).

The recipe hands each stage to an executor as calls of module-level functions, one per group of cells. The local
executor makes one group of everything and calls it here, with the run's store (cache.sqlite). The Ray executor makes
groups of `adapters_per_task` cells and runs each call as a Ray task with the stage's resources; a task that reads or
writes the store gets a private copy in its own temporary directory and returns the rows it wrote, which the driver
merges into the run's store. No SQLite file is shared between processes or machines; everything else a task writes
(mixes, adapters, checkpoints) goes to the run directory under fingerprinted names, so a task that Ray retries after
its worker died resumes from its last checkpoint, and a rerun driver skips what is finished.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.markup import escape

from safedose.cache import Cache
from safedose.errors import SafedoseError
from safedose.paths import VERBOSITY

Stage = Literal["train", "generate", "judge", "capability"]
T = TypeVar("T")
# Environment variables a Ray job passes to its workers (where data, caches and endpoints are).
FORWARDED_PREFIXES = ("SAFEDOSE_", "HF_", "TRANSFORMERS_", "OPENAI_", "WANDB_")


class TaskResources(BaseModel):
    """What one Ray task of a stage asks for; fractions of a GPU let several small cells share one."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1, ge=0)
    num_gpus: float = Field(0, ge=0)


class RaySettings(BaseModel):
    """`executor: ray`: the cluster, each stage's task resources, and how many cells a task takes."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="auto, ray://HOST:10001 or HOST:6379; null: a Ray on this machine")
    train: TaskResources = Field(default_factory=TaskResources, description="one task per cell")
    generate: TaskResources = Field(default_factory=TaskResources, description="one task per group of adapters")
    judge: TaskResources = Field(default_factory=TaskResources, description="one task per group of answers")
    capability: TaskResources = Field(default_factory=TaskResources, description="one task per group of adapters")
    adapters_per_task: int = Field(4, gt=0, description="cells per generation, judging and capability task")
    max_retries: int = Field(3, ge=0, description="retries of a task whose worker died")


class Executor(Protocol):
    """Runs `fn(*args)` for every call of a stage and returns the results in order."""

    def groups(self, items: Sequence[T]) -> list[list[T]]:
        """The items (cells or answers) split into the groups that each make one call."""
        ...

    def map(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, stage: Stage, names: Sequence[str],
        store: Cache | None = None,
    ) -> list[Any]:  # fmt: skip
        """`fn(*args)` per call (`fn(*args, store=...)` when `store` is given), each named for progress lines."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Everything in this process, one stage after another; one group holds every cell."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()

    def groups(self, items: Sequence[T]) -> list[list[T]]:
        return [list(items)] if items else []

    def map(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, stage: Stage, names: Sequence[str],
        store: Cache | None = None,
    ) -> list[Any]:  # fmt: skip
        results = []
        for args, name in zip(calls, names, strict=True):
            if len(calls) > 1:
                self.console.print(f"  {stage} {escape(name)}")
            results.append(fn(*args, store=store) if store is not None else fn(*args))
        return results

    def close(self) -> None:
        pass


class RayExecutor:
    """Each call a Ray task with its stage's resources; connects to `address` or starts Ray on this machine."""

    def __init__(self, settings: RaySettings, *, console: Console | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise SafedoseError("executor ray needs Ray: pip install 'safedose[ray]'") from None
        self.ray, self.settings, self.console = ray, settings, console or Console()
        self.started = not ray.is_initialized()
        if self.started:
            _check_reachable(settings.address)
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
            try:
                ray.init(address=settings.address, runtime_env={"env_vars": env}, logging_level=log_level())
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = settings.address or "this machine"
                raise SafedoseError(f"ray: cannot connect to {where}: {str(e).splitlines()[0]}") from None
        problems = resource_problems(settings, [n["Resources"] for n in ray.nodes() if n.get("Alive")])
        if problems:
            self.close()
            raise SafedoseError(f"ray: {problems[0]}")
        self.remote = ray.remote(_run_task)

    def groups(self, items: Sequence[T]) -> list[list[T]]:
        size = self.settings.adapters_per_task
        return [list(items[i : i + size]) for i in range(0, len(items), size)]

    def map(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, stage: Stage, names: Sequence[str],
        store: Cache | None = None,
    ) -> list[Any]:  # fmt: skip
        ray = self.ray
        resources: TaskResources = getattr(self.settings, stage)
        image = ray.put(store.snapshot()) if store is not None else None
        refs = [
            self.remote.options(
                name=f"{stage}:{name}", num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                max_retries=self.settings.max_retries, retry_exceptions=False,
            ).remote(fn, args, image)
            for args, name in zip(calls, names, strict=True)
        ]  # fmt: skip
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending, started = list(refs), time.perf_counter()
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = index[ready[0]]
            try:
                result, written = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(e.cause, BaseException) else e
                raise SafedoseError(f"{stage} {names[i]}: {str(cause).splitlines()[0]}") from None
            except ray.exceptions.RayError as e:
                raise SafedoseError(f"{stage} {names[i]}: the Ray task failed ({type(e).__name__}); "
                                    f"rerun the sweep to go on from what is finished") from None  # fmt: skip
            if store is not None and written:
                store.merge(written)  # as soon as it arrives: a driver killed later keeps it
            results[i] = result
            done, elapsed = len(refs) - len(pending), (time.perf_counter() - started) / 60
            self.console.print(f"  {stage} {escape(names[i])} done on ray ({done}/{len(refs)}, {elapsed:.1f} min)")
        return results

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()


STAGES: tuple[Stage, ...] = ("train", "generate", "judge", "capability")


def resource_problems(
    settings: RaySettings, nodes: Sequence[dict[str, float]], where: str = "the cluster"
) -> list[str]:
    """Each stage whose task no node can hold (Ray would wait for it forever), in words; `nodes` are the nodes'
    resources as Ray reports them (`CPU`, `GPU`)."""
    cpus, gpus = (max((n.get(k, 0) for n in nodes), default=0) for k in ("CPU", "GPU"))
    has = f"{cpus:g} CPUs and {gpus:g} GPUs" if len(nodes) == 1 else f"at most {cpus:g} CPUs and {gpus:g} GPUs a node"
    problems = []
    for stage in STAGES:
        ask: TaskResources = getattr(settings, stage)
        if not any(n.get("CPU", 0) >= ask.num_cpus and n.get("GPU", 0) >= ask.num_gpus for n in nodes):
            problems.append(f"a {stage} task asks {ask.num_cpus:g} CPUs and {ask.num_gpus:g} GPUs (ray.{stage}); "
                            f"{where} has {has}, so Ray would wait for it forever: lower ray.{stage}.num_cpus / "
                            "num_gpus or use a cluster that has them")  # fmt: skip
    return problems


def local_resources() -> dict[str, float]:
    """What a Ray started on this machine would offer: its CPUs and the GPUs torch sees."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def log_level() -> int:
    """Ray's own log level: warnings only, unless the command runs with `-v` (`SAFEDOSE_VERBOSITY`)."""
    return logging.INFO if int(os.environ.get(VERBOSITY, "1") or 1) >= 1 else logging.WARNING


def make_executor(kind: str, settings: RaySettings, *, console: Console | None = None) -> Executor:
    if kind == "local":
        return LocalExecutor(console)
    if kind == "ray":
        return RayExecutor(settings, console=console)
    raise SafedoseError(f"unknown executor {kind!r}; choose local or ray")


def _check_reachable(address: str | None) -> None:
    """A HOST:PORT address answers on TCP (Ray itself would keep retrying for minutes), else a one-line error."""
    if not address or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as e:
        raise SafedoseError(f"ray: cannot connect to {address}: {e}") from None


def _run_task(fn: Callable[..., Any], args: tuple[Any, ...], image: bytes | None) -> tuple[Any, Any]:
    """In a Ray worker: the call, on a private copy of the store when it has one; returns (result, rows written)."""
    if image is None:
        return fn(*args), None
    with tempfile.TemporaryDirectory(prefix="safedose-task-") as tmp:
        store = Cache.restore(image, Path(tmp) / "cache.sqlite")
        try:
            result = fn(*args, store=store)
        finally:
            store.close()
        return result, store.written
