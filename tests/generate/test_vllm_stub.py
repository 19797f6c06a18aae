"""The vllm backend against a stub `vllm` module: what it passes to the engine (unverified on a real GPU)."""

import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from transformers import AutoTokenizer

from safedose.data import EvalPrompt
from safedose.errors import SafedoseError
from safedose.generate import Decoding, generate
from safedose.generate._vllm import VllmSettings, prompt_ids
from safedose.templates import render_prompt

PROMPTS = [EvalPrompt(id=f"p{i}", eval_set="s", prompt=f"Name colour {i}") for i in range(3)]


class Engine:
    """Records every call the backend makes."""

    calls: ClassVar[list[tuple[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        Engine.calls.append(("LLM", kwargs))

    def generate(self, prompts: list[dict[str, Any]], params: Any, lora_request: Any = None) -> list[Any]:
        Engine.calls.append(("generate", (prompts, params, lora_request)))
        out = types.SimpleNamespace(text="red <stop> blue", token_ids=[5, 6, 7])
        return [types.SimpleNamespace(outputs=[out]) for _ in prompts]


@pytest.fixture
def stub_vllm(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """`vllm`, `vllm.lora.request` and `vllm.distributed.parallel_state` as plain recorders."""
    Engine.calls = []
    vllm = types.ModuleType("vllm")
    vllm.LLM = Engine  # type: ignore[attr-defined]
    vllm.SamplingParams = lambda **kw: ("SamplingParams", kw)  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda *args: ("LoRARequest", args)  # type: ignore[attr-defined]
    state = types.ModuleType("vllm.distributed.parallel_state")
    state.destroy_model_parallel = lambda: Engine.calls.append(("destroy_model_parallel", None))  # type: ignore[attr-defined]
    state.destroy_distributed_environment = lambda: Engine.calls.append(("destroy_distributed_environment", None))  # type: ignore[attr-defined]
    for name, module in [("vllm", vllm), ("vllm.lora", types.ModuleType("vllm.lora")), ("vllm.lora.request", lora),
                         ("vllm.distributed", types.ModuleType("vllm.distributed")),
                         ("vllm.distributed.parallel_state", state)]:  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    return Engine.calls


def test_engine_settings_sampling_lora_requests_and_prompt_ids(
    stub_vllm: list[tuple[str, Any]], tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path
) -> None:
    settings = VllmSettings(tensor_parallel_size=2, gpu_memory_utilization=0.8, max_model_len=1024, max_loras=2)
    decoding = Decoding(max_new_tokens=7, dtype="bf16", stop=("<stop>",), seed=3)
    adapters = [f"a{i}={p}" for i, p in enumerate(tiny_adapters)]
    rows = generate(str(tiny_model), adapters, PROMPTS, template="alpaca", decoding=decoding, backend="vllm",
                    vllm=settings, cache=tmp_path / "c.sqlite", progress=False)  # fmt: skip
    kinds = [k for k, _ in stub_vllm]
    assert kinds == ["LLM", "generate", "generate", "generate", "destroy_model_parallel",
                     "destroy_distributed_environment"]  # fmt: skip
    assert stub_vllm[0][1] == {
        "model": str(tiny_model), "tokenizer": str(tiny_model), "dtype": "bfloat16", "enable_lora": True,
        "max_loras": 2, "max_lora_rank": 8, "seed": 3, "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8,
        "max_model_len": 1024,
    }  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tiny_model)
    expected = [tok(render_prompt("alpaca", p.prompt, "", tok))["input_ids"] for p in PROMPTS]
    for (_, (prompts, params, lora)), variant in zip(stub_vllm[1:4], [None, 0, 1], strict=True):
        assert prompts == [{"prompt_token_ids": ids} for ids in expected]
        assert params == ("SamplingParams", {"max_tokens": 7, "temperature": 0.0, "top_p": 1.0, "seed": 3,
                                             "stop": ["<stop>"]})  # fmt: skip
        assert lora == (None if variant is None else ("LoRARequest", (f"a{variant}", variant + 1,
                                                                      str(tiny_adapters[variant]))))  # fmt: skip
    assert [r.response for r in rows] == ["red"] * 9 and {r.n_tokens for r in rows} == {3}
    # everything cached: the engine is not started again
    again = generate(str(tiny_model), adapters, PROMPTS, template="alpaca", decoding=decoding, backend="vllm",
                     vllm=settings, cache=tmp_path / "c.sqlite", progress=False)  # fmt: skip
    assert again == rows and len(stub_vllm) == 6


def _bos_tokenizer(tiny_model: Path, out: Path) -> Path:
    """The tiny model with a tokenizer that adds BOS (`<|im_start|>`, as LLaMA's adds `<s>`)."""
    from tokenizers.processors import TemplateProcessing

    tok = AutoTokenizer.from_pretrained(tiny_model)
    bos = tok.bos_token
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)])
    out.mkdir()
    for f in tiny_model.iterdir():
        if not f.name.startswith("tokenizer"):
            (out / f.name).symlink_to(f)
    tok.save_pretrained(out)
    assert AutoTokenizer.from_pretrained(out)("hi")["input_ids"][0] == tok.bos_token_id
    return out


