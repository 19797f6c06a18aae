import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from safedose.errors import SafedoseError
from safedose.recommend import (
    Curve,
    Knot,
    Recommendation,
    Target,
    curve_at,
    expected_after,
    fit_binary,
    parse_target,
    recommend,
    recommend_from_curves,
)
from safedose.sweep import Choice, load_sweep_config, next_dose, search_doses
from tests.recommend.simulate import HARM, marginal_dose, simulate

D = "\u2013"  # the dash of ranges


def knot(dose: int, fitted: float, lo: float, hi: float) -> Knot:
    return Knot(dose=dose, n=100, observed=fitted, observed_lo=None, observed_hi=None, fitted=fitted, lo=lo, hi=hi,
                residual=0.0)  # fmt: skip


def line(metric: str, eval_set: str, a: float, b: float, *, se: float = 0.1, df: int = 10,
         doses: tuple[int, ...] = (0, 99)) -> Curve:  # fmt: skip
    """A logistic curve logit p = a + b log(1 + dose) whose band has standard error `se` everywhere (intercept only)."""
    fitted = [1 / (1 + math.exp(-(a + b * math.log1p(d)))) for d in doses]
    return Curve(metric=metric, eval_set=eval_set, format="instruction", model="logistic", why="fixture",
                 band="fixture", direction="falls" if b < 0 else "rises", coef=[a, b], cov=[[se**2, 0.0], [0.0, 0.0]],
                 df=df, knots=[knot(d, f, f, f) for d, f in zip(doses, fitted, strict=True)], n=200, n_prompts=100,
                 n_unlabelled=0, seeds=[0, 1, 2], n_cells=12)  # fmt: skip


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def dose_where(a: float, b: float, share: float) -> float:
    """The dose where logit p = a + b log(1 + dose) equals `share`."""
    return math.expm1((logit(share) - a) / b)


CAPABILITY = Curve(metric="test_loss", eval_set="capability", format="instruction", model="linear", why="fixture",
                   band="fixture", direction="rises", coef=[2.5, 0.01], cov=[[0.0, 0.0], [0.0, 0.0001]], df=10,
                   knots=[knot(0, 2.5, 2.5, 2.5), knot(99, 2.546, 2.546, 2.546)], n=12, n_prompts=50, n_unlabelled=0,
                   seeds=[0, 1, 2], n_cells=12)  # fmt: skip


def target(**limits: float) -> Target:
    return Target.model_validate({metric: {"max": value} for metric, value in limits.items()})


def test_joint_bands_by_hand() -> None:
    # harmful compliance: logit p = 2 - 1 * log(1 + dose), band se 0.1 on 10 df; over-refusal: logit p = -5 +
    # 0.5 log(1 + dose). Two limits, so each band is two-sided 97.5%: t(0.9875, 10) = 2.634. Harmful compliance
    # <= 0.25 where the fit is: dose 22 (ceil of 21.2); the optimistic edge (fit - 0.263): dose 17 (ceil of 16.03);
    # the pessimistic edge (fit + 0.263): dose 28 (ceil of 27.9). Over-refusal at dose 99: logit -2.70 (6%).
    harmful, refusing = line("harmful_compliance", "advbench", 2.0, -1.0), line("over_refusal", "xs", -5.0, 0.5)
    rec = recommend_from_curves([harmful, refusing, CAPABILITY], target=target(harmful_compliance=0.25,
                                                                              over_refusal=0.3))  # fmt: skip
    q = 2.634
    assert rec.level == pytest.approx(0.975)
    assert rec.dose == math.ceil(dose_where(2.0, -1.0, 0.25)) == 22
    assert rec.lo == math.ceil(dose_where(2.0 - q * 0.1, -1.0, 0.25)) == 17
    assert rec.hi == math.ceil(dose_where(2.0 + q * 0.1, -1.0, 0.25)) == 28
    # only doses 0 and 99 were tested: 99 is the smallest tested dose whose pessimistic edges meet both limits
    assert (rec.met, rec.tested_dose, rec.predicted_dose, rec.binding) == (True, 99, None, [])
    assert rec.text.startswith(
        f"Dose 99, a tested dose, meets every limit of the target with 95% confidence; the smallest dose expected to "
        f"bring harmful compliance (strict) under 25% on advbench is 22 (95% interval 17{D}28 (each limit's band at "
        "97.5%, jointly 95%))."
    )
    assert "At dose 22 over-refusal is expected at" in rec.text and "(predicted: not tested)" in rec.text
    assert "held-out test loss changes by +0.031" in rec.text


