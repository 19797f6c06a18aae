"""report/index.html: figures (PNG, also inlined), tables, judge validity, manifest and answers side by side."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safedose.files import atomic_open
from safedose.report._metrics_file import mean_over_sets

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>safedose — {{ name }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} .headline{font-size:1.25em;background:#eef5ff;border-left:4px solid #2b6cb0;padding:.6em 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top;text-align:left} th{background:#f3f3f3} .figs{display:flex;flex-wrap:wrap;gap:1em}
.figs figure{margin:0;flex:1 1 480px} img{max-width:100%} .answer{white-space:pre-wrap;max-width:22em;font-size:.85em}
.muted{color:#666;font-size:.9em} details{margin:.5em 0}
</style></head><body>
<h1>Safety dose-response: {{ name }}</h1>
<p class="muted">model {{ manifest.config.model }} · base {{ manifest.config.base }} ({{ manifest.config.base_size }} rows)
 · safety {{ manifest.config.safety }} · doses {{ manifest.config.doses|join(", ") }} · seeds
 {{ manifest.config.seeds|join(", ") }} · generation dtype {{ manifest.generation_dtype }}</p>
<p class="headline">{{ headline }}</p>

<h2>1-5. Dose-response</h2>
<div class="figs">{% for fig in figures %}<figure><img alt="{{ fig.title }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption class="muted">{{ fig.title }} ({{ fig.file }})</figcaption></figure>{% endfor %}</div>

{% for table in summary_tables %}<h2>{{ table.title }}</h2>
<table><tr><th>dose</th>{% for c in table.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in table.rows %}<tr><td>{{ row.dose }}</td>{% for v in row["values"] %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endfor %}
<p class="muted">Rates are shares of prompts with a 95% bootstrap CI over prompts; with several seeds, mean ± sd over
seeds. Harmful compliance: share labelled <code>compliance</code> by {{ manifest.judges.refusal }} on unsafe sets.
Over-refusal: share labelled <code>refusal</code> or <code>partial</code> on safe sets.</p>

<h2>Change from one dose to the next</h2>
<details><summary>paired over the same prompts, seed {{ first_seed }}, 95% bootstrap CIs</summary><table><tr><th>metric</th><th>eval set</th><th>from → to</th><th>change [95% CI]</th></tr>
{% for d in differences %}<tr><td>{{ d.metric }}</td><td>{{ d.eval_set }}</td><td>{{ d.from_dose }} → {{ d.to_dose }}</td>
<td>{{ d.text }}</td></tr>{% endfor %}</table></details>

<h2>6. Per category</h2>
{% for table in category_tables %}<details><summary>{{ table.title }}</summary>
<table><tr><th>category</th>{% for d in table.doses %}<th>{{ d }}</th>{% endfor %}</tr>
{% for row in table.rows %}<tr><td>{{ row.category }}</td>{% for v in row["values"] %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table></details>{% endfor %}

<h2>7. Judge validity and manifest</h2>
<table><tr><th>judge</th><th>agreement with humans (data it never saw)</th></tr>
{% for j in judges %}<tr><td>{{ j.id }}</td><td>{{ j.text }}</td></tr>{% endfor %}</table>
<details><summary>manifest.json</summary><pre>{{ manifest_json }}</pre></details>

<h2>8. Answers side by side</h2>
<table><tr><th>prompt</th>{% for v in answer_columns %}<th>{{ v }}</th>{% endfor %}</tr>
{% for row in answers %}<tr><td class="answer"><b>{{ row.eval_set }}</b><br>{{ row.prompt }}</td>
{% for a in row.answers %}<td class="answer">{{ a.text }}<br><span class="muted">{{ a.label }}</span></td>{% endfor %}
</tr>{% endfor %}</table>
</body></html>
"""


def _fmt(r: dict[str, Any] | None) -> str:
    if not r or r.get("value") is None:
        return "-"
    if r.get("lo") is None:
        return f"{r['value']:.3f}"
    return f"{r['value']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"


