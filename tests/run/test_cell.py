"""The cell key: one definition of the sweep axes, carried by every record."""

from __future__ import annotations

import pytest

from safedose.run import AXES, CellEntry, CellFields, CellKey, JudgedAnswer


def test_record_fields_and_key_declare_the_same_axes() -> None:
    assert tuple(CellFields.model_fields)[1:] == AXES
    assert AXES == ("dose", "seed", "format", "safety")


def test_a_single_source_sweep_writes_no_safety_field() -> None:
    one = JudgedAnswer(id="p1", eval_set="advbench", prompt="q", response="a", template="alpaca",
                       variant="n30-s0-instruction", dose=30, seed=0, format="instruction")  # fmt: skip
    assert "safety" not in one.model_dump(mode="json")
    two = one.model_copy(update={"variant": "n30-s0-instruction-hh", "safety": "hh"})
    assert two.model_dump(mode="json")["safety"] == "hh"
    assert two.cell.name == two.variant


def test_the_manifest_names_every_axis_of_a_cell() -> None:
    assert set(AXES) <= set(CellEntry.model_fields)


def test_key_of_a_record_and_its_arm() -> None:
    row = JudgedAnswer(id="p1", eval_set="advbench", prompt="q", response="a", template="alpaca",
                       variant="n30-s1-question", dose=30, seed=1, format="question")  # fmt: skip
    key = row.cell
    assert key == CellKey(dose=30, seed=1, format="question")
    assert key.name == row.variant
    assert key.tuned and key.arm == CellKey(format="question")
    assert not key.arm.tuned


def test_the_untuned_model_has_no_cell_name() -> None:
    base = CellKey()
    assert not base.tuned
    with pytest.raises(ValueError, match="not a training cell"):
        _ = base.name


def test_sort_key_orders_none_first_and_doses_numerically() -> None:
    keys = [CellKey(100, 0, "instruction"), CellKey(), CellKey(15, 0, "instruction"), CellKey(15, 0, "mixed")]
    ordered = sorted(keys, key=CellKey.sort_key)
    assert ordered == [CellKey(), CellKey(15, 0, "instruction"), CellKey(15, 0, "mixed"),
                       CellKey(100, 0, "instruction")]  # fmt: skip
