"""The memory estimate of `sweep --dry-run` against known numbers and a measurement."""

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from safedose.errors import SafedoseError
from safedose.sweep._memory import (
    KNOWN_MODELS,
    GiB,
    ModelShape,
    estimate_generation,
    estimate_training,
    model_shape,
    parse_size,
)
from safedose.train import frozen_linears_to

PAPER = Path(__file__).parents[2] / "configs" / "paper-llama7b-sweep.yaml"


def test_parameter_counts_of_known_architectures() -> None:
    llama = ModelShape.from_config(KNOWN_MODELS["huggyllama/llama-7b"])
    assert llama.parameters() == 6_738_415_616  # "LLaMA-7B": 6.74B
    assert llama.parameters() * 2 == pytest.approx(13.48e9, rel=1e-3)  # bf16 weights: ~13.5 GB
    assert llama.lora_parameters(8, ["q_proj", "v_proj"]) == 4_194_304  # alpaca-lora's "trainable params"
    assert llama.kv_bytes_per_token(2) == 512 * 1024  # 0.5 MiB of bf16 KV cache per token
    smol = ModelShape.from_config(KNOWN_MODELS["smollm2-135m-instruct"])
    assert smol.parameters() == 134_515_008  # the converted embedded model (tests/models)
    for name, expected in [("huggyllama/llama-7b", 6_738_415_616), ("meta-llama/Meta-Llama-3-8B", 8_030_261_248),
                           ("mistralai/Mistral-7B-v0.1", 7_241_732_096),
                           ("smollm2-135m-instruct", 134_515_008)]:  # fmt: skip
        with torch.device("meta"):  # the architecture itself, built without memory
            model = LlamaForCausalLM(LlamaConfig(**KNOWN_MODELS[name]))
        assert sum(p.numel() for p in model.parameters()) == expected == ModelShape.from_config(
            KNOWN_MODELS[name]).parameters(), name  # fmt: skip


def test_lora_count_matches_peft(tiny_model: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"))  # fmt: skip
    shape = ModelShape.from_config(AutoConfig.from_pretrained(tiny_model).to_dict())
    assert shape.lora_parameters(4, targets) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert shape.parameters() == sum(p.numel() for p in model.get_base_model().parameters() if not p.requires_grad)


def _saved_bytes(
    *, checkpointing: bool, autocast: bool, half_linears: bool, batch: int = 2, length: int = 64
) -> tuple[int, Any]:
    """What autograd keeps for the backward pass of one training batch (weights excluded), and the estimate."""
    from peft import LoraConfig, get_peft_model

    from safedose.train import CausalLMLoss

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, pad_token_id=0)  # SmolLM2's layer  # fmt: skip
    base = LlamaForCausalLM(config)
    if checkpointing:
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    model = get_peft_model(base, LoraConfig(r=8, lora_dropout=0.05, target_modules=targets, task_type="CAUSAL_LM"))
    if autocast and half_linears:
        frozen_linears_to(model, torch.bfloat16)  # what training does when base_dtype is unset
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(3, 256, (batch, length))
    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with hooks, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        CausalLMLoss(model)(ids, torch.ones_like(ids), ids).backward()
    estimate = estimate_training(ModelShape.from_config(config.to_dict()), mixed_precision="bf16" if autocast else "no",
                                 base_dtype=None if half_linears else "fp32", lora_r=8, lora_targets=targets,
                                 micro_batch_size=batch, max_length=length,
                                 gradient_checkpointing=checkpointing)  # fmt: skip
    return sum(saved.values()), estimate


@pytest.mark.parametrize(("autocast", "half_linears"), [(False, False), (True, False), (True, True)])
def test_activation_estimate_against_what_autograd_keeps(autocast: bool, half_linears: bool) -> None:
    measured, estimate = _saved_bytes(checkpointing=False, autocast=autocast, half_linears=half_linears)
    # bf16 autocast over fp32 weights keeps a bf16 copy of every weight for the backward pass; none when training
    # stores the frozen linears in bf16 (base_dtype unset)
    assert (estimate.parts["weight casts"] > 0) == (autocast and not half_linears)
    expected = estimate.parts["activations"] + estimate.parts["weight casts"]
    assert 0.7 < measured / expected < 1.3
    checkpointed, with_checkpointing = _saved_bytes(checkpointing=True, autocast=autocast, half_linears=half_linears)
    assert checkpointed < measured / 5  # each layer keeps its input only
    assert checkpointed < with_checkpointing.parts["activations"] < expected


def test_4bit_half_base_and_checkpointing_shrink_the_paper_cell() -> None:
    llama = ModelShape.from_config(KNOWN_MODELS["huggyllama/llama-7b"])
    common: dict[str, Any] = {"lora_r": 8, "lora_targets": ["q_proj", "v_proj"], "micro_batch_size": 4,
                              "max_length": 256, "mixed_precision": "bf16"}  # fmt: skip
    fp32 = estimate_training(llama, base_dtype="fp32", **common)
    default = estimate_training(llama, **common)  # frozen linears stored in bf16 by training
    bf16 = estimate_training(llama, base_dtype="bf16", **common)
    qlora = estimate_training(llama, load_in_4bit=True, gradient_checkpointing=True, **common)
    assert fp32.parts["weights"] == 4 * 6_738_415_616 and bf16.parts["weights"] == 2 * 6_738_415_616
    linear = 6_738_415_616 - 2 * 32000 * 4096 - 4096 * 65  # all but embeddings, head and norms
    assert bf16.parts["weight casts"] == 0 and fp32.parts["weight casts"] == 2 * linear
    assert default.parts["weights"] == 2 * linear + 4 * (6_738_415_616 - linear) and default.parts["weight casts"] == 0
    assert qlora.parts["weights"] < 5 * GiB and qlora.total < bf16.total < fp32.total
    assert estimate_training(llama, base_dtype="bf16", gradient_checkpointing=True, **common).total < 20 * GiB


