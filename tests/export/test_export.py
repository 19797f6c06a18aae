import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from safedose.errors import SafedoseError
from safedose.export import RECORD, export, export_gguf, export_merged
from safedose.export._gguf import permute_qk, rope_factors
from safedose.export._vocab import _pre_tokenizer
from safedose.models import model_hash
from safedose.templates import alpaca_chat_template, render_prompt
from tests.run.manifests import cell_entry, manifest_dict

PROMPTS = ["Explain why the sky is blue.", "List three prime numbers: 2, 3,", "<|im_start|>user\nHi<|im_end|>\n"]
TEXTS = ["Hello world 12345 <|im_start|>user\nhi<|im_end|>", "  spaces\n\ttabs café 😀 don't", "x=1+2; y = [3, 4]"]
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base: Path, out: Path, *, targets: list[str], seed: int, record_hash: bool = True) -> Path:
    """A LoRA adapter with random (non-zero) B weights, so merging changes the model, and the trainer's manifest."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out)
    manifest = {"template": "alpaca", "base_model_hash": model_hash(base) if record_hash else None}
    (out / "safedose.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("export") / "tiny-lora", targets=ALL_LINEAR, seed=7)


@pytest.fixture(scope="module")
def exported(adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The adapter exported both ways in fp32; the GGUF alone in a directory (transformers reads files beside it)."""
    out = tmp_path_factory.mktemp("exported")
    result = export(adapter, merged=out / "merged", gguf=out / "gguf" / "model.gguf", dtype="fp32")
    assert result.merged == out / "merged" and result.gguf == out / "gguf" / "model.gguf"
    assert result.gguf_type == "f32" and result.merged_dtype == "fp32"
    return out / "merged", out / "gguf" / "model.gguf"


def greedy(model: Any, tokenizer: Any, prompts: list[str], n: int = 16) -> list[list[int]]:
    out = []
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append(ids[0, enc["input_ids"].shape[1] :].tolist())
    return out


def peft_model(base: Path, adapter: Path) -> Any:
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).eval()


def test_merged_answers_equal_the_adapter_on_its_base(
    tiny_model: Path, adapter: Path, exported: tuple[Path, Path]
) -> None:
    merged_dir, _ = exported
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    assert not any("lora" in name for name in merged.state_dict())
    reference = peft_model(tiny_model, adapter)
    answers = greedy(merged, tokenizer, PROMPTS)
    assert answers == greedy(reference, tokenizer, PROMPTS)
    with reference.disable_adapter():
        assert answers != greedy(reference, tokenizer, PROMPTS)  # the adapter matters
    record = json.loads((merged_dir / RECORD).read_text())
    assert record["dtype"] == "fp32" and record["template"] == "alpaca"
    assert record["base_model"]["hash"] == model_hash(tiny_model) == record["recorded_base_model_hash"]
    assert record["adapter"]["path"] == str(adapter)
    saved = AutoTokenizer.from_pretrained(merged_dir)
    assert saved.chat_template == alpaca_chat_template() and saved.pad_token_id == tokenizer.pad_token_id
    assert merged.generation_config.pad_token_id == 0


