"""Attacked prompts through generation: prefill token boundaries, cache keys, resume."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from safedose.attacks import AttackedPrompt, parse_attack
from safedose.cache import Cache
from safedose.data import EvalPrompt, InstructionRecord
from safedose.errors import SafedoseError
from safedose.generate import Decoding, OpenAISettings, generate, load_tokenizer
from safedose.generate import _hf as hf_backend
from safedose.templates import render_prompt
from safedose.train import tokenize

FP32 = Decoding(max_new_tokens=6, dtype="fp32", batch_size=8)
TARGET = "Sure, here is a plan to pick a lock"


def plain(n: int) -> list[EvalPrompt]:
    return [EvalPrompt(id=f"p{i}", prompt=f"Explain item {i}" + " in detail" * (i % 3), eval_set="t",
                       expected_label="unsafe") for i in range(n)]  # fmt: skip


def prefilled(prompts: list[EvalPrompt], k: int | None) -> list[AttackedPrompt]:
    out = parse_attack("prefill" if k is None else f"prefill:{k}").apply(prompts)
    return [a.model_copy(update={"attack": a.attack.model_copy(update={"prefill_target": TARGET})}) for a in out]


@pytest.mark.parametrize("template", ["alpaca", "chat", "raw"])
@pytest.mark.parametrize("k", [1, 3, None])
def test_prefill_ids_are_the_prompt_then_the_answer_start_as_training_tokenises_it(
    tiny_model: Path, template: str, k: int | None
) -> None:
    tokenizer = load_tokenizer(tiny_model)
    (attacked,) = prefilled(plain(1), k)
    from safedose.generate._api import prefill_ids

    start = prefill_ids(attacked, tokenizer)
    text = render_prompt(template, attacked.prompt, "", tokenizer)
    ids = hf_backend.prompt_token_ids(tokenizer, text, start, add_special_tokens=template != "chat")
    # training renders the same prompt and tokenises the answer after it: the prefill is the answer's first k tokens
    (example,) = tokenize([InstructionRecord(id="a", instruction=attacked.prompt, output=TARGET, source="s")],
                          tokenizer, template=template, max_length=512, train_on_inputs=False)  # fmt: skip
    n_prompt = example.labels.index(next(t for t in example.labels if t != -100))
    expected_k = k if k is not None else len(tokenizer(TARGET, add_special_tokens=False)["input_ids"])
    assert ids == example.input_ids[: n_prompt + expected_k]
    assert len(start) == expected_k and tokenizer.decode(list(start)) == tokenizer.decode(
        example.input_ids[n_prompt : n_prompt + expected_k]
    )


def test_prefilled_answers_continue_the_prefix_batched_as_alone(tiny_model: Path) -> None:
    attacked = prefilled(plain(4), 3)
    rows = generate(str(tiny_model), [], attacked, template="alpaca", decoding=FP32, progress=False)
    tokenizer = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    prefix = tokenizer(TARGET, add_special_tokens=False)["input_ids"][:3]
    for row, a in zip(rows, attacked, strict=True):
        assert row.attack is not None and row.attack.prefill == tokenizer.decode(prefix) == "Sure, here"
        assert row.response.startswith("Sure, here") and row.id == a.id and row.prompt == a.prompt
        ids = tokenizer(render_prompt("alpaca", a.prompt, "", tokenizer))["input_ids"] + prefix
        stops = hf_backend.stop_token_ids(tokenizer, model)
        out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=0,
                             eos_token_id=stops)[0, len(ids) :].tolist()  # fmt: skip
        while out and out[-1] == 0:
            out.pop()
        assert row.response == tokenizer.decode(prefix + out, skip_special_tokens=True).strip()
        assert row.n_tokens == len(out)
    one = [generate(str(tiny_model), [], [a], template="alpaca", decoding=FP32, progress=False)[0] for a in attacked]
    assert [r.response for r in one] == [r.response for r in rows]


def test_attack_and_version_key_the_cache_and_a_rerun_resumes(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ps = plain(3)
    mixed: list[EvalPrompt] = [*ps, *parse_attack("refusal_suppression").apply(ps), *prefilled(ps, 2)]
    cache = tmp_path / "cache.sqlite"
    first_plain = generate(str(tiny_model), [], ps, template="alpaca", decoding=FP32, cache=cache, progress=False)
    calls: list[int] = []
    real = hf_backend.run_hf

    def counting(model_dir, adapters, jobs, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(jobs))
        return real(model_dir, adapters, jobs, *args, **kwargs)

    monkeypatch.setattr("safedose.generate._api.run_hf", counting)
    rows = generate(str(tiny_model), [], mixed, template="alpaca", decoding=FP32, cache=cache, progress=False)
    assert calls == [6]  # the plain answers came from the cache; only the attacked ones were generated
    assert rows[:3] == first_plain and [r.id for r in rows] == ["p0", "p1", "p2"] * 3
    assert len({r.key for r in rows}) == 9
    assert [r.attack.name if r.attack else None for r in rows[::3]] == [None, "refusal_suppression", "prefill:2"]
    # a new version of an attack is another key; the same attack again is all cached
    bumped = [a.model_copy(update={"attack": a.attack.model_copy(update={"version": 2})}) for a in prefilled(ps, 2)]
    again = generate(str(tiny_model), [], [*mixed, *bumped], template="alpaca", decoding=FP32, cache=cache,
                     progress=False)  # fmt: skip
    assert calls == [6, 3] and again[:9] == rows and {r.key for r in again[9:]}.isdisjoint({r.key for r in rows})
    # resume: drop two stored answers, rerun: only they are generated, the rest equal
    with Cache(cache) as store:
        store._db.execute("DELETE FROM generations WHERE key IN (?, ?)", (rows[4].key, rows[7].key))
        store._db.commit()
    resumed = generate(str(tiny_model), [], mixed, template="alpaca", decoding=FP32, cache=cache, progress=False)
    assert calls[-1] == 2 and resumed == rows


def test_an_endpoint_cannot_prefill(tiny_model: Path) -> None:
    with pytest.raises(SafedoseError, match="needs token-level control"):
        generate("m", [], prefilled(plain(1), 2), backend="openai", openai=OpenAISettings(base_url="http://x/v1"),
                 progress=False)  # fmt: skip
