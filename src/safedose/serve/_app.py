"""An OpenAI-compatible server for a base model and named LoRA adapters (FastAPI + uvicorn).

The `model` field of a request picks the adapter (or the base model by its own name). Requests that arrive together
with the same adapter and decoding settings are generated as one batch by a single worker thread, which owns the
model; streamed requests are generated one at a time with a token streamer.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safedose.errors import SafedoseError
from safedose.generate import (
    Adapter,
    Decoding,
    evaluated_dtype,
    fastest_request_dtype,
    generate_batch,
    generation_kwargs,
    load_adapter_info,
    load_model,
    load_tokenizer,
    use_variant,
)
from safedose.models import PRECISIONS, resolve_model
from safedose.templates import render_prompt


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, gt=0, le=8192)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1, description="only n=1 is supported")
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False

    def decoding(self, default_max_tokens: int) -> Decoding:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return Decoding(
            max_new_tokens=self.max_tokens or default_max_tokens, do_sample=self.temperature > 0,
            temperature=self.temperature or 1.0, top_p=self.top_p, seed=self.seed or 0, stop=tuple(stop),
        )  # fmt: skip


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(_Common):
    prompt: str | list[str]


class RequestError(Exception):
    """A request the server cannot serve: becomes an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def fold_system(model: str, template: str, messages: list[Message]) -> str:
    """One instruction from a single-turn template: each system message's text, a blank line, then the user turn."""
    turns = [m for m in messages if m.role != "system"]
    if len(turns) != 1 or turns[0].role != "user":
        raise RequestError(
            400, f"model {model!r} uses the '{template}' template: send exactly one user message (and any system ones)"
        )
    system = [m.content.strip() for m in messages if m.role == "system" and m.content.strip()]
    return "\n\n".join([*system, turns[0].content])


def serving_dtype(dtype: str | None, adapters: Sequence[Adapter]) -> tuple[str, str]:
    """The precision to serve in, and a line saying why and which one reproduces the study's answers.

    None: the precision the sweep answered these adapters in (their run's manifest): the model the report measured
    (in fp32 its very answers; bf16 answers also depend on the batch); else as `auto`. `auto`: the fastest for
    single requests (fp32 on CPUs; `fastest_request_dtype`).
    """
    if dtype is not None and dtype != "auto":
        if dtype not in PRECISIONS:
            raise SafedoseError(f"dtype {dtype!r}: choose auto, {', '.join(PRECISIONS)}")
        return dtype, ""
    studied = {a.name: d for a in adapters if (d := evaluated_dtype(a))}
    fast = fastest_request_dtype()
    if dtype is None and len(set(studied.values())) == 1:
        (chosen,) = set(studied.values())
        if chosen == "fp32":
            return chosen, "dtype fp32, as the study answered: greedy answers are the report's"
        faster = f"; --dtype auto is faster here ({fast}), with more answers differing" if chosen != fast else ""
        note = f"dtype {chosen}, as the study answered ({chosen} answers also depend on the batch: some differ)"
        return chosen, note + faster
    if len(set(studied.values())) > 1:
        listed = ", ".join(f"{n} {d}" for n, d in studied.items())
        return fast, f"dtype {fast}: the adapters were evaluated in different precisions ({listed})"
    other = sorted(set(studied.values()) - {fast})
    if other:
        return fast, f"dtype {fast} (fastest here); the study answered in {other[0]}: --dtype {other[0]} is closer"
    return fast, f"dtype {fast}"


@dataclass
class _Work:
    variant: str | None
    texts: list[str]
    decoding: Decoding
    add_special_tokens: bool
    future: Future[list[dict[str, Any]]] = field(default_factory=Future)
    stream: queue.Queue[str | None] | None = None