def test_chat_template_prompts_get_one_bos(stub_vllm: list[tuple[str, Any]], tiny_model: Path, tmp_path: Path) -> None:
    model = _bos_tokenizer(tiny_model, tmp_path / "bos-model")
    tok = AutoTokenizer.from_pretrained(model)
    bos = tok.bos_token_id
    chat = render_prompt("chat", "Name a colour", "", tok)
    assert chat.startswith(tok.bos_token)
    assert tok(chat)["input_ids"][:2] == [bos, bos]  # what vLLM's default tokenization of the text would give
    assert prompt_ids(tok, chat, True)[:2] != [bos, bos] and prompt_ids(tok, chat, True)[0] == bos
    alpaca = render_prompt("alpaca", "Name a colour", "", tok)
    assert prompt_ids(tok, alpaca, True) == tok(alpaca)["input_ids"] and tok(alpaca)["input_ids"][0] == bos

    generate(str(model), [], PROMPTS[:1], template="chat", backend="vllm", cache=None, progress=False)
    (_, (prompts, _, lora)) = next(c for c in stub_vllm if c[0] == "generate")
    ids = prompts[0]["prompt_token_ids"]
    assert ids == tok(render_prompt("chat", PROMPTS[0].prompt, "", tok), add_special_tokens=False)["input_ids"]
    assert ids[0] == bos and ids[1] != bos and lora is None
    assert next(kw for k, kw in stub_vllm if k == "LLM")["enable_lora"] is False


def test_without_vllm_one_line_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(SafedoseError, match=r"^backend 'vllm' needs the vllm package on a CUDA machine: pip install"):
        generate(str(tiny_model), [], PROMPTS[:1], template="alpaca", backend="vllm", cache=None, progress=False)


def test_served_adapters_are_addressed_by_name(tiny_model: Path, tiny_adapters: list[Path], tmp_path: Path) -> None:
    from safedose.generate import OpenAISettings
    from tests.conftest import json_endpoint

    seen: list[dict[str, Any]] = []

    def respond(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        seen.append({"path": path, **body})
        return 200, {"choices": [{"text": "ok"}], "usage": {"completion_tokens": 1}}

    with json_endpoint(respond) as url:
        settings = OpenAISettings(base_url=url, mode="completions", names={"a1": "lora-one", "base-model": "llama"})
        rows = generate("base-model", [f"a0={tiny_adapters[0]}", f"a1={tiny_adapters[1]}"], PROMPTS[:1],
                        template="alpaca", backend="openai", openai=settings, cache=None, progress=False)  # fmt: skip
    assert sorted(b["model"] for b in seen) == ["a0", "llama", "lora-one"]
    assert {b["path"] for b in seen} == {"/v1/completions"}
    assert {b["prompt"] for b in seen} == {render_prompt("alpaca", PROMPTS[0].prompt, "", None)}
    assert [r.adapter for r in rows] == [None, "a0", "a1"]
    assert json.loads(json.dumps([r.response for r in rows])) == ["ok"] * 3