def test_a_rising_limit_counts_with_its_pessimistic_edge() -> None:
    # over-refusal's fit stays under 30% at every tested dose (27% at dose 99) but its band crosses the limit there,
    # so no tested dose meets the target with 95% confidence (the old rule judged the fitted point only)
    harmful = line("harmful_compliance", "advbench", 2.0, -1.0)
    refusing = line("over_refusal", "xs", logit(0.27) - 0.5 * math.log(100), 0.5, se=0.2)
    rec = recommend_from_curves([harmful, refusing], target=target(harmful_compliance=0.25, over_refusal=0.3))
    _, _, hi = curve_at(refusing, [99], level=rec.level)
    assert hi[0] > 0.3 and rec.dose == 22 and rec.met is False and rec.tested_dose is None
    assert rec.predicted_dose is not None and 28 <= rec.predicted_dose < 99  # an untested dose, called a prediction
    assert "which was not tested, is predicted to" in rec.text


def test_one_limit_gets_a_95_band() -> None:
    rec = recommend_from_curves([line("harmful_compliance", "advbench", 2.0, -1.0)], target=target(
        harmful_compliance=0.25))  # fmt: skip
    assert rec.level == pytest.approx(0.95) and rec.lo == math.ceil(dose_where(2.0 - 2.228 * 0.1, -1.0, 0.25))


def test_extrapolation_by_hand() -> None:
    # logit p = -0.5 log(1 + dose): 9.1% at dose 99, 5% at log(1 + dose) = 2 log(19), dose 360 (beyond 0-99)
    logistic = line("harmful_compliance", "advbench", 0.0, -0.5, se=0.2)
    rec = recommend_from_curves([logistic], target=target(harmful_compliance=0.05))
    assert (rec.met, rec.dose, rec.lo, rec.hi, rec.beyond_range) == (False, None, None, None, True)
    assert rec.binding == ["harmful_compliance on advbench"]
    (constraint,) = rec.constraints
    assert constraint.crossing == pytest.approx(360.0, abs=0.01)
    assert rec.text.startswith(f"No tested dose (0{D}99) meets the target: at the largest tested dose, 99, harmful "
                               "compliance (strict) is still expected at 9% [")  # fmt: skip
    assert "would reach 5% on advbench at about dose 360, beyond the tested range" in rec.text


def test_a_monotone_fit_brackets_the_dose_by_tested_doses() -> None:
    # 40% compliance at dose 0, none at 100, 300 and 1000 (3 seeds each): monotonicity alone says the dose lies in
    # (0, 100]; nothing was tested between, so no dose inside is claimed (the old rule said "56 (47-88)")
    rows = [(d, s, f"p{i}", float(d == 0 and i < 11 + s)) for d in (0, 100, 300, 1000) for s in (0, 1, 2)
            for i in range(30)]  # fmt: skip
    curve = fit_binary("harmful_compliance", "advbench", rows)
    assert curve.model == "isotonic" and "lack-of-fit F test" in curve.why and curve.run_variation
    rec = recommend_from_curves([curve], target=target(harmful_compliance=0.2))
    assert rec.dose == 100 and rec.lo == 1 and rec.hi in (100, None)
    fitted, lo, hi = curve_at(curve, [50])
    assert math.isnan(fitted[0]) and lo[0] <= 0.05 and hi[0] >= 0.4


def test_one_seed_says_what_it_cannot_tell() -> None:
    rec = recommend(simulate([0, 30, 100], prompts=40), target=target(harmful_compliance=0.2))
    assert rec.cells == 3 and not rec.run_variation and rec.met is None and rec.lo is None and rec.hi is None
    assert rec.text.startswith("This run has 3 training cells (3 doses x 1 seed): too few to estimate")
    assert "Wilson intervals over prompts only" in rec.text and "seeds=[0,1] --dry-run" in rec.text
    assert {o.dose for o in rec.observed} == {0, 30, 100}


HARMFUL = line("harmful_compliance", "advbench", 2.0, -1.0)
REFUSING = line("over_refusal", "xstest-v2-safe", -5.0, 0.5)


