"""The hf backend's merged-adapter path: same greedy tokens as PEFT's unmerged layers, base weights restored exactly."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from safedose.generate import Decoding, Job, generate, load_tokenizer
from safedose.generate import _hf as hf_backend
from safedose.generate._hf import generation_kwargs, load_model, merged_variant, use_variant
from safedose.templates import render_prompt
from tests.generate.test_generate import prompts, responses

FP32 = Decoding(max_new_tokens=12, dtype="fp32", batch_size=8)
TEXTS = ["Tell me about item 1", "Explain how a bicycle works in more detail please", "Write a short poem"]


def greedy_ids(model: Any, tokenizer: Any, context: Any, max_new_tokens: int = 12) -> list[list[int]]:
    texts = [render_prompt("alpaca", t, "", tokenizer) for t in TEXTS]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    kwargs = generation_kwargs(model, tokenizer, FP32.model_copy(update={"max_new_tokens": max_new_tokens}))
    with context, torch.inference_mode():
        out = model.generate(**enc, **kwargs)
    return list(out[:, enc["input_ids"].shape[1] :].tolist())


def weights(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same(before: dict[str, torch.Tensor], model: Any) -> None:
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert not changed


@pytest.fixture(scope="module")
def loaded(tiny_model: Path, tiny_adapters: list[Path]) -> Iterator[tuple[Any, Any, list[str]]]:
    from safedose.generate import load_adapter_info

    infos = [load_adapter_info(p) for p in tiny_adapters]
    yield load_model(tiny_model, infos, "fp32"), load_tokenizer(tiny_model), [a.name for a in infos]


def test_merged_greedy_ids_equal_unmerged_and_base_is_restored(loaded: tuple[Any, Any, list[str]]) -> None:
    model, tokenizer, names = loaded
    before = weights(model)
    base = greedy_ids(model, tokenizer, use_variant(model, None))
    for name in names:
        unmerged = greedy_ids(model, tokenizer, use_variant(model, name))
        merged = greedy_ids(model, tokenizer, merged_variant(model, name))
        assert merged == unmerged
        assert merged != base  # the adapter (B non-zero) changes the answers, so the comparison can fail
        assert_same(before, model)
    assert greedy_ids(model, tokenizer, merged_variant(model, None)) == base


def merged_weight_names(model: Any, adapter: str) -> list[str]:
    return [f"{n}.base_layer.weight" for n, m in model.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A]


def test_merged_weights_are_written_and_restored_on_errors(loaded: tuple[Any, Any, list[str]]) -> None:
    model, _, names = loaded
    before = weights(model)
    written = merged_weight_names(model, names[1])
    with pytest.raises(RuntimeError, match="boom"), merged_variant(model, names[1]):
        now = dict(model.named_parameters())
        assert written and not any(torch.equal(now[n], before[n]) for n in written)  # the deltas are in the weights
        raise RuntimeError("boom")
    assert_same(before, model)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_run_hf_restores_base_weights_bit_identically_when_generation_raises(
    tiny_model: Path, tiny_adapters: list[Path], dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safedose.generate import load_adapter_info

    infos = [load_adapter_info(p) for p in tiny_adapters]
    model = load_model(tiny_model, infos, dtype)
    before, calls = weights(model), []
    real = hf_backend.generate_batch

    def generate_batch(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:  # base, adapter0, then adapter1 (merged) fails
            now = dict(model.named_parameters())
            assert not any(torch.equal(now[n], before[n]) for n in merged_weight_names(model, infos[1].name))
            raise RuntimeError("generation failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(hf_backend, "load_model", lambda *args: model)
    monkeypatch.setattr(hf_backend, "generate_batch", generate_batch)
    jobs = [Job(f"{v}-{i}", v, f"Say {i}") for v in (None, *[a.name for a in infos]) for i in range(2)]
    decoding = Decoding(max_new_tokens=4, dtype=dtype, batch_size=2, merge_adapters="always")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="generation failed"):
        hf_backend.run_hf(tiny_model, infos, jobs, decoding, lambda r: None, add_special_tokens=True, progress=False)
    assert len(calls) == 3
    assert_same(before, model)


def test_generate_merged_equals_unmerged_and_each_adapter_alone(tiny_model: Path, tiny_adapters: list[Path]) -> None:
    ps = prompts(5)
    merged = generate(str(tiny_model), tiny_adapters, ps, decoding=FP32, progress=False)  # auto: fp32 merges
    never = FP32.model_copy(update={"merge_adapters": "never"})
    unmerged = generate(str(tiny_model), tiny_adapters, ps, decoding=never, progress=False)
    assert responses(merged) == responses(unmerged)
    # the second adapter runs on its own merged weights, not on the first one's left behind
    alone = generate(str(tiny_model), tiny_adapters[1:], ps, decoding=FP32, include_base=False, progress=False)
    assert responses(merged[10:]) == responses(alone)
    assert responses(merged[5:10]) != responses(merged[10:])


def test_merging_is_part_of_the_cache_key_only_where_it_changes_answers() -> None:
    fp32, bf16 = Decoding(dtype="fp32"), Decoding(dtype="bf16")
    for merge in ("always", "never"):
        assert fp32.model_copy(update={"merge_adapters": merge}).key() == fp32.key()
    assert bf16.model_copy(update={"merge_adapters": "never"}).key() == bf16.key()
    assert bf16.model_copy(update={"merge_adapters": "always"}).key() != bf16.key()
    assert "merge_adapters" not in bf16.key() and "merged_adapters" not in fp32.key()


def test_smollm2_random_lora_merged_greedy_ids_equal_unmerged(smollm2_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        task_type="CAUSAL_LM")  # fmt: skip
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft_model.save_pretrained(tmp_path / "random")
    from safedose.generate import load_adapter_info

    model = load_model(smollm2_dir, [load_adapter_info(f"r={tmp_path / 'random'}")], "fp32")
    tokenizer = load_tokenizer(smollm2_dir)
    before = weights(model)
    unmerged = greedy_ids(model, tokenizer, use_variant(model, "r"), 16)
    assert greedy_ids(model, tokenizer, merged_variant(model, "r"), 16) == unmerged
    assert greedy_ids(model, tokenizer, use_variant(model, None), 16) != unmerged
    assert_same(before, model)
