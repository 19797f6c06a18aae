"""A sweep's generation backend settings: vLLM's engine, an OpenAI-compatible endpoint with adapters by name."""

from pathlib import Path

import pytest

from safedose.errors import SafedoseError
from safedose.generate._vllm import VllmSettings
from safedose.sweep import load_sweep_config
from safedose.sweep._recipe import _backend_settings

DEMO = Path(__file__).parents[2] / "configs" / "demo.yaml"


def test_vllm_settings_come_from_the_config() -> None:
    config = load_sweep_config(DEMO, ["backend=vllm", "vllm.tensor_parallel_size=2", "vllm.max_loras=3"])
    assert _backend_settings(config, "alpaca") == {"vllm": VllmSettings(tensor_parallel_size=2, max_loras=3)}
    assert _backend_settings(load_sweep_config(DEMO), "alpaca") == {}
    with pytest.raises(SafedoseError, match=r"vllm\.gpu_memory_utilization"):
        load_sweep_config(DEMO, ["vllm.gpu_memory_utilization=0"])
    with pytest.raises(SafedoseError, match=r"vllm\.bogus"):
        load_sweep_config(DEMO, ["vllm.bogus=1"])


def test_an_endpoint_gets_completions_for_the_tuning_template_and_chat_for_the_chat_template() -> None:
    config = load_sweep_config(DEMO, ["backend=openai", "openai.base_url=http://127.0.0.1:8000/v1",
                                      "openai.names={n0-s0-instruction: safety-n0}"])  # fmt: skip
    tuned = _backend_settings(config, "alpaca")["openai"]
    assert tuned.mode == "completions" and tuned.names == {"n0-s0-instruction": "safety-n0"}
    assert tuned.url() == "http://127.0.0.1:8000/v1"
    assert _backend_settings(config, "chat")["openai"].mode == "chat"
    assert config.openai.mode == "chat"  # the config's own settings are left as they are
