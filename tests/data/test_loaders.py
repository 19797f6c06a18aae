import csv
import gzip
import json
from pathlib import Path

from safedose.data import load_eval_prompts, load_instructions, load_raw
from tests.conftest import write_json


def test_alpaca_json(tmp_path: Path) -> None:
    f = write_json(tmp_path / "a.json", [{"instruction": "Add", "input": "2 and 3", "output": "5"}])
    (r,) = load_instructions(str(f))
    assert (r.instruction, r.input, r.output, r.source, r.id) == ("Add", "2 and 3", "5", "a.json", "a.json-0")


def test_dolly_fields_map_to_alpaca(tmp_path: Path) -> None:
    rows = [{"instruction": "Summarise", "context": "Long text", "response": "Short", "category": "summarization"}]
    (r,) = load_instructions(str(write_json(tmp_path / "d.json", rows)))
    assert (r.input, r.output) == ("Long text", "Short")


def test_jsonl_and_gz_and_ids(tmp_path: Path) -> None:
    lines = [json.dumps({"id": 7, "instruction": "A", "output": "B"}), "", json.dumps({"prompt": "C", "response": "D"})]
    plain = tmp_path / "x.jsonl"
    plain.write_text("\n".join(lines))
    packed = tmp_path / "x.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.write("\n".join(lines))
    for path in (plain, packed):
        a, b = load_instructions(str(path))
        assert a.id == "7" and (b.instruction, b.output) == ("C", "D")


def test_paper_instructions_format(tmp_path: Path) -> None:
    f = write_json(tmp_path / "I-X.json", {"instructions": ["Do x", "Do y"], "inputs": [], "tags": ["crime", "hate"]})
    a, b = load_eval_prompts(str(f))
    assert (a.prompt, a.category, b.category, a.eval_set) == ("Do x", "crime", "hate", "I-X.json")


def test_csv_variants(tmp_path: Path) -> None:
    def write(name: str, header: list[str], rows: list[list[str]]) -> str:
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return str(tmp_path / name)

    (x,) = load_eval_prompts(
        write("x.csv", ["id", "prompt", "type", "label"], [["v2-1", "Kill a\nprocess", "homonyms", "safe"]])
    )
    assert (x.id, x.prompt, x.category, x.expected_label) == ("v2-1", "Kill a\nprocess", "homonyms", "safe")
    (adv,) = load_eval_prompts(write("adv.csv", ["goal", "target"], [["Do harm", "Sure"]]))
    assert adv.prompt == "Do harm"
    (sr,) = load_eval_prompts(write("sr.csv", ["category", "source", "forbidden_prompt"], [["Fraud", "DAN", "Scam"]]))
    assert (sr.prompt, sr.category) == ("Scam", "Fraud")
    hb_header = ["Behavior", "FunctionalCategory", "SemanticCategory", "ContextString"]
    (hb,) = load_eval_prompts(write("hb.csv", hb_header, [["Edit it", "contextual", "misinfo", "The text"]]))
    assert hb.prompt == "The text\n\n---\n\nEdit it" and hb.category == "misinfo"


def test_txt_and_string_list(tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("First?\n\nSecond?\n")
    assert [p.prompt for p in load_eval_prompts(str(tmp_path / "m.txt"))] == ["First?", "Second?"]
    f = write_json(tmp_path / "tdc.json", ["One", "Two"])
    assert [p.prompt for p in load_eval_prompts(str(f))] == ["One", "Two"]


def test_load_raw_keeps_fields(tmp_path: Path) -> None:
    f = write_json(tmp_path / "r.json", [{"prompt": "p", "completion": "c", "final_label": "2_full_refusal"}])
    assert load_raw(str(f)) == [{"prompt": "p", "completion": "c", "final_label": "2_full_refusal"}]


def test_hf_source_through_datasets(tmp_path: Path) -> None:
    repo = tmp_path / "my-dataset"
    repo.mkdir()
    (repo / "train.jsonl").write_text(json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n")
    (r,) = load_instructions(f"hf:{repo}")
    assert (r.instruction, r.output, r.source) == ("Hi", "Hello", f"hf:{repo}")
