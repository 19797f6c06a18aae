"""The `openai` backend: any OpenAI-compatible endpoint (hosted APIs, vLLM, `safedose serve`)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from safedose.errors import SafedoseError
from safedose.generate._jobs import Done, Job, truncate_at_stop
from safedose.generate._settings import Decoding

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAISettings(BaseModel):
    """Where the endpoint is and how to talk to it; URL and key default to OPENAI_BASE_URL / OPENAI_API_KEY."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key: str | None = None
    mode: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(8, gt=0)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    names: dict[str, str] = Field(
        default_factory=dict,
        description="the request's `model` field per variant (adapter name, or the base model); default: the name",
    )

    def url(self) -> str:
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    def headers(self) -> dict[str, str]:
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        return {"Authorization": f"Bearer {key}"} if key else {}


def post_json(client: Any, settings: OpenAISettings, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST with retries and exponential backoff on 429, 5xx, timeouts and dropped connections."""
    import httpx

    url = f"{settings.url()}{path}"
    for attempt in range(settings.max_retries + 1):
        last = attempt == settings.max_retries
        try:
            response = client.post(url, json=body, headers=settings.headers(), timeout=settings.timeout_s)
        except httpx.TransportError as e:
            if last:
                raise SafedoseError(f"{url}: {type(e).__name__}: {e}") from None
            time.sleep(min(0.5 * 2**attempt, 30))
            continue
        if response.status_code == 429 or response.status_code >= 500:
            if last:
                raise SafedoseError(
                    f"{url}: HTTP {response.status_code} after {attempt + 1} tries: {_detail(response)}"
                )
            retry_after = response.headers.get("retry-after", "")
            wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 0.5 * 2**attempt
            time.sleep(min(wait, 30))
            continue
        if response.status_code >= 400:
            raise SafedoseError(f"{url}: HTTP {response.status_code}: {_detail(response)}")
        try:
            data: dict[str, Any] = response.json()
        except ValueError:
            raise SafedoseError(f"{url}: the response is not JSON") from None
        return data
    raise AssertionError("unreachable")


def _detail(response: Any) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message", error) if isinstance(error, dict) else error)[:300]
    except ValueError:
        return str(response.text[:300])


def completion_body(
    model: str, text: str, decoding: Decoding, mode: str, *, system: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": decoding.max_new_tokens,
        "temperature": decoding.temperature if decoding.do_sample else 0.0,
        "top_p": decoding.top_p,
        "seed": decoding.seed,
    }
    if decoding.stop:
        body["stop"] = list(decoding.stop)
    if mode == "chat":
        first = [{"role": "system", "content": system}] if system is not None else []
        body["messages"] = [*first, {"role": "user", "content": text}]
    else:
        body["prompt"] = text
    return body


def run_openai(
    settings: OpenAISettings,
    model: str,
    jobs: Sequence[Job],
    decoding: Decoding,
    on_done: Done,
    *,
    progress: bool = True,
    labels: Mapping[str, str] | None = None,
    system: str | None = None,
) -> None:
    """Send every job with bounded concurrency; an adapter is chosen by the request's `model` field (its name, or
    `settings.names[name]`; the base model likewise).

    `system` (chat mode only) goes before every prompt as a system message.

    Every answer that arrives goes to `on_done` at once. After the first failed request no new request is sent;
    the ones in flight finish, then one SafedoseError names the failed jobs (by `labels[key]`, else the key).
    """
    import httpx
    from rich.progress import Progress

    if decoding.num_beams > 1:
        raise SafedoseError("backend 'openai': beam search is not part of the OpenAI API; use num_beams=1")
    path = "/chat/completions" if settings.mode == "chat" else "/completions"

    def one(client: httpx.Client, job: Job) -> dict[str, Any]:
        data = post_json(
            client, settings, path,
            completion_body(settings.names.get(job.variant or model, job.variant or model), job.text, decoding,
                            settings.mode, system=system),
        )  # fmt: skip
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if settings.mode == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise SafedoseError(f"{settings.url()}{path}: unexpected response shape: {str(data)[:200]}") from None
        tokens = (data.get("usage") or {}).get("completion_tokens")
        return {"response": truncate_at_stop(str(text or ""), decoding.stop), "n_tokens": tokens}

    failed: list[tuple[Job, str]] = []
    answered = 0
    with httpx.Client() as client, Progress(disable=not progress) as bar:
        task = bar.add_task("generate (openai)", total=len(jobs))
        pool = ThreadPoolExecutor(settings.concurrency)
        try:
            futures = {pool.submit(one, client, job): job for job in jobs}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                job = futures[future]
                try:
                    result = future.result()
                except (SafedoseError, httpx.HTTPError, httpx.InvalidURL) as e:
                    failed.append((job, f"{type(e).__name__}: {e}" if not isinstance(e, SafedoseError) else str(e)))
                    for other in futures:
                        other.cancel()
                    continue
                on_done({job.key: result})
                answered += 1
                bar.advance(task)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if failed:
        raise SafedoseError(_failure_message(failed, len(jobs), answered, labels or {}))


def _failure_message(failed: list[tuple[Job, str]], total: int, answered: int, labels: Mapping[str, str]) -> str:
    """One line: how many requests failed and which, the first error, and that a rerun resumes."""
    names = [labels.get(job.key, job.key[:16]) for job, _ in failed]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    first = " ".join(failed[0][1].split())
    unsent = total - answered - len(failed)
    return (
        f"backend 'openai': {len(failed)} of {total} prompts failed ({shown}; first error: {first}); {answered} "
        f"answered, {unsent} not sent; a rerun with the same cache sends only the prompts without an answer"
    )