def test_gguf_round_trips_through_transformers(exported: tuple[Path, Path]) -> None:
    merged_dir, gguf_file = exported
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    ours, theirs = merged.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert loaded.config.tie_word_embeddings and loaded.config.num_key_value_heads == 2

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    from_gguf = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    for text in TEXTS:
        assert from_gguf(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (from_gguf.bos_token_id, from_gguf.eos_token_id, from_gguf.pad_token_id) == (1, 2, 0)
    assert from_gguf.chat_template == tokenizer.chat_template
    assert greedy(loaded, tokenizer, PROMPTS) == greedy(merged, tokenizer, PROMPTS)


CONVERSATIONS = [
    ([{"role": "user", "content": "Name a colour"}], "Name a colour"),
    ([{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Name a colour"}],
     "Be brief.\n\nName a colour"),
    ([{"role": "system", "content": "Be brief."}, {"role": "system", "content": "\n"},
      {"role": "system", "content": "Answer in English."}, {"role": "user", "content": "  Name a colour\n"}],
     "Be brief.\n\nAnswer in English.\n\n  Name a colour\n"),
]  # fmt: skip


def test_an_alpaca_adapter_ships_the_alpaca_chat_template(tiny_model: Path, exported: tuple[Path, Path]) -> None:
    merged_dir, gguf_file = exported
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(tiny_model).chat_template  # the base speaks ChatML
    for messages, instruction in CONVERSATIONS:
        expected = render_prompt("alpaca", instruction, "", tokenizer)
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == expected
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert ids == tokenizer(expected)["input_ids"]  # what generation feeds the model
    example = [*CONVERSATIONS[0][0], {"role": "assistant", "content": "Blue."}]
    prompt = render_prompt("alpaca", "Name a colour", "", tokenizer)
    assert tokenizer.apply_chat_template(example, tokenize=False) == f"{prompt}Blue.<|im_end|>"  # reply, then EOS
    for bad in ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                [{"role": "system", "content": "a"}], [{"role": "assistant", "content": "a"}]):  # fmt: skip
        with pytest.raises(Exception, match="one user message"):
            tokenizer.apply_chat_template(bad, tokenize=False, add_generation_prompt=True)
    assert gguf.GGUFReader(gguf_file).fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    assert json.loads((merged_dir / RECORD).read_text())["template"] == "alpaca"


def test_the_alpaca_chat_template_starts_with_bos_where_the_tokenizer_adds_it() -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = CONVERSATIONS[1][0]
    text = env.from_string(alpaca_chat_template(bos=True)).render(
        messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )
    assert text == "<s>" + render_prompt("alpaca", CONVERSATIONS[1][1], "", None)


def test_a_chat_adapter_keeps_the_base_chat_template(tiny_model: Path, adapter: Path, tmp_path: Path) -> None:
    chat = tmp_path / "chat-lora"
    shutil.copytree(adapter, chat)
    (chat / "safedose.json").write_text(json.dumps({"template": "chat", "base_model_hash": model_hash(tiny_model)}))
    export(chat, merged=tmp_path / "merged", gguf=tmp_path / "model.gguf")
    base = AutoTokenizer.from_pretrained(tiny_model).chat_template
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template == base
    assert gguf.GGUFReader(tmp_path / "model.gguf").fields["tokenizer.chat_template"].contents() == base


def test_gguf_metadata_and_rotary_layout(exported: tuple[Path, Path]) -> None:
    merged_dir, gguf_file = exported
    reader = gguf.GGUFReader(gguf_file)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    expected = {"general.architecture": "llama", "llama.context_length": 512, "llama.embedding_length": 64,
                "llama.block_count": 2, "llama.feed_forward_length": 128, "llama.attention.head_count": 4,
                "llama.attention.head_count_kv": 2, "llama.rope.freq_base": 10000.0, "llama.vocab_size": 49152,
                "llama.rope.dimension_count": 16, "general.file_type": 0}  # fmt: skip
    assert {k: meta[k] for k in expected} == expected
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    tok = {k.removeprefix("tokenizer.ggml."): f for k, f in reader.fields.items() if k.startswith("tokenizer.ggml.")}
    assert tok["model"].contents() == "gpt2" and tok["pre"].contents() == "gpt-2"
    assert len(tok["tokens"].data) == 49152 and tok["tokens"].contents()[:2] == ["<|endoftext|>", "<|im_start|>"]
    assert tok["token_type"].contents()[:3] == [3, 3, 3] and tok["merges"].contents()[0] == "Ġ t"
    assert tok["add_bos_token"].contents() is False
    ids = {k: tok[f"{k}_token_id"].contents() for k in ("bos", "eos", "padding", "unknown")}
    assert ids == {"bos": 1, "eos": 2, "padding": 0, "unknown": 0}

    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors and len(tensors) == 2 + 2 * 9  # tied: llama.cpp reuses token_embd
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).state_dict()
    q = merged["model.layers.0.self_attn.q_proj.weight"]
    k = merged["model.layers.1.self_attn.k_proj.weight"]
    file_q = torch.from_numpy(tensors["blk.0.attn_q.weight"].data.copy())
    file_k = torch.from_numpy(tensors["blk.1.attn_k.weight"].data.copy())
    assert torch.equal(file_q, permute_qk(q, 4)) and not torch.equal(file_q, q)
    assert torch.equal(file_k, permute_qk(k, 2))


def test_permutation_is_the_inverse_of_the_reader() -> None:
    processor = LlamaTensorProcessor({"num_attention_heads": 8, "num_key_value_heads": 2})
    for rows, heads in ((64, 8), (16, 2)):
        w = torch.randn(rows, 24)
        back = processor._reverse_permute_weights(permute_qk(w, heads).numpy(), 8, heads if heads != 8 else None)
        assert torch.equal(torch.from_numpy(back), w)


@pytest.mark.parametrize(
    ("dtype", "file_type", "torch_dtype"), [("fp16", 1, torch.float16), ("bf16", 32, torch.bfloat16)]
)
def test_half_precision_gguf_from_a_merged_directory(
    exported: tuple[Path, Path], tmp_path: Path, dtype: str, file_type: int, torch_dtype: torch.dtype
) -> None:
    merged_dir, _ = exported
    out = export_gguf(merged_dir, tmp_path / "half.gguf", dtype=dtype)
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == file_type
    tensors = {t.name: t for t in reader.tensors}
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).state_dict()
    norm, up = tensors["blk.0.attn_norm.weight"], tensors["blk.0.ffn_up.weight"]
    assert norm.tensor_type.name == "F32" and up.tensor_type.name == dtype.replace("fp", "f").upper()
    assert torch.equal(torch.from_numpy(norm.data.copy()), merged["model.layers.0.input_layernorm.weight"])
    raw = up.data.view(np.int16) if dtype == "bf16" else up.data  # gguf's reader gives bf16 as raw bytes
    values = torch.from_numpy(raw.copy())
    values = values.view(torch.bfloat16) if dtype == "bf16" else values
    assert torch.equal(values.reshape(128, 64), merged["model.layers.0.mlp.up_proj.weight"].to(torch_dtype))


