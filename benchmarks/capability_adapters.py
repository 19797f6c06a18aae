"""Scoring K adapters on lm-eval tasks: one process (base loaded once, adapters switched) against K `lm_eval` runs.

    .venv/bin/python benchmarks/capability_adapters.py                      # 3 adapters, arc-easy + copa, 40 items
    .venv/bin/python benchmarks/capability_adapters.py --adapters 5 --limit 100 --tasks arc-easy,piqa

The adapters are random LoRA adapters (r=8 on q/k/v/o) on the model, written to a temporary folder; both ways score
the same seeded items of the shipped tasks (lm-eval's `--samples`), with the same batch size and dtype, and every
score is checked to agree. Wall times include model loading (and, for the command line, starting Python and
building lm-eval's task index, as a user's script would pay them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_adapters(model_dir: Path, k: int, out: Path) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(k):
        torch.manual_seed(i)
        base = AutoModelForCausalLM.from_pretrained(model_dir)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
        path = out / f"a{i}"
        get_peft_model(base, config).save_pretrained(path)
        paths.append(path)
    return paths


def main() -> None:
    from safedose.capability import BenchmarkSettings, evaluate_benchmarks, tasks_dir
    from safedose.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--tasks", default="arc-easy,copa")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    model_dir = resolve_model(args.model)
    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(model_dir, args.adapters, Path(tmp))
        settings = BenchmarkSettings(limit=args.limit, batch_size=args.batch_size)
        started = time.perf_counter()
        rows = evaluate_benchmarks(args.model, [f"a{i}={p}" for i, p in enumerate(adapters)], tasks,
                                   settings=settings, include_base=False, dtype="fp32")  # fmt: skip
        in_process = time.perf_counter() - started
        mine = {(r.variant, r.task, r.metric): r.value for r in rows}
        samples = {f"safedose_{t.replace('-', '_')}": sorted(map(int, r.items)) for r in rows for t in [r.task]}
        started = time.perf_counter()
        for i, path in enumerate(adapters):
            out = Path(tmp) / f"out{i}"
            cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                   f"pretrained={model_dir},peft={path},dtype=float32", "--include_path", str(tasks_dir()),
                   "--tasks", ",".join(samples), "--samples", json.dumps(samples), "--batch_size",
                   str(args.batch_size), "--device", "cpu", "--output_path", str(out)]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)
            theirs = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
            for task in tasks:
                value = theirs[f"safedose_{task.replace('-', '_')}"]["acc,none"]
                assert abs(value - (mine[(f"a{i}", task, "acc")] or 0.0)) < 1e-9, (i, task)
        separate = time.perf_counter() - started
    items = args.limit * len(tasks)
    print(f"{args.model}, {args.adapters} adapters, tasks {args.tasks}, {args.limit} items each ({items} per adapter)")
    print("| run | wall (s) | per adapter (s) | speed-up |\n|---|---|---|---|")
    print(f"| one process, base loaded once, adapters switched | {in_process:.1f} | "
          f"{in_process / args.adapters:.1f} | {separate / in_process:.2f}x |")  # fmt: skip
    print(f"| {args.adapters} separate `lm_eval` runs | {separate:.1f} | {separate / args.adapters:.1f} | 1.00x |")


if __name__ == "__main__":
    main()
