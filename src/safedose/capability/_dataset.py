"""The documents of safedose's shipped lm-eval tasks, read from the data root when a task loads.

Every task YAML in `tasks/` names `custom_dataset: !function safedose.capability._dataset.load` and
`dataset_kwargs: {safedose_task: NAME}`; the files are resolved under the data root at run time (`$SAFEDOSE_DATA`, else
`../shared/data` beside the checkout), so the same YAMLs work in-process and with the `lm_eval` command line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from safedose.errors import SafedoseError
from safedose.paths import data_root

FOUNDRY = "benchmarks/llm-foundry-icl"
MMLU = "benchmarks/mmlu"
TRUTHFULQA_MC = "benchmarks/truthfulqa/data/mc_task.json"

# safedose task name -> the data-root files it reads (llm-foundry JSONL files hold one split: test).
FILES: dict[str, str] = {
    "arc-easy": f"{FOUNDRY}/world_knowledge/arc_easy.jsonl",
    "arc-challenge": f"{FOUNDRY}/world_knowledge/arc_challenge.jsonl",
    "piqa": f"{FOUNDRY}/commonsense_reasoning/piqa.jsonl",
    "openbookqa": f"{FOUNDRY}/commonsense_reasoning/openbook_qa.jsonl",
    "copa": f"{FOUNDRY}/commonsense_reasoning/copa.jsonl",
    "boolq": f"{FOUNDRY}/reading_comprehension/boolq.jsonl",
    "winogrande": f"{FOUNDRY}/language_understanding/winogrande.jsonl",
    "mmlu": f"{MMLU}/test",
    "truthfulqa-mc1": TRUTHFULQA_MC,
    "truthfulqa-mc2": TRUTHFULQA_MC,
}


def data_path(task: str, root: Path | None = None) -> Path:
    return (root or data_root()) / FILES[task]


def read_docs(task: str, split: str = "test", root: Path | None = None) -> list[dict[str, Any]]:
    """The task's documents as plain rows, in file order (the order lm-eval's doc ids refer to)."""
    path = data_path(task, root)
    if not path.exists():
        raise SafedoseError(f"task {task}: {path} is missing from the data root (see docs/capability.md)")
    if task == "mmlu":
        return _mmlu(path.parent / split, split)
    if task.startswith("truthfulqa-mc"):
        return _truthfulqa(path)
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _mmlu(folder: Path, split: str) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob(f"*_{split}.csv")):
        subject = path.name.removesuffix(f"_{split}.csv")
        with path.open(encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                choices = [r[f"choice{i}"] for i in range(4)]
                rows.append({"question": r["question"], "choices": choices, "answer": int(r["answer"]),
                             "subject": subject})  # fmt: skip
    if not rows:
        raise SafedoseError(f"task mmlu: no *_{split}.csv files in {folder}")
    return rows


def _truthfulqa(path: Path) -> list[dict[str, Any]]:
    items = json.loads(path.read_text(encoding="utf-8"))

    def targets(d: dict[str, int]) -> dict[str, list[Any]]:
        return {"choices": list(d), "labels": [int(v) for v in d.values()]}

    return [{"question": it["question"], "mc1_targets": targets(it["mc1_targets"]),
             "mc2_targets": targets(it["mc2_targets"])} for it in items]  # fmt: skip


def load(**kwargs: Any) -> Any:
    """lm-eval's `custom_dataset` hook: a DatasetDict with `test` (and `dev` for MMLU's few-shot examples)."""
    from datasets import Dataset, DatasetDict

    task = str(kwargs["safedose_task"])
    splits = {"test": Dataset.from_list(read_docs(task))}
    if task == "mmlu":
        splits["dev"] = Dataset.from_list(read_docs(task, "dev"))
    return DatasetDict(splits)


def process_results_mc2(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
    """TruthfulQA MC2 (as lm-eval computes it): normalised probability mass of the true answers."""
    import numpy as np

    ll = np.array([r[0] for r in results])
    probs = np.exp(ll - ll.max())
    labels = np.array(doc["mc2_targets"]["labels"])
    return {"acc": float(probs[labels == 1].sum() / probs.sum())}
