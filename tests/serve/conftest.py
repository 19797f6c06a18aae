import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from safedose.models import model_hash


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two randomly initialised LoRA adapters on the tiny model, with the manifest the trainer writes."""
    out = tmp_path_factory.mktemp("adapters")
    paths = []
    for i, targets in enumerate((["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"])):
        torch.manual_seed(100 + i)
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        config = LoraConfig(r=4, lora_alpha=32, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
        path = out / f"adapter{i}"
        get_peft_model(base, config).save_pretrained(path)
        manifest = {"template": "alpaca", "base_model_hash": model_hash(tiny_model)}
        (path / "safedose.json").write_text(json.dumps(manifest))
        paths.append(path)
    return paths
