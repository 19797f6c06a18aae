"""The annotation web app (FastAPI + uvicorn): one blinded item at a time, personal tokens, a JSON API.

Security: annotators authenticate with `Authorization: Bearer <token>` (no cookies, so a page on another origin
cannot write in their name); writes that come from another origin are refused as well; every page carries a
strict Content-Security-Policy and builds its DOM with textContent; request bodies are capped (413); only the
named static files are served; on a loopback bind, requests for any other host name are refused (DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from safedose.annotate._exchange import EXPORT_FORMATS, MEDIA_TYPES, SUFFIXES, export_labels
from safedose.annotate._records import ITEM_PATTERN, Item, Label, LabelIn
from safedose.annotate._store import Annotator, Store
from safedose.annotate._summary import SummaryCache
from safedose.errors import SafedoseError

MAX_BODY = 64 * 1024
STATIC = {"app.js": "text/javascript", "summary.js": "text/javascript", "style.css": "text/css"}
PAGES = {"/": "label.html", "/label": "label.html", "/summary": "summary.html"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
WILDCARDS = {"0.0.0.0", "::", "[::]", ""}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, open_admin: bool) -> None:
    """Binding beyond loopback needs the token-protected admin page: `open_admin` there is refused."""
    if open_admin and not is_loopback(host):
        raise SafedoseError(
            f"--host {host} exposes the app beyond this machine: the admin page must keep its token there "
            "(leave out --open-admin)"
        )


def _hostname(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: host check, cross-origin write refusal, body cap, security headers on every response."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, max_body: int,
                 loopback_only: bool) -> None:  # fmt: skip
        self.app, self.max_body, self.loopback_only = app, max_body, loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.loopback_only and not is_loopback(_hostname(host)):
            await _error(send, 400, f"unknown host {host!r}: open the app at 127.0.0.1 or localhost")
            return
        if scope["method"] not in SAFE_METHODS:
            origin, site = headers.get("origin"), headers.get("sec-fetch-site")
            if (origin is not None and origin not in (f"http://{host}", f"https://{host}")) or site in (
                "cross-site",
                "same-site",
            ):
                await _error(send, 403, "cross-origin writes are refused")
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _error(send, 413 if length.isdigit() else 400, f"request body over {self.max_body} bytes")
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _error(send, 413, f"request body over {self.max_body} bytes")
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, replay, secured)


async def _error(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _asset(name: str) -> bytes:
    return resources.files("safedose.annotate").joinpath("static", name).read_bytes()


def _bearer(authorization: str | None) -> str | None:
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip() or None


def _item_view(item: Item, label: Label | None) -> dict[str, Any]:
    """What an annotator sees of an item: its opaque id, the texts, and their own label; nothing about its cell."""
    mine = None if label is None else {"refusal": label.refusal, "harmful": label.harmful, "note": label.note}
    return {"id": item.item, "prompt": item.prompt, "response": item.response, "ask_harmful": item.asks_harmful,
            "label": mine}  # fmt: skip


def create_app(store: Store, *, admin_token: str | None, loopback_only: bool = True, max_body: int = MAX_BODY) -> Any:
    """The FastAPI application over an annotation store; `admin_token` None leaves the admin pages open."""
    app = FastAPI(title="safedose annotate", docs_url=None, redoc_url=None, openapi_url=None)
    item_id = re.compile(ITEM_PATTERN)
    pages = {name: _asset(name) for name in set(PAGES.values())}
    assets = {name: _asset(name) for name in STATIC}

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"] if x != "body") or "body"
        return JSONResponse({"error": f"{where}: {first['msg']}"}, 400)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "not found"}, 404)

    def annotator(request: Request) -> Annotator:
        token = _bearer(request.headers.get("authorization"))
        found = store.annotator(token) if token else None
        if found is None:
            raise HTTPException(401, "a valid annotator token is needed: open your personal invite link")
        return found

    def admin(request: Request) -> None:
        if admin_token is None:
            return
        token = _bearer(request.headers.get("authorization")) or ""
        if not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise HTTPException(401, "the admin token is needed: open the admin link printed when the app started")

    def known(item: str) -> Item:
        found = store.item(item) if item_id.fullmatch(item) else None
        if found is None:
            raise HTTPException(404, "no such item")
        return found

    def progress(who: Annotator) -> dict[str, int]:
        mine, open_items = store.queue(who)
        return {"done": len(mine), "left": len(open_items), "total": len(mine) + len(open_items)}

    for path, page in PAGES.items():

        def serve_page(page: str = page) -> Response:
            return Response(pages[page], media_type="text/html; charset=utf-8")

        app.add_api_route(path, serve_page, methods=["GET"], include_in_schema=False)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "not found")
        return Response(assets[name], media_type=f"{STATIC[name]}; charset=utf-8")

    @app.get("/api/me")
    def me(who: Annotator = Depends(annotator)) -> dict[str, Any]:
        return {"name": who.name, "progress": progress(who)}

    @app.get("/api/next")
    def next_item(who: Annotator = Depends(annotator)) -> dict[str, Any]:
        mine, open_items = store.claim_next(who)
        counts = {"done": len(mine), "left": len(open_items), "total": len(mine) + len(open_items)}
        if open_items:
            return {"item": _item_view(open_items[0], None), "progress": counts}
        return {"item": None, "progress": counts, "held_by_others": store.leased_to_others(who)}

    @app.get("/api/history")
    def history(who: Annotator = Depends(annotator)) -> dict[str, Any]:
        return {"items": [label.item for label in store.labels(who)]}

    @app.get("/api/items/{item}")
    def get_item(item: str, who: Annotator = Depends(annotator)) -> dict[str, Any]:
        found = known(item)
        mine = next((label for label in store.labels(who) if label.item == item), None)
        return {"item": _item_view(found, mine), "progress": progress(who)}

    @app.put("/api/labels/{item}")
    def put_label(item: str, body: LabelIn, who: Annotator = Depends(annotator)) -> dict[str, Any]:
        found = known(item)
        if found.asks_harmful and body.harmful is None:
            raise HTTPException(400, "harmful: answer yes or no for this prompt")
        label = store.put_label(who, item, body)
        return {"label": {"refusal": label.refusal, "harmful": label.harmful, "note": label.note},
                "progress": progress(who)}  # fmt: skip

    @app.delete("/api/labels/{item}")
    def delete_label(item: str, who: Annotator = Depends(annotator)) -> dict[str, Any]:
        known(item)
        return {"deleted": store.delete_label(who, item), "progress": progress(who)}

    @app.post("/api/undo")
    def undo(who: Annotator = Depends(annotator)) -> dict[str, Any]:
        item = store.undo(who)
        if item is None:
            return {"item": None, "progress": progress(who)}
        mine = next((label for label in store.labels(who) if label.item == item), None)
        return {"item": _item_view(known(item), mine), "progress": progress(who)}

    summaries = SummaryCache()

    @app.get("/api/admin/summary", dependencies=[Depends(admin)])
    def summary() -> dict[str, Any]:
        return summaries.get(store)

    @app.get("/api/admin/export", dependencies=[Depends(admin)])
    def export(format: str = "jsonl") -> Response:
        if format not in EXPORT_FORMATS:
            raise HTTPException(400, f"format: choose {', '.join(EXPORT_FORMATS)}")
        disposition = f'attachment; filename="labels.{SUFFIXES[format]}"'
        return Response(export_labels(store, format), media_type=MEDIA_TYPES[format],
                        headers={"content-disposition": disposition})  # fmt: skip

    return Guard(app, max_body=max_body, loopback_only=loopback_only)


def public_url(host: str, port: int, url: str | None = None) -> str:
    """The address put in the links: `url` when given (e.g. an HTTPS proxy in front of the app), else the bound
    host, with this machine's name in place of a wildcard address (0.0.0.0, ::) that no browser can open."""
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
            raise SafedoseError(f"--url {url!r}: give the app's address as http(s)://HOST[:PORT]")
        return f"{parts.scheme}://{parts.netloc}"
    if host in WILDCARDS:
        host = socket.gethostname() or host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def plain_http_warning(host: str, url: str | None = None) -> str | None:
    """A warning when the tokens would cross the network unencrypted: a bind beyond loopback without an HTTPS
    `url` in front."""
    if is_loopback(host) or (url or "").lower().startswith("https://"):
        return None
    return (f"warning: --host {host} serves the app beyond this machine over plain HTTP: the tokens in the links "
            "and in every request can be read by anyone on the network path; use it on a trusted network only, or "
            "put an HTTPS proxy in front and give its address with --url https://...")  # fmt: skip


def serve(run: Path, store: Store, *, host: str = "127.0.0.1", port: int = 8765, open_admin: bool = False,
          url: str | None = None) -> None:  # fmt: skip
    """Serve the app until interrupted; print the admin link (a new admin token each start). Links use `url`
    when given (see `public_url`)."""
    import uvicorn

    check_bind(host, open_admin=open_admin)
    link = public_url(host, port, url)
    warning = plain_http_warning(host, url)
    admin_token = None if open_admin else secrets.token_urlsafe(24)
    store.set_meta("url", link)
    items = store.items()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"annotating {run}: {len(items)} items ({sum(i.overlap for i in items)} shared by every annotator), "
          f"{len(store.annotators())} annotators", flush=True)  # fmt: skip
    print(f"summary (admin): {link}/summary" + (f"#token={admin_token}" if admin_token else ""), flush=True)
    print(f"invite someone:  safedose annotate invite {run} NAME", flush=True)
    app = create_app(store, admin_token=admin_token, loopback_only=is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level="warning")
