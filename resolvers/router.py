"""Strawberry's GraphQL router, with two refusals of its own."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import orjson
from cross_web import HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from graphql.error import GraphQLSyntaxError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types import ExecutionResult

from resolvers import pages
from resolvers.context import Context
from resolvers.services.errors import RateLimited
from resolvers.services.persisted import is_query_hash, query_hash

logger = logging.getLogger(__name__)

# The code of a refused HTTP request, by status.
_HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


class HideStrawberryOriginHint(logging.Filter):
    """Drops Strawberry's own line about a refused WebSocket origin, which points at its
    `allowed_origins` argument; the router logs one that names CORS_ORIGINS."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Rejected WebSocket connection from origin")


logging.getLogger("strawberry.ws").addFilter(HideStrawberryOriginHint())


def _is_subscription(query: str | None, operation_name: str | None, max_tokens: int) -> bool:
    if not query or "subscription" not in query:
        return False
    try:
        operation = get_operation_ast(parse(query, max_tokens=max_tokens), operation_name)
    except GraphQLSyntaxError:
        return False  # the normal path reports the syntax error
    return operation is not None and operation.operation is OperationType.SUBSCRIPTION


class ChatGraphQLRouter(GraphQLRouter[Context, None]):
    """Strawberry's router, refusing subscriptions sent as plain HTTP requests.

    Strawberry would run them as queries and answer a confusing "Cannot return null";
    they belong on the WebSocket (or a multipart/SSE streaming request).
    """

    # The schema's token limit, for the look at an HTTP request's operation type.
    max_tokens = 2000

    @property
    def graphql_ide_html(self) -> str:
        # GraphiQL's scripts from this server, not unpkg: the page works offline.
        return pages.graphiql(super().graphql_ide_html)

    def should_render_graphql_ide(self, request: Any) -> bool:
        """GraphiQL for a browser's GET: also with `?query=` (a link to a query opens it
        in GraphiQL rather than running it); a client's GET runs the query."""
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return True
        return bool(super().should_render_graphql_ide(request))

    async def pick_websocket_subprotocol(self, request: Any) -> str | None:
        """graphql-transport-ws when the client offers it, whatever its order: the legacy
        graphql-ws runs only subscriptions here (Strawberry refuses its queries and
        mutations), and clients such as gql offer it first."""
        offered = list(request.scope.get("subprotocols") or [])
        for protocol in (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL):
            if protocol in offered and protocol in self.websocket_subprotocols:
                return protocol
        return None

    def is_websocket_origin_allowed(self, request: Any, origin: str) -> bool:
        if super().is_websocket_origin_allowed(request, origin):
            return True
        logger.warning(
            "WebSocket from the page origin %r refused (403): to let pages there connect, "
            "add it to CORS_ORIGINS (comma-separated origins, or *)",
            origin,
        )
        return False

    def encode_json(self, data: object) -> str:
        # Every response and every subscription event: orjson is several times faster
        # than json. What it refuses (a lone surrogate, an integer past 64 bits) goes
        # through json, as before.
        try:
            return orjson.dumps(data).decode()
        except TypeError:
            return json.dumps(data, separators=(",", ":"))

    def decode_json(self, data: str | bytes) -> object:
        # Every body and WebSocket message: JSON nested past the parser's depth (50,000
        # brackets) is JSON this server does not take, not an internal error.
        try:
            return super().decode_json(data)
        except RecursionError:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            raise json.JSONDecodeError("JSON nested too deeply", text[:100], 0) from None

    def parse_json(self, data: str | bytes) -> Any:
        # Strawberry assumes an object (or a batch list); a bare `true` or `1` in the
        # body, or bytes that are not UTF-8, would otherwise end in a 500.
        try:
            parsed = super().parse_json(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "The request body must be a JSON object")
        return parsed

    async def run(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """Strawberry's view, with its refusals of an HTTP request (a body that is not
        JSON, no query, a mutation over GET, an unsupported content type) answered as
        GraphQL clients read them: JSON with `errors` and a code, the status kept."""
        try:
            return await super().run(request, *args, **kwargs)
        except HTTPException as refused:
            if isinstance(request, WebSocket):
                raise
            code = _HTTP_CODES.get(refused.status_code, "BAD_REQUEST")
            body = {"errors": [{"message": refused.reason, "extensions": {"code": code}}]}
            return JSONResponse(body, status_code=refused.status_code)

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        request_data = kwargs.get("request_data")
        to_keep: str | None = None
        if isinstance(request_data, GraphQLRequestData) and request_data.extensions:
            persisted = request_data.extensions.get("persistedQuery")
            if persisted is not None:
                found = await _persisted_document(kwargs["context"], request_data, persisted)
                if isinstance(found, ExecutionResult):
                    return found
                if request_data.query:
                    to_keep = found  # kept once it has parsed and validated (below)
                kwargs["request_data"] = request_data = replace(request_data, query=found)
        if isinstance(request_data, GraphQLRequestData) and _is_subscription(
            request_data.query, request_data.operation_name, self.max_tokens
        ):
            error = GraphQLError(
                "subscriptions run over WebSocket (graphql-transport-ws or graphql-ws) at /graphql",
                extensions={"code": "BAD_USER_INPUT"},
            )
            return ExecutionResult(data=None, errors=[error])
        result: ExecutionResult = await super().execute_single(*args, **kwargs)
        if to_keep is not None and not any(_refused_document(e) for e in result.errors or []):
            await _keep_document(kwargs["context"], to_keep)
        return result


async def _persisted_document(
    context: Context, request: GraphQLRequestData, persisted: object
) -> str | ExecutionResult:
    """The document of an automatic persisted query (Apollo's protocol): the one sent,
    kept under its hash; or the one kept under the hash sent alone. A hash this server
    does not hold answers `PersistedQueryNotFound`, and the client sends the document.
    Redis unreachable: the hash is not found, and the document still runs when sent."""
    digest = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    if (
        not isinstance(persisted, dict)
        or persisted.get("version") != 1
        or not is_query_hash(digest)
    ):
        raise HTTPException(
            400, "persistedQuery needs version 1 and a sha256Hash of 64 lowercase hex digits"
        )
    assert isinstance(digest, str)
    queries = context.services.persisted
    if request.query:
        if query_hash(request.query) != digest:
            raise HTTPException(400, "provided sha does not match query")
        return request.query
    try:
        document = await queries.get(digest)
    except Exception as exc:
        logger.warning("persisted query not read: %s", type(exc).__name__)
        document = None
    if document is None:
        error = GraphQLError(
            "PersistedQueryNotFound", extensions={"code": "PERSISTED_QUERY_NOT_FOUND"}
        )
        return ExecutionResult(data=None, errors=[error])
    return document


# Errors that say the document itself is wrong (found before anything ran).
_DOCUMENT_CODES = ("GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED")


def _refused_document(error: GraphQLError) -> bool:
    code = (error.extensions or {}).get("code")
    return error.path is None and (code in _DOCUMENT_CODES or "larger than" in error.message)


async def _keep_document(context: Context, document: str) -> None:
    """Keep a persisted query's document, once it parsed and validated: counted against
    the caller's registrations a minute (past it, the document runs but is not kept)."""
    services = context.services
    try:
        await services.limiter.check_registration(context.client, await context.identity())
        await services.persisted.put(query_hash(document), document)
    except RateLimited:
        logger.info("persisted query not kept: the caller's registrations are spent")
    except Exception as exc:
        logger.warning("persisted query not kept: %s", type(exc).__name__)
