"""LoRA training throughput: safedose against TRL's SFTTrainer, same model, LoRA, data and max length.

    .venv/bin/python -m pip install trl==1.16.0   # once; it reuses the pinned torch
    .venv/bin/python benchmarks/train_throughput.py --rows 1000
    .venv/bin/python benchmarks/train_throughput.py --rows 300 --only safedose --dtype fp32   # as without AVX-512 BF16

Prints real (non-pad) tokens/s, wall time of the training loop and the final validation loss of each run. The
validation loss of every run is computed by the same function (response tokens only, fp32) on the same rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _cpu import cpu_kind

from safedose.data import load_instructions, mix, train_file, val_file
from safedose.models import resolve_model
from safedose.templates import end_of_response, render_prompt
from safedose.train import CausalLMLoss, TrainConfig, tokenize, train
from safedose.train._data import collate

LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def val_loss(peft_model: Any, tokenizer: Any, val_path: Path, max_length: int) -> float:
    rows = load_instructions(str(val_path))
    examples = tokenize(rows, tokenizer, template="alpaca", max_length=max_length, train_on_inputs=False)
    module = CausalLMLoss(peft_model.float()).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), 16):
            chunk = examples[i : i + 16]
            total += float(module(**collate(chunk, tokenizer.pad_token_id)))
            n += sum(e.n_loss_tokens for e in chunk)
    return total / n


def run_safedose(model: str, train_path: Path, val_path: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = TrainConfig(
        model=model, train_file=str(train_path), output_dir=str(out), template="alpaca", lora=LORA, lr=args.lr,  # type: ignore[arg-type]
        epochs=args.epochs, micro_batch_size=args.batch_size, max_length=args.max_length, eval_every=10**6,
        save_every=10**6, dtype=args.dtype,
    )  # fmt: skip
    started = time.perf_counter()
    train(config)
    wall = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    base = AutoModelForCausalLM.from_pretrained(resolve_model(model), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, out)
    # train() includes loading the model and tokenising: a conservative time for safedose
    return {"wall_s": wall, "train_s": wall, "val_loss": val_loss(peft_model, tokenizer, val_path, args.max_length)}


def run_trl(
    model: str, train_path: Path, val_path: Path, args: argparse.Namespace, out: Path, *, tuned: bool
) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model_dir = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = load_instructions(str(train_path))
    end = end_of_response("alpaca", tokenizer)
    dataset = Dataset.from_list(
        [{"prompt": render_prompt("alpaca", r.instruction, r.input, tokenizer), "completion": r.output + end}
         for r in rows]
    )  # fmt: skip
    tuned_args: dict[str, Any] = {}
    if tuned:  # the best CPU settings found: bf16 autocast, length-grouped batches, no DataLoader workers' overhead
        tuned_args = {"bf16": True, "train_sampling_strategy": "group_by_length", "dataloader_num_workers": 0}
    config = SFTConfig(
        output_dir=str(out), max_length=args.max_length, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, lr_scheduler_type="linear", warmup_steps=0,
        logging_steps=10, save_strategy="no", report_to=[], use_cpu=True, seed=0, **tuned_args,
    )  # fmt: skip
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(model=base, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "train_s": wall, "val_loss": val_loss(trainer.model, tokenizer, val_path, args.max_length)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=1000, help="training rows: base rows + 100 safety rows")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--only", nargs="*", default=["safedose", "trl-default", "trl-tuned"])
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="safedose's training dtype")
    args = parser.parse_args()
    torch.manual_seed(0)

    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="safedose-bench-"))
    mix(base="dolly-15k", base_size=args.rows - 100, safety="saferpaca-safety", doses=[100], out=work / "data",
        seed=0, val_size=200)  # fmt: skip
    train_path, val_path = train_file(work / "data", 100), val_file(work / "data", 100)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    examples = tokenize(load_instructions(str(train_path)), tokenizer, template="alpaca",
                        max_length=args.max_length, train_on_inputs=False)  # fmt: skip
    real_tokens = sum(len(e.input_ids) for e in examples) * args.epochs
    print(f"CPU: {cpu_kind()}")
    print(f"{len(examples)} rows, {real_tokens} real tokens, max length {args.max_length}, {args.epochs} epoch(s)")

    results: dict[str, dict[str, Any]] = {}
    for name in args.only:
        out = work / name
        if name == "safedose":
            results[name] = run_safedose(args.model, train_path, val_path, args, out)
        else:
            results[name] = run_trl(args.model, train_path, val_path, args, out, tuned=name == "trl-tuned")
        r = results[name]
        print(
            f"{name}: {real_tokens / r['train_s']:.0f} real tok/s, {r['train_s']:.0f} s, val loss {r['val_loss']:.4f}"
        )

    print("\n| run | real tokens/s | training wall time (s) | final val loss |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {real_tokens / r['train_s']:.0f} | {r['train_s']:.0f} | {r['val_loss']:.4f} |")


if __name__ == "__main__":
    main()