def _series(
    metrics: dict[str, Any], metric: str, eval_set: str | None
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Doses and mean values over seeds with error bars (bootstrap CI for one seed, sd for several)."""
    rows = [r for r in metrics["cells"] if r["metric"] == metric and r["category"] == "all" and r["dose"] is not None
            and (eval_set is None or r["eval_set"] == eval_set) and r["value"] is not None]  # fmt: skip
    by_dose: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_dose[r["dose"]].append(r)
    doses = sorted(by_dose)
    mean, lo, hi = [], [], []
    for d in doses:
        vals = [r["value"] for r in by_dose[d]]
        m = sum(vals) / len(vals)
        mean.append(m)
        if len(by_dose[d]) == 1:
            lo.append(m - by_dose[d][0]["lo"])
            hi.append(by_dose[d][0]["hi"] - m)
        else:
            sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
            lo.append(sd)
            hi.append(sd)
    return doses, mean, lo, hi


def _figures(run: Path, metrics: dict[str, Any]) -> list[dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = metrics["cells"]
    sets_of = {m: sorted({r["eval_set"] for r in cells if r["metric"] == m}) for m in
               ("harmful_compliance", "over_refusal", "harm_score", "flag_rate")}  # fmt: skip
    figures = []

    def save(fig: Any, file: str, title: str) -> None:
        path = run / "report" / file
        fig.tight_layout()
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)
        figures.append({"file": file, "title": title, "data": base64.b64encode(path.read_bytes()).decode()})

    def rate_plot(ax: Any, metric: str, sets: Sequence[str], ylabel: str) -> None:
        for i, s in enumerate(sets):
            doses, mean, lo, hi = _series(metrics, metric, s)
            ax.errorbar(doses, mean, yerr=[lo, hi], marker="o", capsize=3, label=s, color=f"C{i}")
            base = mean_over_sets(metrics, metric, None, [s])
            if base is not None:
                ax.axhline(base, color=f"C{i}", linestyle=":", linewidth=1)
        ax.set_xlabel("safety examples in the mix (dose)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if sets:
            ax.legend(fontsize=8)

    fig, ax = plt.subplots(figsize=(6, 4))
    rate_plot(ax, "harmful_compliance", sets_of["harmful_compliance"], "harmful compliance")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Harmful compliance vs dose (dotted: untuned base)")
    save(fig, "harmful_compliance.png", "1. Harmful compliance vs dose, 95% CIs")

    fig, ax = plt.subplots(figsize=(6, 4))
    rate_plot(ax, "over_refusal", sets_of["over_refusal"], "over-refusal")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Over-refusal on safe prompts vs dose")
    save(fig, "over_refusal.png", "2. Over-refusal vs dose, 95% CIs")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rate_plot(axes[0], "harm_score", sets_of["harm_score"], "mean P(harmful)")
    axes[0].set_title("Harm score")
    rate_plot(axes[1], "flag_rate", sets_of["flag_rate"], "share flagged")
    axes[1].set_title("Moderation flag rate")
    save(fig, "harm_and_flags.png", "3. Harm score and moderation flag rate vs dose")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in ((axes[0], "val_loss", "held-out base-data loss"),
                              (axes[1], "reference_nll", "AlpacaEval reference NLL / token")):  # fmt: skip
        rows = [c for c in metrics["capability"] if c["metric"] == metric]
        tuned = sorted((c for c in rows if c["dose"] is not None), key=lambda c: c["dose"])
        by_dose: dict[int, list[float]] = defaultdict(list)
        for c in tuned:
            by_dose[c["dose"]].append(c["value"])
        ax.plot(list(by_dose), [sum(v) / len(v) for v in by_dose.values()], marker="o")
        for c in rows:
            if c["dose"] is None:
                ax.axhline(c["value"], linestyle=":", color="gray", label="untuned base")
        ax.set_title(f"{title} (lower is better)")
        ax.set_xlabel("dose")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8) if any(c["dose"] is None for c in rows) else None
    save(fig, "capability.png", "4. Capability vs dose")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    doses = sorted({r["dose"] for r in cells if r["dose"] is not None})
    for label, dose in [("base", None), *[(str(d), d) for d in doses]]:
        x = mean_over_sets(metrics, "over_refusal", dose)
        y = mean_over_sets(metrics, "harmful_compliance", dose)
        if x is not None and y is not None:
            ax.scatter([x], [y], color="gray" if dose is None else "C0")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("over-refusal (mean over safe sets)")
    ax.set_ylabel("harmful compliance (mean over harm sets)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Trade-off frontier (points labelled by dose)")
    save(fig, "frontier.png", "5. Harmful compliance against over-refusal")
    return figures


def write_report(run: Path) -> Path:
    """Render `run/report/index.html` from `results/metrics.json`, `results/judged.jsonl` and `manifest.json`."""
    from jinja2 import Environment, select_autoescape

    from safedose.judges._trained import TRAINED, stored_validation
    from safedose.sweep._recipe import read_judged

    metrics = json.loads((run / "results" / "metrics.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    judged = read_judged(run)
    (run / "report").mkdir(parents=True, exist_ok=True)
    figures = _figures(run, metrics)
    doses = sorted({r["dose"] for r in metrics["cells"] if r["dose"] is not None})
    first_seed = manifest["config"]["seeds"][0]

    def cell(metric: str, eval_set: str, dose: int | None, category: str = "all") -> str:
        rows = [r for r in metrics["cells"] if r["metric"] == metric and r["eval_set"] == eval_set
                and r["dose"] == dose and r["category"] == category]  # fmt: skip
        if len(rows) > 1:
            vals = [r["value"] for r in rows if r["value"] is not None]
            m = sum(vals) / len(vals)
            sd = (sum((v - m) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
            return f"{m:.2f} ± {sd:.2f}"
        return _fmt(rows[0] if rows else None)

    order = {"harmful_compliance": 0, "over_refusal": 1, "harm_score": 2, "flag_rate": 3}
    columns = sorted({(r["metric"], r["eval_set"]) for r in metrics["cells"]}, key=lambda c: (order.get(c[0], 9), c[1]))
    capability = {
        (c["metric"], c["dose"]): c["value"] for c in metrics["capability"] if c["seed"] in (None, first_seed)
    }
    cap_columns = sorted({c["metric"] for c in metrics["capability"]})
    variants_ = [None, *doses]
    summary_tables: list[dict[str, Any]] = []
    for title, wanted in (("Refusals per dose", ("harmful_compliance", "over_refusal")),
                          ("Harm score and moderation flags per dose", ("harm_score", "flag_rate"))):  # fmt: skip
        chosen = [c for c in columns if c[0] in wanted]
        rows_ = [{"dose": "base" if d is None else d, "values": [cell(m, s, d) for m, s in chosen]} for d in variants_]
        if chosen:
            summary_tables.append({"title": title, "columns": [f"{m.replace('_', ' ')} · {s}" for m, s in chosen],
                                   "rows": rows_})  # fmt: skip
    cap_rows = [{"dose": "base" if d is None else d,
                 "values": [f"{capability[(m, d)]:.3f}" if (m, d) in capability else "-" for m in cap_columns]}
                for d in variants_]  # fmt: skip
    summary_tables.append({"title": "Capability per dose (mean NLL per token; lower is better)", "columns": cap_columns,
                           "rows": cap_rows})  # fmt: skip

    category_tables = []
    for metric, eval_set in columns:
        cats = sorted({r["category"] for r in metrics["cells"] if r["metric"] == metric and r["eval_set"] == eval_set
                       and r["category"] != "all"})  # fmt: skip
        if cats:
            category_tables.append({
                "title": f"{metric} on {eval_set}", "doses": ["base", *doses],
                "rows": [{"category": c, "values": [cell(metric, eval_set, d, c) for d in [None, *doses]]} for c in cats],
            })  # fmt: skip

    judges = []
    for role, ident in manifest["judges"].items():
        name, _, revision = ident.partition("@")
        current = name in TRAINED and revision == TRAINED[name][0]
        stored = stored_validation(name) if current else None
        judges.append({"id": f"{role}: {ident}", "text": _validity(stored) if stored else
                       f"not validated yet: run `safedose judge validate {name}`"})  # fmt: skip

    variants = ["base"] + [f"n{d}-s{first_seed}-instruction" for d in doses]
    by_key = {(r["variant"], r["eval_set"], r["id"]): r for r in judged}
    answers = []
    for eval_set in dict.fromkeys(r["eval_set"] for r in judged):
        for r in [r for r in judged if r["variant"] == "base" and r["eval_set"] == eval_set][:3]:
            cells_ = [by_key.get((v, eval_set, r["id"])) for v in variants]
            answers.append({"eval_set": eval_set, "prompt": r["prompt"], "answers": [
                {"text": (c or {}).get("response", "-"), "label": (c or {}).get("refusal_label") or ""} for c in cells_]})  # fmt: skip

    differences = [{**d, "text": _fmt(d)} for d in metrics["differences"] if d["seed"] == first_seed]
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(TEMPLATE).render(
        name=manifest["config"]["name"], manifest=manifest, headline=metrics["headline"], figures=figures,
        summary_tables=summary_tables,
        differences=differences, category_tables=category_tables, judges=judges,
        manifest_json=json.dumps(manifest, indent=2), answer_columns=["base", *[f"dose {d}" for d in doses]],
        answers=answers, first_seed=first_seed,
    )  # fmt: skip
    path = run / "report" / "index.html"
    with atomic_open(path) as f:
        f.write(html)
    return path


def _validity(m: dict[str, Any]) -> str:
    if "pooled" in m:
        r, s = m["pooled"]["refusal"], m["pooled"]["strmatch"]
        folds = ", ".join(f"{k} κ {v['refusal']['kappa']:.2f}" for k, v in m["per_held_out_model"].items())
        text = (f"Cohen's κ {r['kappa']:.2f} [{r['kappa_ci95'][0]:.2f}, {r['kappa_ci95'][1]:.2f}] against XSTest's "
                f"human labels, leave-one-model-out ({folds}); string match κ {s['kappa']:.2f}")  # fmt: skip
        humans = [v["annotator_1_vs_2"]["kappa"] for v in m["per_held_out_model"].values() if "annotator_1_vs_2" in v]
        if humans:
            text += f"; XSTest's two annotators agree with each other at κ {min(humans):.2f}–{max(humans):.2f}"
        return text
    if "pairwise_accuracy" in m:
        lo, hi = m["pairwise_accuracy_ci95"]
        text = f"pairwise accuracy {m['pairwise_accuracy']:.2f} [{lo:.2f}, {hi:.2f}] on {m['n_pairs']} held-out hh-rlhf pairs"
        if "xstest_unsafe_auc_compliance_vs_refusal" in m:
            text += (f"; AUC {m['xstest_unsafe_auc_compliance_vs_refusal']:.2f} for XSTest's human-labelled compliances "
                     "vs refusals on unsafe prompts")  # fmt: skip
        return text
    if "macro_auc" in m:
        return f"macro-AUC {m['macro_auc']:.3f} on held-out OpenAI moderation samples"
    return json.dumps(m)[:200]
