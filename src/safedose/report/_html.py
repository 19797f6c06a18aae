"""report/index.html: figures (PNG, also inlined), tables with their intervals and counts, judge validity, manifest
and answers side by side."""

from __future__ import annotations

import json
from pathlib import Path

from safedose.capability import report_section as capability_section
from safedose.evaluate import INTERVALS
from safedose.files import atomic_open
from safedose.recommend import Target
from safedose.report._agreement import agreement_section
from safedose.report._answers import side_by_side_columns, side_by_side_rows
from safedose.report._cross_format import cross_format_section
from safedose.report._dose_trend import difference_caption, difference_rows, trend_caption, trend_rows
from safedose.report._figures import dose_response_figures
from safedose.report._judges import human_audit, judge_validity
from safedose.report._metrics_file import load_metrics
from safedose.report._recommendation import (
    answer_box,
    config_target,
    curves_figure,
    fit_checks,
    notes,
    search_rows,
    write_recommendation,
)
from safedose.report._robustness import section as robustness_section
from safedose.report._rows import variant_entries
from safedose.report._sources import safety_names, sources_section
from safedose.report._tables import category_tables, summary_tables
from safedose.run import BASE, read_judged, read_manifest, report_dir

TEMPLATE = """{% macro render_table(table) %}<table><tr><th>{{ table.corner }}</th>{% for c in table.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in table.rows %}<tr class="{{ 'untuned' if row.untuned else '' }}"><td>{{ row.label }}</td>
{% for v in row.cells %}<td>{{ v.text }}{% if v.sub %}<br><span class="muted">{{ v.sub }}</span>{% endif %}
{% if v.warn %}<br><span class="warn">{{ v.warn }}</span>{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if table.caption %}<p class="caption">{{ table.caption }}</p>{% endif %}{% endmacro %}
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>safedose — {{ name }}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} .recommendation{font-size:1.3em;background:#effaf0;border-left:4px solid #2f855a;padding:.6em 1em}
.headline{font-size:1.25em;background:#eef5ff;border-left:4px solid #2b6cb0;padding:.6em 1em}
table{border-collapse:collapse;margin:.5em 0 .5em;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top;text-align:left} th{background:#f3f3f3} .figs{display:flex;flex-wrap:wrap;gap:1em}
.figs figure{margin:0;flex:1 1 480px} img{max-width:100%} .answer{white-space:pre-wrap;max-width:22em;font-size:.85em}
.muted{color:#666;font-size:.85em} .caption{color:#444;font-size:.9em;margin:0 0 1.5em} details{margin:.5em 0}
.warn{color:#a4361c} .untuned{background:#fafafa}
</style></head><body>
<h1>Safety dose-response: {{ name }}</h1>
<p class="muted">model {{ config.model }} · base {{ config.base }} ({{ config.base_size }} rows)
 · safety {{ safety_sources }} · doses {{ config.doses|join(", ") }} · seeds {{ config.seeds|join(", ") }}
 · generation dtype {{ manifest.generation_dtype }}</p>
<div class="recommendation"><p><b>{{ answer.lead }}</b></p>
{% if answer.rows %}<table><tr><th>dose</th>{% for c in answer.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for r in answer.rows %}<tr><td>{{ r.dose }}</td>{% for v in r.cells %}<td>{{ v.text }}<br><span class="muted">{{ v.sub }}</span></td>{% endfor %}</tr>{% endfor %}</table>
<p class="caption">{{ answer.caption }}</p>{% endif %}
{% if answer.rest %}<p>{{ answer.rest }}</p>{% endif %}</div>
<p class="headline">{{ headline }}</p>

<h2>How to read these numbers</h2>
<ul>{% for d in definitions %}<li><b>{{ d.name }}</b>: {{ d.text }}</li>{% endfor %}</ul>
<p class="{{ 'warn' if one_seed else '' }}">{{ seed_note }}</p>
<p>Untuned rows: <b>{{ base_label }}</b> is the untuned model prompted with the tuning template, so
<i>{{ base_label }} → dose {{ lowest_dose }}</i> isolates the effect of tuning itself (no safety data);
<b>{{ chat_label }}</b> is the untuned model with its own chat template, as it is normally used.</p>
<details><summary>interval methods used</summary><ul>{% for i in intervals %}<li><code>{{ i.name }}</code>: {{ i.text }}</li>{% endfor %}</ul></details>

<h2>0. The answer: fitted curves and the recommended dose</h2>
<figure><img alt="fitted dose-response curves" src="data:image/png;base64,{{ curves.data }}">
<figcaption class="caption">{{ curves.caption }} ({{ curves.file }})</figcaption></figure>
<ul>{% for n in curve_notes %}<li class="caption">{{ n }}</li>{% endfor %}</ul>
<details><summary>fit check: observed against fitted at every tested dose</summary>
{% for t in fit_checks %}<p><b>{{ t.title }}</b> <span class="muted">{{ t.why }}; band: {{ t.band }}</span></p>
<table><tr><th>dose</th><th>{{ t.unit }}</th><th>observed</th><th>fitted [95% band]</th><th>Pearson residual</th></tr>
{% for r in t.rows %}<tr><td>{{ r.dose }}</td><td>{{ r.n }}</td><td>{{ r.observed }}</td><td>{{ r.fitted }}</td><td>{{ r.residual }}</td></tr>{% endfor %}</table>
{% endfor %}</details>
{% if search %}<h3>Adaptive search</h3>
<p class="caption">Started from doses {{ search.start|join(", ") }}; {{ search.cells }} cells spent; stopped: {{ search.stop }}</p>
<table><tr><th>added dose</th><th>why</th><th>interval before</th></tr>
{% for r in search.rows %}<tr><td>{{ r.dose }}</td><td>{{ r.reason }}</td><td>{{ r.interval }}</td></tr>{% endfor %}</table>{% endif %}

<h2>1-5. Dose-response</h2>
<div class="figs">{% for fig in figures %}<figure><img alt="{{ fig.title }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption class="caption">{{ fig.caption }} ({{ fig.file }})</figcaption></figure>{% endfor %}</div>

{% for table in summary_tables %}<h2>{{ table.title }}</h2>
{{ render_table(table) }}
{% endfor %}
{% if sources %}<h2>Safety sources: which data buys more safety per row</h2>
<p>{% for n in sources.needs %}With <b>{{ n.source }}</b>: {{ n.text }}<br>{% endfor %}</p>
<figure><img alt="harmful compliance and over-refusal by safety source" src="data:image/png;base64,{{ sources.figure.data }}">
<figcaption class="caption">Each source's measured shares over the doses, with 95% intervals ({{ sources.figure.file }}).</figcaption></figure>
{% for table in sources.tables %}<p><b>{{ table.title }}</b></p>
{{ render_table(table) }}{% endfor %}
<p class="caption">{{ sources.caption }}</p>
{% if sources.differences %}<table><tr><th>metric</th><th>eval set</th><th>dose</th><th>change</th><th>seeds</th><th>change [95% CI]</th><th>interval</th><th>prompts paired</th></tr>
{% for d in sources.differences %}<tr><td>{{ d.metric }}</td><td>{{ d.eval_set }}</td><td>{{ d.dose }}</td><td>{{ d.step }}</td><td>{{ d.seeds }}</td>
<td>{{ d.text }}</td><td>{{ d.interval }}</td><td>{{ d.n }}</td></tr>{% endfor %}</table>
<p class="caption">{{ sources.difference_caption }}</p>{% endif %}{% endif %}
{% if cross_format %}<h2>Cross-format: harmful compliance by training format and prompt form</h2>
{{ render_table(cross_format.table) }}
{% if cross_format.differences %}<table><tr><th>dose</th><th>eval set (form)</th><th>change</th><th>seeds</th><th>change [95% CI]</th><th>interval</th><th>prompts paired</th></tr>
{% for d in cross_format.differences %}<tr><td>{{ d.dose }}</td><td>{{ d.eval_set }}</td><td>{{ d.step }}</td><td>{{ d.seeds }}</td>
<td>{{ d.text }}</td><td class="muted">{{ d.interval }}</td><td class="muted">{{ d.n }}</td></tr>{% endfor %}</table>
<p class="caption">{{ cross_format.difference_caption }}</p>{% endif %}{% endif %}
{% if robustness %}<h2>Robustness under attack</h2>
{% for s in robustness.at_dose %}<p><b>{{ s }}</b></p>{% endfor %}
<div class="figs">{% for fig in robustness.figures %}<figure><img alt="{{ fig.file }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption class="caption">{{ fig.caption }} ({{ fig.file }})</figcaption></figure>{% endfor %}</div>
{% for table in robustness.tables %}<p><b>{{ table.title }}</b></p>
<table><tr><th>variant</th><th>attack success [95% CI]</th><th>plain (same prompts)</th><th>change plain → attacked [95% CI]</th><th>harm judge rate [95% CI]</th><th>its change</th><th>prompts / answers</th></tr>
{% for r in table.rows %}<tr><td>{{ r.label }}</td>{% for v in r.cells %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
<ul>{% for role, text in table.judges.items() %}<li class="caption">{{ role }} judge: {{ text }}</li>{% endfor %}</ul>{% endfor %}
<p class="caption">Rates: 95% Wilson interval over the prompts of one cell; changes: 95% Newcombe paired interval over the prompts with a label on both sides (same variant, same prompts, attacked minus plain). Curves over cells (the "at the dose" sentences):</p>
<ul>{% for c in robustness.curves %}<li class="caption">{{ c.name }} on {{ c.eval_set }}: {{ c.why }}</li>{% endfor %}</ul>
<details><summary>definitions</summary><ul>{% for d in robustness.definitions %}<li><b>{{ d.name }}</b>: {{ d.text }}</li>{% endfor %}</ul></details>{% endif %}
{% if capability %}<h2>Capability: benchmarks and win-rate</h2>
{% for n in capability.notes %}<p class="warn">{{ n }}</p>{% endfor %}
<div class="figs">{% for fig in capability.figures %}<figure><img alt="{{ fig.file }}" src="data:image/png;base64,{{ fig.data }}">
<figcaption class="caption">{{ fig.caption }} ({{ fig.file }})</figcaption></figure>{% endfor %}</div>
{% if capability.columns %}<table><tr><th>variant</th>{% for c in capability.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in capability.rows %}<tr><td>{{ row.label }}</td>{% for v in row.cells %}<td>{{ v.text }}<br><span class="muted">{{ v.sub }}</span></td>{% endfor %}</tr>
{% endfor %}</table>
<p class="caption">Accuracy [95% Wilson interval over the items scored; a bootstrap interval for TruthfulQA MC2] with lm-evaluation-harness's own standard error; a seeded item sample per task where `limit` is set. Win-rate: ties count half, unparseable verdicts are counted and left out. See docs/capability.md.</p>{% endif %}
{% if capability.changes %}<details><summary>change in accuracy from one dose to the next (paired over items)</summary>
<table><tr><th>task</th><th>step</th><th>change [95% CI]</th><th>items</th><th>interval</th></tr>
{% for c in capability.changes %}<tr><td>{{ c.task }}</td><td>{{ c.step }}</td><td>{{ c.text }}</td><td>{{ c.n }}</td><td class="muted">{{ c.interval }}</td></tr>{% endfor %}</table>
<p class="caption">Per task: 95% Newcombe paired interval (0/1 items) or paired bootstrap (MC2). `mean`: change of the mean over tasks, bootstrap resampling items within each task.</p></details>{% endif %}{% endif %}

<h2>Dose trend</h2>
<table><tr><th>metric</th><th>eval set</th><th>slope b [95% CI]</th><th>p</th><th>odds per doubling of 1 + dose</th><th>data</th></tr>
{% for t in trends %}<tr><td>{{ t.metric }}</td><td>{{ t.eval_set }}</td>{% if not t.slope %}<td colspan="3" class="warn">undefined: {{ t.reason }}</td>
{% else %}<td>{{ t.slope }}</td><td>{{ t.p }}</td><td>{{ t.odds }}</td>{% endif %}<td class="muted">{{ t.data }}{% if t.slope and t.reason %}<br><span class="warn">{{ t.reason }}</span>{% endif %}</td></tr>{% endfor %}</table>
<p class="caption">{{ trend_caption }}</p>

<h2>Change from one dose to the next</h2>
<table><tr><th>metric</th><th>eval set</th><th>step</th><th>seeds</th><th>change [95% CI]</th><th>interval</th><th>prompts paired</th></tr>
{% for d in differences %}<tr><td>{{ d.metric }}</td><td>{{ d.eval_set }}</td><td>{{ d.step }}</td><td>{{ d.seeds }}</td>
<td>{{ d.text }}</td><td class="muted">{{ d.interval }}</td><td class="muted">{{ d.n }}</td></tr>{% endfor %}</table>
<p class="caption">{{ difference_caption }}</p>

<h2>6. Per category</h2>
<p class="caption">Each cell: share (or mean score) [95% interval] over the prompts of that category; the number of
prompts behind each value is under it. Same intervals as the tables above.</p>
{% for table in category_tables %}<details><summary>{{ table.title }}</summary>
{{ render_table(table) }}</details>{% endfor %}

<h2>7. Judge validity and manifest</h2>
<table><tr><th>judge</th><th>agreement with humans (data it never saw)</th></tr>
{% for j in judges %}<tr><td>{{ j.id }}</td><td>{{ j.text }}</td></tr>{% endfor %}</table>
<h3>Judges against each other on this study's answers</h3>
{% if agreement.tables %}<p class="caption">{{ agreement.caption }}</p>
{% for table in agreement.tables %}<p><b>{{ table.title }}</b></p>
{{ render_table(table) }}{% endfor %}{% else %}<p class="muted">{{ agreement.empty }}</p>{% endif %}
{% if audit %}<h3>Human audit of this run's answers</h3>
<p>{{ audit.summary }}</p>
<table><tr><th>agreement between annotators</th><th>Krippendorff's α [95% CI]</th><th>Cohen's κ per pair [95% CI]</th></tr>
{% for a in audit.agreement %}<tr><td>{{ a.what }}</td><td>{{ a.alpha }}</td><td>{{ a.pairs }}</td></tr>{% endfor %}</table>
<p class="caption">Intervals resample the audited items (1,000 bootstrap draws).</p>
<table><tr><th>judge</th><th>compared with</th><th>agreement with the annotators' majority label</th></tr>
{% for j in audit.judges %}<tr><td>{{ j.judge }}</td><td>{{ j.target }}</td><td>{{ j.text }}</td></tr>{% endfor %}</table>
<p class="caption">Each judge's verdicts in results/judged.jsonl on the audited answers; 95% CIs resample prompts.</p>
{% for table in audit.tables %}<h3>{{ table.title }}</h3>
{{ render_table(table) }}{% endfor %}
<p class="caption">Judge: {{ audit.corrected_judge }}. {{ audit.method }}</p>{% endif %}
<details><summary>manifest.json</summary><pre>{{ manifest_json }}</pre></details>

<h2>8. Answers side by side</h2>
<p class="caption">The first prompts of each eval set{{ answers_seed }}; under each answer, the refusal judge's label.</p>
<table><tr><th>prompt</th>{% for v in answer_columns %}<th>{{ v }}</th>{% endfor %}</tr>
{% for row in answers %}<tr><td class="answer"><b>{{ row.eval_set }}</b><br>{{ row.prompt }}</td>
{% for a in row.answers %}<td class="answer">{{ a.text }}<br><span class="muted">{{ a.label }}</span></td>{% endfor %}
</tr>{% endfor %}</table>
</body></html>
"""


