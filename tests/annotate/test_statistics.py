import json
import random
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from safedose.annotate import (
    Label,
    LabelIn,
    SampleSpec,
    corrected_rates,
    judge_against_humans,
    krippendorff_alpha,
    majority,
    open_store,
    pairwise_kappa,
    training_labels,
)
from safedose.files import write_json
from safedose.run import JudgedAnswer, RoleVerdict, manifest_path, open_run, read_judged, write_judged
from safedose.stats import kappa_codes as kappa_from_codes
from tests.annotate.conftest import make_run
from tests.run.manifests import manifest_dict

CLASSES = ("compliance", "refusal", "partial")


def _labels(columns: dict[str, list[str]]) -> list[Label]:
    return [Label(item=f"{k:016x}", annotator=name, refusal=value, created_at=0, updated_at=0)  # type: ignore[arg-type]
            for name, values in columns.items() for k, value in enumerate(values) if value]  # fmt: skip


def test_kappa_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 80)
    b = np.where(rng.random(80) < 0.6, a, rng.integers(0, 3, 80))
    assert float(kappa_from_codes(a, b, 3)) == pytest.approx(cohen_kappa_score(a, b, labels=[0, 1, 2]))


def test_pairwise_kappa_and_alpha_on_known_labels() -> None:
    rng = random.Random(0)
    truth = [rng.choice(CLASSES) for _ in range(60)]
    noisy = [t if rng.random() < 0.8 else rng.choice(CLASSES) for t in truth]
    partial = [t if k % 3 else "" for k, t in enumerate(truth)]  # carol labelled two thirds
    labels = _labels({"alice": truth, "bob": noisy, "carol": partial})
    pairs = {tuple(p["annotators"]): p for p in pairwise_kappa(labels, "refusal")}
    assert pairs["alice", "bob"]["kappa"] == pytest.approx(cohen_kappa_score(truth, noisy))
    assert pairs["alice", "carol"]["kappa"] == pytest.approx(1.0) and pairs["alice", "carol"]["n"] == 40
    lo, hi = pairs["alice", "bob"]["kappa_ci95"]
    assert lo < pairs["alice", "bob"]["kappa"] < hi
    alpha = krippendorff_alpha(labels, "refusal")
    matrix = np.array([[CLASSES.index(v) if v else np.nan for v in column] for column in (truth, noisy, partial)])
    assert alpha["alpha"] == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))
    assert alpha["n_items"] == 60 and alpha["n_annotators"] == 3
    assert alpha["alpha_ci95"][0] < alpha["alpha"] < alpha["alpha_ci95"][1]


def test_majority_leaves_ties_out() -> None:
    labels = _labels({"a": ["refusal", "refusal", "partial"], "b": ["refusal", "compliance", "partial"],
                      "c": ["compliance", "", "partial"]})  # fmt: skip
    winners, ties = majority(labels, "refusal")
    assert winners == {f"{0:016x}": "refusal", f"{2:016x}": "partial"} and ties == 1


def _synthetic_run(path: Path, truth: dict[str, float], *, n: int = 150, seed: int = 0) -> Path:
    """Unsafe prompts answered by each variant with a true compliance rate; the judge misses 20% of compliances
    and calls 10% of refusals compliance."""
    rng = random.Random(seed)
    rows, human = [], {}
    for variant, rate in truth.items():
        for i in range(n):
            complies = rng.random() < rate
            said = complies if rng.random() < (0.8 if complies else 0.9) else not complies
            dose = None if variant == "base" else int(variant[1:])
            rows.append(JudgedAnswer(
                id=f"p{i}", eval_set="advbench", expected_label="unsafe", prompt=f"prompt {i}",
                response=f"answer {i} {variant}", variant=variant, template="alpaca", dose=dose,
                seed=None if dose is None else 0, format=None if dose is None else "instruction",
                verdicts={"refusal": RoleVerdict(judge="refusal@1", label="compliance" if said else "refusal")},
            ))  # fmt: skip
            human[(variant, f"p{i}")] = "compliance" if complies else "refusal"
    run = open_run(path, create=True)
    write_judged(run, rows)
    write_json(manifest_path(run), manifest_dict(config={}, judges={"refusal": "refusal@1"}))
    store = open_store(run, SampleSpec(per_cell=60, overlap=0.0, seed=0), create=True)
    store.invite("truth")
    (who,) = store.annotators()
    for item in store.items():
        store.put_label(who, item.item, LabelIn(refusal=human[(item.variant, item.prompt_id)], harmful="no"))  # type: ignore[arg-type]
    return run


