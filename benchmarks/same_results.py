"""Behaviour unchanged? The same small sweep run with an earlier revision and with this checkout, its result files
compared byte for byte.

    .venv/bin/python benchmarks/same_results.py --rev 9298a95

The sweep is the tests' tiny one (a random 2-layer Llama with SmolLM2's tokenizer, 16 Dolly rows, doses 0 / 4 / 8,
seeds 0 and 1, 6 prompts of two harm sets and one over-refusal set, the offline refusal and harm judges, a target),
so both runs take a few minutes on CPU. The earlier revision runs from a git worktree with this checkout's
environment; both share the judge cache. Prints, per result file, whether it is identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from safedose.models import local_model_dir

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("results/metrics.json", "results/metrics.csv", "results/recommendation.json")


def tiny_model(out: Path) -> Path:
    tok = AutoTokenizer.from_pretrained(local_model_dir("smollm2-135m-instruct"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=True, initializer_range=0.3)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def sweep_config(model: Path, run: Path) -> Path:
    config = {
        "name": "same", "output_dir": str(run), "model": str(model), "base": "dolly-15k", "base_size": 16,
        "doses": [0, 4, 8], "seeds": [0, 1], "val_size": 8, "test_size": 8, "max_tokens": 128,
        "train": {"template": "alpaca", "epochs": 2, "micro_batch_size": 4, "max_length": 64, "eval_every": 2,
                  "save_every": 2, "dtype": "fp32"},
        "eval_sets": {"harm": ["I-MaliciousInstructions", "advbench"], "over_refusal": ["xstest-v2-safe"],
                      "limit": 6, "capability_limit": 4},
        "judges": {"refusal": "refusal", "harm": "harm", "moderation": None, "guard": "strmatch"},
        "decoding": {"max_new_tokens": 16, "dtype": "fp32", "batch_size": 4},
        "target": {"harmful_compliance": {"max": 0.5}, "over_refusal": {"max": 0.5}},
    }  # fmt: skip
    path = run.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def run_sweep(config: Path, src: Path, env: dict[str, str]) -> None:
    env = {**env, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-m", "safedose", "sweep", str(config)], env=env, check=True,
                   stdout=subprocess.DEVNULL, cwd=src.parent)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the earlier git revision")
    args = parser.parse_args()
    env = {**os.environ, "SAFEDOSE_DATA": os.environ.get("SAFEDOSE_DATA", str(ROOT.parent / "shared" / "data"))}
    with tempfile.TemporaryDirectory(prefix="same-results-") as tmp:
        work = Path(tmp)
        old = work / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(old), args.rev], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            model = tiny_model(work / "tiny")
            runs = {"old": work / "run-old", "new": work / "run-new"}
            run_sweep(sweep_config(model, runs["old"]), old / "src", env)
            run_sweep(sweep_config(model, runs["new"]), ROOT / "src", env)
            for name in COMPARED:
                same = (runs["old"] / name).read_bytes() == (runs["new"] / name).read_bytes()
                print(f"{'identical' if same else 'DIFFERENT'}: {name}")
            judged = [[json.loads(line) for line in (runs[k] / "results" / "judged.jsonl").open()] for k in runs]
            print(f"results/judged.jsonl: same rows {judged[0] == judged[1]}, "
                  f"same key order {[list(r) for r in judged[0]] == [list(r) for r in judged[1]]}")  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)


if __name__ == "__main__":
    main()