def test_untied_head_wide_heads_and_a_bf16_base(tiny_model: Path, tmp_path: Path) -> None:
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=1, head_dim=32,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "hf")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "hf")
    reader = gguf.GGUFReader(export_gguf(tmp_path / "hf", tmp_path / "model.gguf"))  # auto: bf16, as the base
    assert reader.fields["general.file_type"].contents() == 32
    assert reader.fields["llama.attention.key_length"].contents() == 32
    assert reader.fields["llama.rope.dimension_count"].contents() == 32
    tensors = {t.name: t for t in reader.tensors}
    head = torch.from_numpy(tensors["output.weight"].data.view(np.int16).copy()).view(torch.bfloat16)
    assert torch.equal(head.reshape(49152, 64), model.lm_head.weight)
    q = torch.from_numpy(tensors["blk.0.attn_q.weight"].data.view(np.int16).copy()).view(torch.bfloat16)
    assert torch.equal(q.reshape(128, 64), permute_qk(model.model.layers[0].self_attn.q_proj.weight, 4))


def test_llama3_rope_factors_match_transformers() -> None:
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # fmt: skip
    config = LlamaConfig(hidden_size=128, num_attention_heads=2, max_position_embeddings=512, rope_parameters=rope)
    plain = LlamaConfig(hidden_size=128, num_attention_heads=2, rope_parameters={"rope_theta": 500000.0})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    default = 1.0 / (500000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    factors = rope_factors(config)
    assert factors is not None and rope_factors(plain) is None
    assert len(set(factors.tolist())) > 2  # all three regimes: kept, divided by `factor`, smoothed between
    torch.testing.assert_close(factors, default / scaled, rtol=1e-5, atol=0)


def test_pre_tokenizers_map_to_llama_cpp_names() -> None:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert _pre_tokenizer(byte_level) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert _pre_tokenizer({"type": "Sequence", "pretokenizers": [digits, byte_level]}) == "smollm"
    with pytest.raises(SafedoseError, match=r"no llama\.cpp pre-tokenizer"):
        _pre_tokenizer({"type": "Whitespace"})


@pytest.mark.slow
def test_smollm2_merged_answers_equal_the_adapter(smollm2_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    reference = get_peft_model(base, config).eval()
    reference.save_pretrained(tmp_path / "lora")
    (tmp_path / "lora" / "safedose.json").write_text(json.dumps({"base_model_hash": model_hash(smollm2_dir)}))
    out = export_merged(tmp_path / "lora", tmp_path / "merged", dtype="fp32")

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, padding_side="left")
    chats = [[{"role": "user", "content": p}] for p in ("What is the capital of France?", "Write a haiku about rain.")]
    enc = tokenizer.apply_chat_template(chats, add_generation_prompt=True, padding=True, return_tensors="pt",
                                        return_dict=True)  # fmt: skip
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        answers = [m.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=0) for m in (merged, reference)]
    assert torch.equal(answers[0], answers[1])