def write_report(run: Path, *, target: Target | None = None) -> Path:
    """Render `run/report/index.html` from `results/metrics.json`, `results/judged.jsonl` and `manifest.json`, and
    write `results/recommendation.json` for `target` (default: the config's, from the manifest)."""
    from jinja2 import Environment, select_autoescape

    metrics = load_metrics(run)
    manifest = read_manifest(run)
    judged = read_judged(run)
    report_dir(run).mkdir(parents=True, exist_ok=True)
    config = manifest.config
    templates = {a.template for a in judged if a.variant == BASE}
    base_template = (
        next(iter(templates)) if len(templates) == 1 else str(config.get("train", {}).get("template", "tuning"))
    )
    base_label = f"untuned · {base_template} template"
    entries = variant_entries(metrics, base_template)
    figures = dose_response_figures(run, metrics, entries, base_template)
    tables = summary_tables(metrics, entries)
    if any(c.pooled for c in entries):
        tables += summary_tables(metrics, variant_entries(metrics, base_template, per_seed=True), suffix=" (each seed)")
    doses = sorted({r.dose for r in metrics.cells if r.dose is not None})
    used = {r.interval for r in [*metrics.cells, *metrics.pooled]} | {d.interval for d in metrics.differences}
    answer_columns, answers_seed = side_by_side_columns(judged, base_label)
    rec = write_recommendation(run, judged, metrics, target=target or config_target(manifest))

    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(TEMPLATE).render(
        name=config.get("name", run.name), manifest=manifest, config=config, headline=metrics.headline,
        answer=answer_box(rec), curves=curves_figure(run, rec), curve_notes=notes(rec), fit_checks=fit_checks(rec),
        search=search_rows(manifest),
        definitions=[{"name": k, "text": v} for k, v in metrics.definitions.items()],
        intervals=[{"name": k, "text": INTERVALS.get(k, v)} for k, v in metrics.intervals.items() if k in used],
        seed_note=metrics.seed_note, one_seed=len(metrics.seeds) <= 1, base_label=base_label,
        chat_label="untuned · own chat template", lowest_dose=doses[0] if doses else "–", figures=figures,
        summary_tables=tables,
        trends=trend_rows(metrics.trend), trend_caption=trend_caption(metrics),
        differences=difference_rows(metrics.differences, base_label), difference_caption=difference_caption(metrics),
        category_tables=category_tables(metrics, entries), judges=judge_validity(manifest, judged),
        audit=human_audit(run), agreement=agreement_section(metrics, base_label),
        cross_format=cross_format_section(metrics.cross_format, base_label),
        sources=sources_section(run, metrics, rec), safety_sources=safety_names(config.get("safety")),
        capability=capability_section(run, metrics.benchmarks),
        robustness=robustness_section(run, judged, rec, manifest, base_label),
        manifest_json=json.dumps(manifest.model_dump(mode="json"), indent=2),
        answer_columns=[label for _, label in answer_columns],
        answers=side_by_side_rows(judged, answer_columns), answers_seed=answers_seed,
    )  # fmt: skip
    path = report_dir(run) / "index.html"
    with atomic_open(path) as f:
        f.write(html)
    return path