def test_without_a_target_the_curves_only() -> None:
    rec = recommend_from_curves([HARMFUL, REFUSING], target=None)
    assert rec.met is None and rec.dose is None and len(rec.curves) == 2
    assert rec.text.startswith("No target is set") and "target: {harmful_compliance: {max: 0.05}" in rec.text


def test_target_names_a_set_the_run_did_not_measure() -> None:
    goal = Target.model_validate({"harmful_compliance": {"max": 0.1, "sets": ["advbnch"]}})
    with pytest.raises(SafedoseError, match="'advbnch' is not a harm set here"):
        recommend_from_curves([HARMFUL, REFUSING], target=goal)


def test_parse_target(tmp_path: Path) -> None:
    assert parse_target('{"harmful_compliance": {"max": 0.05}}').limits()["harmful_compliance"].max == 0.05
    assert parse_target("target: {over_refusal: {max: 0.1, sets: [xstest-v2-safe]}}").over_refusal is not None
    path = tmp_path / "target.yaml"
    path.write_text("harmful_compliance:\n  max: 0.2\n  sets: [advbench]\n")
    assert parse_target(str(path)).limits()["harmful_compliance"].sets == ["advbench"]
    cases = [("{harmful_compliance: {max: 5}}", "less than 1"), ("{harm: {max: 0.1}}", "harm"),
             ("[1, 2]", "expected a mapping"), ("{a: [}", "malformed"), ("{}", "at least one limit")]  # fmt: skip
    for text, needle in cases:
        with pytest.raises(SafedoseError, match=needle):
            parse_target(text)


def test_config_target_is_validated_and_overridable() -> None:
    config = load_sweep_config("configs/demo.yaml", ["target.harmful_compliance.max=0.1"])
    assert config.target is not None and config.target.limits()["harmful_compliance"].max == 0.1
    with pytest.raises(SafedoseError, match="'xstest-v2-safe' is not a harm set here"):
        load_sweep_config("configs/demo.yaml", ["target.harmful_compliance={max: 0.1, sets: [xstest-v2-safe]}"])
    with pytest.raises(SafedoseError, match=r"search\.budget"):
        load_sweep_config("configs/demo.yaml", ["search.budget=0", "search.max_width=10"])


# --- fitting rules on simulated answers


def test_logistic_data_gets_a_logistic_curve_that_covers_the_truth() -> None:
    answers = simulate([0, 10, 100, 1000], prompts=40, seeds=(0, 1, 2), cell_sd=0.3)
    (harmful, refusing) = recommend(answers, target=None).curves
    assert harmful.model == refusing.model == "logistic" and harmful.direction == "falls" and harmful.df == 10
    grid = np.array([0.0, 10.0, 100.0, 1000.0])
    _, lo, hi = curve_at(harmful, grid)
    z = np.random.default_rng(0).normal(0.0, 0.3, 100_000)  # the share averaged over training runs
    truth = np.array([np.mean(1 / (1 + np.exp(-(HARM[0] + HARM[1] * math.log1p(d) + z)))) for d in grid])
    assert np.all((lo <= truth) & (truth <= hi))
    assert [k.dose for k in refusing.knots] == [0, 10, 100, 1000] and all(k.residual is not None for k in harmful.knots)


def test_separation_gets_a_line_and_misfit_a_monotone_curve() -> None:
    # every answer complies at dose 0 and none later: the cells' empirical logits are finite, so a line fits; with
    # one seed there is no run-to-run variation to put in its band
    separated = [(d, 0, f"p{i}", float(d == 0)) for d in (0, 50, 150) for i in range(10)]
    curve = fit_binary("harmful_compliance", "advbench", separated)
    assert curve.model == "logistic" and curve.direction == "falls" and not curve.run_variation
    assert all(k.lo is None and k.hi is None for k in curve.knots)
    # a step with two seeds: 90% compliance up to dose 100, then 10%; the line misses the replicate cells' means
    shares = {0: 0.9, 10: 0.9, 30: 0.9, 100: 0.9, 300: 0.1, 1000: 0.1}
    step = [(d, s, f"p{i}", float(i < 100 * v + 2 * s)) for d, v in shares.items() for s in (0, 1)
            for i in range(100)]  # fmt: skip
    curve = fit_binary("harmful_compliance", "advbench", step)
    assert curve.model == "isotonic" and "lack-of-fit F test" in curve.why
    fitted, _, _ = curve_at(curve, [100, 300, 2000])
    assert fitted[0] == pytest.approx(0.91) and fitted[1] == pytest.approx(0.11) and math.isnan(fitted[2])