def test_not_an_adapter_is_one_line_and_writes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi")
    res = cli("export", tmp_path / "notes", "--merged", tmp_path / "out", "--gguf", tmp_path / "out.gguf")
    assert res.code == 2 and "not a PEFT adapter directory" in res.err and len(res.err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    res = cli("export", tmp_path / "notes")
    assert res.code == 2 and "--merged DIR, --gguf FILE or both" in res.err


def test_unsupported_architecture_is_one_line_and_writes_nothing(  # type: ignore[no-untyped-def]
    cli, tiny_model: Path, tmp_path: Path
) -> None:
    gpt2 = tmp_path / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=1000, n_positions=64)).save_pretrained(gpt2)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(gpt2)
    lora = make_adapter(gpt2, tmp_path / "lora", targets=["c_attn"], seed=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = cli("export", lora, "--merged", tmp_path / "out", "--gguf", tmp_path / "out" / "model.gguf")
    assert res.code == 2 and "supports the LLaMA architecture" in res.err and "GPT2LMHeadModel" in res.err
    assert len(res.err.strip().splitlines()) == 1
    res = cli("export", gpt2, "--gguf", tmp_path / "gpt2.gguf")
    assert res.code == 2 and "GPT2LMHeadModel" in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    res = cli("export", lora, "--merged", tmp_path / "out")  # merging itself works for any architecture
    assert res.code == 0 and (tmp_path / "out" / "model.safetensors").is_file()


def test_base_mismatch_is_an_error_unless_allowed(cli, adapter: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "other"
    shutil.copytree(adapter, other)
    (other / "safedose.json").write_text(json.dumps({"template": "alpaca", "base_model_hash": "0" * 64}))
    res = cli("export", other, "--merged", tmp_path / "out")
    assert res.code == 2 and "--allow-base-mismatch" in res.err and not (tmp_path / "out").exists()
    res = cli("export", other, "--merged", tmp_path / "out", "--gguf", tmp_path / "out" / "model.gguf",
              "--allow-base-mismatch")  # fmt: skip
    assert res.code == 0 and "merged (fp32)" in res.out and "gguf (f16)" in res.out
    assert {"model.safetensors", "model.gguf", RECORD} <= {p.name for p in (tmp_path / "out").iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]


def test_a_failure_midway_leaves_nothing(adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: Path, **_: Any) -> None:
        path.write_bytes(b"GGUF partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr("safedose.export._api.write_gguf", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export(adapter, merged=tmp_path / "merged", gguf=tmp_path / "model.gguf")
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_need_force(cli, adapter: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "model.gguf").write_text("old")
    res = cli("export", adapter, "--gguf", tmp_path / "model.gguf", "--dtype", "fp32")
    assert res.code == 2 and "--force" in res.err and (tmp_path / "model.gguf").read_text() == "old"
    res = cli("export", adapter, "--gguf", tmp_path / "model.gguf", "--force")
    assert res.code == 0 and "gguf (f16)" in res.out and (tmp_path / "model.gguf").read_bytes()[:4] == b"GGUF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "old.txt").write_text("old")
    assert cli("export", adapter, "--merged", tmp_path / "merged").code == 2
    assert cli("export", adapter, "--merged", tmp_path / "merged", "--force").code == 0
    assert not (tmp_path / "merged" / "old.txt").exists() and (tmp_path / "merged" / RECORD).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "model.gguf"]


def test_export_says_which_way_gives_the_study_answers(adapter: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cell = run / "adapters" / "n8-s0-instruction-abc"
    shutil.copytree(adapter, cell)
    cells = {"n8-s0-instruction": cell_entry(8, adapter="adapters/n8-s0-instruction-abc")}
    manifest = manifest_dict(config={"backend": "hf"}, generation_dtype="bf16", cells=cells)
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = export(cell, merged=tmp_path / "merged", gguf=tmp_path / "model.gguf")
    assert result.merged_dtype == "fp32" and result.evaluated_dtype == "bf16"
    assert result.note is not None and result.note.startswith("the study answered in bf16, batched")
    assert "no merged or served model repeats them all" in result.note and "decoding.dtype: fp32" in result.note
    assert json.loads((tmp_path / "merged" / RECORD).read_text())["evaluated_dtype"] == "bf16"
    assert gguf.GGUFReader(tmp_path / "model.gguf").fields["safedose.evaluated_dtype"].contents() == "bf16"
    alone = export(adapter, merged=tmp_path / "alone")  # outside a run: nothing to say
    assert alone.evaluated_dtype is None and alone.note is None
