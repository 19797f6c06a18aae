"""An OpenAI-compatible server for a base model and its adapters."""

from safedose.serve._app import ChatRequest, CompletionRequest, RequestError, Server, create_app, serve

__all__ = ["ChatRequest", "CompletionRequest", "RequestError", "Server", "create_app", "serve"]
