"""Builds the app: `uvicorn main:app` serves GraphQL at /graphql, the REST aliases and the page."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from strawberry.http.websocket_origin import normalize_allowed_origins
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from resolvers import logs, pages, rest, shutdown
from resolvers.dependencies import get_context
from resolvers.logs import RequestIds
from resolvers.middleware import (
    AllowedHosts,
    BodyLimit,
    ClientAddress,
    ErrorShield,
    RedactQueryTokens,
    RequestLimits,
    TrustedProxies,
)
from resolvers.openapi import describe as describe_openapi
from resolvers.router import ChatGraphQLRouter
from resolvers.services import metrics
from resolvers.services.container import open_services
from resolvers.services.errors import ChatError
from resolvers.services.settings import Settings, get_settings
from schema import build_schema

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for `settings` (the environment's when None)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            shutdown.on_stop_signal(services.begin_shutdown)
            # Everything loaded so far (LangChain, the SDKs, the schema) lives as long as
            # the process: keep it out of the collector's full passes, which otherwise
            # stall every stream for 150 ms or more each time one runs.
            gc.collect()
            gc.freeze()
            metrics.forget_dead_processes()
            try:
                yield
            finally:
                metrics.process_ended(os.getpid())

    app = FastAPI(
        # No redirect from /path/ to /path: a decoded %2F must not turn into another URL.
        redirect_slashes=False,
        title="Chat session server",
        description="LLM chat sessions kept in Redis, replies streamed. GraphQL at /graphql.",
        version="0.1.0",
        lifespan=lifespan,
        # Served below, from this server's own copies of their scripts.
        docs_url=None,
        redoc_url=None,
    )
    graphql = ChatGraphQLRouter(
        build_schema(
            max_depth=settings.graphql_max_depth,
            max_aliases=settings.graphql_max_aliases,
            max_tokens=settings.graphql_max_tokens,
            introspection=settings.graphql_introspection,
            max_document_bytes=settings.max_request_bytes,
        ),
        context_getter=get_context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        graphql_ide="graphiql",
        connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
        max_subscriptions_per_connection=settings.ws_max_subscriptions,
    )
    graphql.max_tokens = settings.graphql_max_tokens
    # Pages on these origins may open the WebSocket too (same origin always may).
    graphql.allowed_origins = normalize_allowed_origins(settings.cors_origin_list)
    app.include_router(graphql, prefix="/graphql", include_in_schema=False)
    app.include_router(rest.router)
    # Added innermost first: the last one added sees a request first.
    app.add_middleware(ErrorShield)
    # A WebSocket message can carry a document too: never more than a request body.
    ws_max_bytes = min(settings.ws_max_message_bytes, settings.max_request_bytes)
    app.add_middleware(
        RequestLimits, ws_max_bytes=ws_max_bytes, ws_per_address=settings.ws_max_per_address
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "HEAD", "POST", "DELETE"],
            allow_headers=settings.cors_allow_header_list,
            # What a page's script may read of a response.
            expose_headers=["retry-after", "x-turn-id", "x-request-id"],
        )
    app.add_middleware(AllowedHosts, allowed=settings.allowed_host_list)
    app.add_middleware(ClientAddress, trusted=TrustedProxies(settings.forwarded_allow_list))
    # Outermost: every response, refusals included, carries the request's id.
    app.add_middleware(RequestIds)
    for error in (ChatError, RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(error, rest.chat_error_handler)
    app.add_exception_handler(RequestValidationError, rest.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, rest.http_error_handler)

    # GET and HEAD: monitors and link checkers ask with HEAD.
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return pages.swagger_ui(app.openapi_url or "/openapi.json", app.title)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return pages.redoc(app.openapi_url or "/openapi.json", app.title)

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon() -> FileResponse:
        # Browsers ask for it on every page (GraphiQL's and the API docs' too).
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe_openapi(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _configure_logging(level: str, fmt: str) -> None:
    logs.configure(level, fmt)
    logging.getLogger("uvicorn.access").addFilter(RedactQueryTokens())


def _app_from_environment() -> FastAPI:
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"invalid configuration: {problems}")
    _configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


app = _app_from_environment()