def test_corrected_rates_undo_the_judges_measured_errors(tmp_path: Path) -> None:
    truth = {"base": 0.9, "n50": 0.5, "n150": 0.1}
    run = _synthetic_run(tmp_path / "run", truth)
    result = corrected_rates(run)
    (audit,) = [m for m in result["audit"] if m["metric"] == "harmful_compliance"]
    assert audit["n"] == 180 and 0.65 < audit["sensitivity"] < 0.95 and 0.8 < audit["specificity"] < 1.0
    rows = {r["variant"]: r for r in result["rows"] if r["metric"] == "harmful_compliance"}
    for variant, rate in truth.items():
        row = rows[variant]
        assert row["lo"] <= rate <= row["hi"], (variant, row)
        assert abs(row["corrected"] - rate) < abs(row["raw"] - rate) + 0.03
    wide = rows["n50"]["hi"] - rows["n50"]["lo"]
    assert wide > 2 * 1.96 * (0.25 / 150) ** 0.5  # wider than the cell's own sampling error alone


def test_a_judge_that_agrees_with_humans_is_not_corrected(run_dir: Path) -> None:
    store = open_store(run_dir, SampleSpec(per_cell=12, overlap=0.0, seed=0), create=True)
    store.invite("alice")
    (alice,) = store.annotators()
    judged = {(a.variant, a.eval_set, a.id): a for a in read_judged(run_dir)}
    for item in store.items():
        label = judged[item.answer_key].label("refusal")
        store.put_label(alice, item.item, LabelIn(refusal=label, harmful="no"))  # type: ignore[arg-type]
    for row in corrected_rates(run_dir)["rows"]:
        if row["metric"] != "harmful_answer" and row["corrected"] is not None:
            assert row["corrected"] == pytest.approx(row["raw"])
    refusal = judge_against_humans(run_dir, "refusal")
    assert refusal["kappa"] == pytest.approx(1.0) and "judged.jsonl" in refusal["judge"]
    harm = judge_against_humans(run_dir, "harm")
    assert harm["target"] == "harmful (unsafe prompts)" and harm["n"] == 60


def _two_annotators(run: Path) -> None:
    store = open_store(run, SampleSpec(per_cell=4, overlap=0.5, seed=0), create=True)
    for name in ("alice", "bob"):
        store.invite(name)
    for who in store.annotators():
        for k, item in enumerate(store.queue(who)[1][:24]):
            refusal = "refusal" if "cannot" in item.response else "compliance"
            if who.name == "bob" and k % 5 == 0:
                refusal = "partial"
            store.put_label(who, item.item, LabelIn(refusal=refusal, harmful="no" if item.asks_harmful else None))  # type: ignore[arg-type]


def test_judge_validate_against_the_run_s_humans_from_the_command_line(run_dir: Path, cli: Any) -> None:
    _two_annotators(run_dir)
    result = cli("judge", "validate", "strmatch", "--human", run_dir)
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert metrics["judge"].startswith("strmatch@") and "computed now" in metrics["judge"]
    assert metrics["n"] > 0 and len(metrics["confusion"]) == 3
    assert cli("judge", "validate", "strmatch", "--human", run_dir.parent / "nothing").code == 2


def test_build_refusal_with_extra_labels_names_them_in_its_revision(run_dir: Path, cli: Any, monkeypatch: Any,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    import safedose.judges._refusal as trained

    fits: list[Any] = []
    monkeypatch.setenv("SAFEDOSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(trained, "build", lambda human=(): fits.append(list(human)) or "model")
    monkeypatch.setattr("safedose.judges._store.data_sha256", lambda sources: "0" * 64)
    _two_annotators(run_dir)
    result = cli("judge", "build", "refusal", "--extra-labels", run_dir)
    assert result.code == 0, result.err
    labels = training_labels(run_dir)
    assert fits == [labels] and labels
    assert "refusal@2+h" in result.out and f"trained with {len(labels)} human labels" in result.out
    first = trained.RefusalJudge(labels)
    assert first.revision.startswith("2+h") and trained.RefusalJudge(labels[:-1]).revision != first.revision
    assert trained.RefusalJudge().revision == "2"
    assert cli("judge", "build", "harm", "--extra-labels", run_dir).code == 2


def test_a_run_without_labels_has_nothing_to_validate_or_train_on(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    open_store(run, create=True)
    from safedose.errors import SafedoseError

    with pytest.raises(SafedoseError, match="no human labels"):
        judge_against_humans(run, "refusal")
    with pytest.raises(SafedoseError, match="no human labels"):
        training_labels(run)


def test_a_judge_trained_on_the_run_s_labels_is_not_measured_against_them(run_dir: Path) -> None:
    from safedose.annotate import labels_digest
    from safedose.errors import SafedoseError

    _two_annotators(run_dir)
    with pytest.raises(SafedoseError, match="its own training data"):
        judge_against_humans(run_dir, f"refusal:{run_dir}")
    with pytest.raises(SafedoseError, match="its own training data"):
        judge_against_humans(run_dir, f"refusal@2+h{labels_digest(training_labels(run_dir))}")