def test_generation_estimates() -> None:
    llama = ModelShape.from_config(KNOWN_MODELS["huggyllama/llama-7b"])
    lora: dict[str, Any] = {"lora_r": 8, "lora_targets": ["q_proj", "v_proj"]}
    hf = estimate_generation(llama, backend="hf", dtype="bf16", batch_size=64, max_tokens=384, n_adapters=21, **lora)
    assert hf.parts["kv cache"] == 64 * 384 * 512 * 1024  # 12 GiB
    assert hf.parts["adapters"] == 21 * 4_194_304 * 4
    vllm = estimate_generation(llama, backend="vllm", dtype="bf16", batch_size=64, max_tokens=384, n_adapters=21,
                               tensor_parallel_size=2, gpu_memory_utilization=0.5, device_memory=80 * GiB,
                               **lora)  # fmt: skip
    assert vllm.parts["weights"] == 6_738_415_616 and vllm.total == 40 * GiB  # what vLLM takes: its share
    too_small = estimate_generation(llama, backend="vllm", dtype="bf16", batch_size=1, max_tokens=1, n_adapters=1,
                                    gpu_memory_utilization=0.9, device_memory=8 * GiB, **lora)  # fmt: skip
    assert too_small.total > 0.9 * 8 * GiB  # the weights alone do not fit


def test_model_shape_sources(tmp_path: Path, tiny_model: Path) -> None:
    shape, source = model_shape(str(tiny_model))
    assert shape.num_layers == 2 and source.endswith("config.json")
    shape, source = model_shape("huggyllama/llama-7b", {"hidden_size": 64, "num_hidden_layers": 1,
                                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 10})  # fmt: skip
    assert shape.hidden_size == 64 and "model_shape" in source
    with pytest.raises(SafedoseError, match="no num_hidden_layers"):
        model_shape("x/y", {"hidden_size": 64})
    with pytest.raises(SafedoseError, match="not a known architecture; set model_shape"):
        model_shape("nobody/no-such-model")


def test_sizes() -> None:
    assert parse_size("80GiB") == 80 * GiB == parse_size("80G") == parse_size("81920 MiB")
    assert parse_size("80GB") == 80 * 10**9 and parse_size("1.5GiB") == int(1.5 * GiB) and parse_size("100") == 100
    with pytest.raises(SafedoseError, match="give a size such as 80GiB"):
        parse_size("lots")


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and an empty HF cache: nothing of the paper's model is on this machine."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_paper_config_dry_run_offline(cli, offline_hub: None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = f"output_dir={tmp_path / 'paper'}"
    result = cli("sweep", PAPER, run, "--dry-run", "--device-memory", "80GiB")
    assert result.code == 0, result.err
    assert "memory per device" in result.out and "6.74B parameters" in result.out
    assert "the table of known architectures" in result.out and "no\n" not in result.out
    assert "executor: ray (Ray started on this machine); a training task asks 8 CPUs and 1 GPUs" in result.out
    assert not (tmp_path / "paper").exists()  # a dry run writes nothing
    small = cli("sweep", PAPER, run, "--dry-run", "--device-memory", "12GiB")
    assert small.code == 0 and "warning:" in small.out and "more than the 12.0 GiB" in small.out
    strict = cli("sweep", PAPER, run, "--dry-run", "--device-memory", "12GiB", "--strict")
    assert strict.code == 2 and strict.err.startswith("error: --strict:") and len(strict.err.strip().splitlines()) == 1
    shared = cli("sweep", PAPER, run, "ray.train.num_gpus=0.5", "--dry-run", "--device-memory", "24GiB")
    assert shared.code == 0 and "train x2 (ray.train.num_gpus 0.5)" in shared.out
    assert "warning:[/]" not in shared.out and "warning: train x2" in shared.out  # two cells on a 24 GiB GPU do not fit
    bad = cli("sweep", PAPER, run, "vllm.gpu_memory_utilization=1.5", "--dry-run")
    assert bad.code == 2 and "vllm.gpu_memory_utilization" in bad.err


def test_paper_configs_say_what_ran_on_a_gpu() -> None:
    for name in ("paper-llama7b.yaml", "paper-llama7b-sweep.yaml"):
        text = (PAPER.parent / name).read_text()
        assert "Run on a GPU: nothing" in text and "Unverified" in text, name
    config = yaml.safe_load(PAPER.read_text())
    assert config["train"]["base_dtype"] == "bf16" and config["train"]["gradient_checkpointing"] is True
    assert config["executor"] == "ray" and config["ray"]["train"]["num_gpus"] == 1
    assert config["backend"] == "vllm" and set(config["vllm"]) == {"tensor_parallel_size", "gpu_memory_utilization",
                                                                   "max_model_len", "max_loras"}  # fmt: skip