# --- the adaptive search on a simulated model


def _measure(seed: int) -> Callable[[list[int]], Recommendation]:
    goal = target(harmful_compliance=0.1)
    return lambda doses: recommend(simulate(doses, prompts=30, seed=seed, seeds=(0, 1, 2), prompt_sd=1.0,
                                            cell_sd=0.4), target=goal)  # fmt: skip


def test_search_adds_the_dose_that_leaves_the_narrowest_expected_interval() -> None:
    measure = _measure(0)
    rec = measure([0, 1000])
    assert rec.run_variation and rec.lo is not None
    step = next_dose(rec, [0, 1000], max_width=0, cells_left=12, cells_per_dose=3)
    assert isinstance(step, Choice) and "narrowest expected interval" in step.reason

    def expected_width(dose: int) -> float:
        limited = [c for c in rec.curves if c.metric == "harmful_compliance"]
        after = [c for c in (expected_after(c, dose, 3) for c in limited) if c is not None]
        return recommend_from_curves(after, target=rec.target).width

    hi = rec.hi if rec.hi is not None else 1000
    widths = {d: expected_width(d) for d in range(rec.lo + 1, hi, max(1, (hi - rec.lo) // 40))}
    chosen = expected_width(step.dose)
    assert chosen <= min(widths.values()) + 25  # the best of 24 candidates is close to the best of a finer scan
    assert chosen < rec.width


def test_search_replays_its_choices_and_covers_the_truth() -> None:
    truth = marginal_dose(HARM, 0.1, sd=math.hypot(1.0, 0.4))
    for seed in (0, 1):
        log = search_doses(_measure(seed), start=[0, 1000], budget=15, max_width=0, cells_per_dose=3)
        assert log.cells == 15 and log.doses[0] == 0 and log.doses[-1] == 1000 and "budget is spent" in (log.stop or "")
        assert len(set(log.doses)) == len(log.doses) == 2 + len(log.choices)
        assert log.interval is not None and log.interval[0] is not None and truth is not None
        assert log.interval[0] <= truth <= (log.interval[1] or math.inf), (seed, log)
        assert search_doses(_measure(seed), start=[0, 1000], budget=15, max_width=0, cells_per_dose=3) == log


def test_search_without_run_variation_bisects_the_tested_range() -> None:
    rec = recommend(simulate([0, 1000], prompts=30), target=target(harmful_compliance=0.1))
    step = next_dose(rec, [0, 1000], max_width=10, cells_left=5, cells_per_dose=1)
    assert isinstance(step, Choice) and step.dose == 31 and "too few cells" in step.reason


def test_next_dose_stops_when_there_is_nothing_to_narrow() -> None:
    goal = target(harmful_compliance=0.01)
    rec = recommend(simulate([0, 100], prompts=50, seeds=(0, 1, 2)), target=goal)
    assert rec.dose is None
    stop = next_dose(rec, [0, 100], max_width=10, cells_left=5, cells_per_dose=1)
    assert isinstance(stop, str) and "no interval to narrow" in stop


def test_recommend_command(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.report.test_report import make_run

    run = make_run(tmp_path)
    result = cli("recommend", run, "--target", "{harmful_compliance: {max: 0.3}, over_refusal: {max: 0.5}}")
    assert result.code == 0, result.err
    data = json.loads((run / "results" / "recommendation.json").read_text())
    assert data["met"] is None and data["text"].startswith("This run has 3 training cells")  # one seed
    assert data["text"].split(" (")[0] in result.out
    html = (run / "report" / "index.html").read_text().replace("&#39;", "'")
    assert data["text"][:60] in html and "0. The answer" in html and "Pearson residual" in html
    bad = cli("recommend", run, "--target", "{harmful_compliance: {max: 0.3, sets: [nope]}}")
    assert bad.code == 2 and "'nope' is not a harm set here" in bad.err and len(bad.err.strip().splitlines()) == 1