class Server:
    """The loaded model, its adapters, and the worker thread that batches requests onto it."""

    def __init__(
        self,
        model: str,
        adapters: Sequence[str | Path] = (),
        *,
        template: str | None = None,
        dtype: str | None = None,
        max_batch_size: int = 16,
        max_tokens: int = 256,
        name: str | None = None,
    ) -> None:
        """`dtype` None: the precision the study evaluated the adapters in, else `auto` (see `serving_dtype`)."""
        model_dir = resolve_model(model)
        self.name = name or model
        self.adapters: dict[str, Adapter] = {}
        for spec in adapters:
            info = load_adapter_info(spec)
            if info.name in self.adapters or info.name == self.name:
                raise SafedoseError(f"adapter name {info.name!r} is used twice; name adapters NAME=PATH")
            self.adapters[info.name] = info
        self.tokenizer = load_tokenizer(model_dir)
        default = "chat" if getattr(self.tokenizer, "chat_template", None) else "alpaca"
        self.templates = {self.name: template or default}
        self.templates.update({n: a.template or template or default for n, a in self.adapters.items()})
        self.dtype, self.dtype_note = serving_dtype(dtype, list(self.adapters.values()))
        self.model = load_model(model_dir, list(self.adapters.values()), self.dtype)
        self.max_batch_size, self.max_tokens = max_batch_size, max_tokens
        self._queue: queue.Queue[_Work] = queue.Queue()
        threading.Thread(target=self._worker, daemon=True, name="safedose-generate").start()

    # Requests → work.

    def variant(self, model: str) -> str | None:
        if model == self.name:
            return None
        if model in self.adapters:
            return model
        known = ", ".join([self.name, *self.adapters])
        raise RequestError(404, f"model {model!r} is not served here; available: {known}", "model_not_found")

    def chat_prompt(self, model: str, messages: list[Message]) -> str:
        """The prompt text: the chat template over all turns, or one instruction for the Alpaca template."""
        template = self.templates[model]
        if template == "chat":
            turns = [m.model_dump() for m in messages]
            return str(self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
        return render_prompt(template, fold_system(model, template, messages), "", self.tokenizer)

    def submit(self, model: str, texts: list[str], decoding: Decoding, *, stream: bool, raw: bool) -> _Work:
        template = self.templates[model]
        add_special = raw or template != "chat"
        work = _Work(self.variant(model), texts, decoding, add_special, stream=queue.Queue() if stream else None)
        self._queue.put(work)
        return work

    # The worker: the only thread that touches the model.

    def _worker(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            time.sleep(0.005)  # let requests that arrive together join the batch
            pending: list[_Work] = []
            while not self._queue.empty():
                other = self._queue.get()
                same = (other.variant, other.decoding, other.add_special_tokens, other.stream is None)
                if (
                    same == (first.variant, first.decoding, first.add_special_tokens, first.stream is None)
                    and sum(len(w.texts) for w in batch) < self.max_batch_size
                ):
                    batch.append(other)
                else:
                    pending.append(other)
            for w in pending:
                self._queue.put(w)
            try:
                if first.stream is not None:
                    for w in batch:
                        self._stream(w)
                else:
                    self._run(batch)
            except Exception as e:  # reported to the waiting requests, the worker lives on
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(e)
                    if w.stream is not None:
                        w.stream.put(None)

    def _run(self, batch: list[_Work]) -> None:
        first = batch[0]
        texts = [t for w in batch for t in w.texts]
        with use_variant(self.model, first.variant):
            results = generate_batch(
                self.model, self.tokenizer, texts, first.decoding, add_special_tokens=first.add_special_tokens
            )
        for w in batch:
            w.future.set_result(results[: len(w.texts)])
            results = results[len(w.texts) :]

    def _stream(self, work: _Work) -> None:
        import torch
        from transformers import TextIteratorStreamer

        assert work.stream is not None
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        enc = self.tokenizer(work.texts, return_tensors="pt", add_special_tokens=work.add_special_tokens)
        d = work.decoding
        kwargs = {**generation_kwargs(self.model, self.tokenizer, d), "streamer": streamer}
        done = threading.Event()

        def pump() -> None:
            text = ""
            for piece in streamer:
                cut = min((i for i in (f"{text}{piece}".find(s) for s in d.stop) if i >= 0), default=-1)
                if cut >= 0:
                    if cut > len(text):
                        work.stream.put(f"{text}{piece}"[len(text) : cut])  # type: ignore[union-attr]
                    break
                text += piece
                if piece:
                    work.stream.put(piece)  # type: ignore[union-attr]
            done.set()

        threading.Thread(target=pump, daemon=True).start()
        with use_variant(self.model, work.variant), torch.inference_mode():
            self.model.generate(**enc.to(self.model.device), **kwargs)
        done.wait(timeout=60)
        work.stream.put(None)


def create_app(server: Server) -> Any:
    """The FastAPI application for a loaded `Server`."""
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="safedose", description="OpenAI-compatible endpoints for a base model and its adapters")

    def error(status: int, message: str, code: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": code}}, status)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, exc.message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return error(400, f"{where}: {first['msg']}", "invalid_request")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = [server.name, *server.adapters]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "safedose"}
                                           for n in names]}  # fmt: skip

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> Any:
        server.variant(body.model)
        text = server.chat_prompt(body.model, body.messages)
        return await _respond(body, [text], chat=True, raw=False)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Any:
        server.variant(body.model)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts or (body.stream and len(texts) != 1):
            raise RequestError(400, "prompt: give one prompt (or a non-empty list without stream)")
        return await _respond(body, texts, chat=False, raw=True)

    async def _respond(body: _Common, texts: list[str], *, chat: bool, raw: bool) -> Any:
        decoding = body.decoding(server.max_tokens)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        work = server.submit(body.model, texts, decoding, stream=body.stream, raw=raw)
        if body.stream:
            return StreamingResponse(_sse(work, ident, created, body.model, chat), media_type="text/event-stream")
        results = await asyncio.wrap_future(work.future)
        prompt_tokens = sum(len(server.tokenizer(t)["input_ids"]) for t in texts)
        completion_tokens = sum(int(r["n_tokens"]) for r in results)
        choices = []
        for i, r in enumerate(results):
            reason = "length" if r["n_tokens"] >= decoding.max_new_tokens else "stop"
            content = {"message": {"role": "assistant", "content": r["response"]}} if chat else {"text": r["response"]}
            choices.append({"index": i, **content, "finish_reason": reason})
        return {
            "id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
            "model": body.model, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }  # fmt: skip

    def _sse(work: _Work, ident: str, created: int, model: str, chat: bool) -> Iterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(piece: str | None, finish: str | None, first: bool = False) -> str:
            if chat:
                delta: dict[str, str] = {"role": "assistant"} if first else {}
                if piece is not None:
                    delta["content"] = piece
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": finish}
            data = {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        assert work.stream is not None
        if chat:
            yield chunk(None, None, first=True)
        while (piece := work.stream.get()) is not None:
            yield chunk(piece, None)
        yield chunk(None, "stop")
        yield "data: [DONE]\n\n"

    return app


def serve(
    model: str,
    adapters: Sequence[str | Path] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    template: str | None = None,
    dtype: str | None = None,
    max_batch_size: int = 16,
    max_tokens: int = 256,
) -> None:
    """Load the model and serve it until interrupted; `dtype` as for `Server`."""
    import uvicorn

    server = Server(model, adapters, template=template, dtype=dtype, max_batch_size=max_batch_size,
                    max_tokens=max_tokens)  # fmt: skip
    print(f"serving {', '.join([server.name, *server.adapters])} on http://{host}:{port}/v1", flush=True)
    print(server.dtype_note, flush=True)
    uvicorn.run(create_app(server), host=host, port=port, log_level="warning")
