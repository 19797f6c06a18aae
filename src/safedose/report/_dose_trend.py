"""The dose-trend table and the changes from one dose to the next, with their captions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from safedose.evaluate import DifferenceRow, TrendRow
from safedose.report._metrics_file import MetricsFile
from safedose.report._rows import METHOD_NAMES, metric_order, metric_title
from safedose.run import CellKey


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _arm(row: TrendRow | DifferenceRow) -> CellKey:
    return CellKey(format=row.format, safety=row.safety)


def trend_rows(trend: Sequence[TrendRow]) -> list[dict[str, Any]]:
    out = []
    arms = {_arm(t) for t in trend}
    for t in sorted(trend, key=lambda t: (metric_order(t.metric), t.eval_set, _arm(t).sort_key())):
        data = (f"{t.n_cells} cells ({t.df if t.df is not None else 0} df), {t.n} answers, {t.n_prompts} prompts; "
                f"doses {', '.join(map(str, t.doses))}; seeds "
                f"{', '.join(map(str, t.seeds))}" + (f"; {_arm(t).arm_label}" if len(arms) > 1 else "")
                + (f"; {t.n_unlabelled} unlabelled left out" if t.n_unlabelled else ""))  # fmt: skip
        row: dict[str, Any] = {
            "metric": metric_title(t.metric),
            "eval_set": t.eval_set,
            "reason": t.reason,
            "data": data,
        }
        if t.slope is not None and t.lo is not None and t.hi is not None and t.p_value is not None:
            odds = [math.exp(v * math.log(2)) for v in (t.slope, t.lo, t.hi)]
            row |= {"slope": f"{t.slope:+.2f} [{t.lo:+.2f}, {t.hi:+.2f}]", "p": _p(t.p_value),
                    "odds": f"×{odds[0]:.2f} [{odds[1]:.2f}, {odds[2]:.2f}]"}  # fmt: skip
        out.append(row)
    return out


def difference_rows(differences: Sequence[DifferenceRow], base_label: str) -> list[dict[str, Any]]:
    out = []
    arms = {_arm(d) for d in differences}
    order = sorted(differences, key=lambda d: (metric_order(d.metric), d.eval_set, _arm(d).sort_key(),
                                               d.from_dose is not None, d.from_dose or 0, d.pooled,
                                               d.seeds))  # fmt: skip
    for d in order:
        step = f"{base_label} → dose {d.to_dose}" if d.from_dose is None else f"dose {d.from_dose} → {d.to_dose}"
        step += f" · {_arm(d).arm_label}" if len(arms) > 1 else ""
        text = "–" if d.value is None else f"{d.value:+.2f}"
        if d.value is not None and d.lo is not None and d.hi is not None:
            text += f" [{d.lo:+.2f}, {d.hi:+.2f}]"
        seeds = ("pooled over seeds " if d.pooled else "seed ") + ", ".join(map(str, d.seeds))
        n = f"{d.n}" + (f" ({d.n_unlabelled} left out: a side unlabelled)" if d.n_unlabelled else "")
        out.append({"metric": metric_title(d.metric), "eval_set": d.eval_set, "step": step, "seeds": seeds,
                    "text": text, "interval": METHOD_NAMES.get(d.interval, d.interval), "n": n})  # fmt: skip
    return out


def trend_caption(metrics: MetricsFile) -> str:
    return (f"Model: {metrics.trend_model}. One fit per metric and eval set over every tuned training cell (all doses "
            "and seeds; the untuned rows are not in it): the training run, not the answer, is the unit, so the "
            "interval and p-value count run-to-run variation. b < 0: the share falls as the dose grows. Separation "
            "(every answer complies at one dose and none at the next) still gives a finite slope, because each cell's "
            "empirical logit is finite. Undefined with fewer than three cells (no degree of freedom left to estimate "
            "run-to-run variation) or when every cell has the same value.")  # fmt: skip


def difference_caption(metrics: MetricsFile) -> str:
    text = (
        "Change from one dose to the next on the same prompts (later minus earlier; for harmful compliance, the "
        "strict default). Per seed: rates have a 95% Newcombe paired score interval (hybrid Wilson, method 10 of "
        "Newcombe 1998), the harm score a 95% percentile bootstrap over prompts of the per-prompt differences."
    )
    if len(metrics.seeds) > 1:
        text += (" Pooled rows: mean over seeds of the per-seed changes, 95% hierarchical bootstrap over seeds, then "
                 "prompts.")  # fmt: skip
    else:
        text += " One seed was run: seed variation is not in these intervals."
    return text
