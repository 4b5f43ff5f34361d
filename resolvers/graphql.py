"""The GraphQL edge: thin resolvers over the services, and the error codes of API.md.

They return plain service data; `schema/` wraps it in its types. Every project error
becomes a GraphQL error with `extensions.code`; anything else is logged and reported
as an internal error, without details.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import strawberry
from cross_web import HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from graphql.error import GraphQLSyntaxError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult

from resolvers.context import Context
from resolvers.errors import ChatError, RateLimited, as_chat_error
from resolvers.history import StoredMessage, TurnPair
from resolvers.services import bearer_token
from resolvers.sessions import SessionInfo, SessionPage
from resolvers.turn import TurnEvent

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

Info = strawberry.Info[Context]


def to_graphql_error(exc: BaseException) -> GraphQLError:
    error = as_chat_error(exc)
    if error is None:
        # One line, no traceback (it can name internal paths); details at DEBUG.
        logger.error("unexpected %s in a GraphQL resolver", type(exc).__name__)
        logger.debug("details", exc_info=exc)
        error = ChatError("internal error")
    extensions: dict[str, object] = {"code": error.code}
    if isinstance(error, RateLimited):
        extensions["retryAfter"] = error.retry_after
    return GraphQLError(error.message, extensions=extensions)


def graphql_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Report the project's errors with their `extensions.code`."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except GraphQLError:
            raise
        except Exception as exc:
            raise to_graphql_error(exc) from None

    return wrapper


def _admin_token(info: Info) -> str | None:
    context = info.context
    if context.admin_token is not None:
        return context.admin_token
    # Over WebSocket the token may come in the connection_init payload instead.
    params: Any = context.connection_params
    if isinstance(params, dict):
        for key in ("Authorization", "authorization"):
            value = params.get(key)
            if isinstance(value, str):
                return bearer_token(value) or value
        token = params.get("adminToken")
        return token if isinstance(token, str) else None
    return None


@graphql_errors
async def sessions_page(info: Info, first: int, after: str | None) -> SessionPage:
    services = info.context.services
    services.check_admin(_admin_token(info))
    return await services.sessions.page(first=first, after=after)


@graphql_errors
async def session(info: Info, session_id: str) -> SessionInfo | None:
    return await info.context.services.sessions.get(session_id)


@graphql_errors
async def session_prompt(info: Info, session_id: str) -> str | None:
    return await info.context.services.sessions.system_prompt(session_id)


@graphql_errors
async def history(info: Info, session_id: str) -> list[TurnPair]:
    return await info.context.services.sessions.turns(session_id)


@graphql_errors
async def session_messages(info: Info, session_id: str, last: int | None) -> list[StoredMessage]:
    return await info.context.services.sessions.messages(session_id, last=last)


@graphql_errors
async def create_session(info: Info, title: str | None, system_prompt: str | None) -> SessionInfo:
    return await info.context.services.sessions.create(title=title, system_prompt=system_prompt)


@graphql_errors
async def send_message(info: Info, session_id: str, message: str) -> StoredMessage:
    context = info.context
    turn = await context.services.turns.start(
        session_id=session_id, message=message, client=context.client
    )
    return await turn.reply()


@graphql_errors
async def delete_session(info: Info, session_id: str) -> bool:
    return await info.context.services.sessions.delete(session_id)


async def chat(info: Info, session_id: str, message: str) -> AsyncGenerator[TurnEvent, None]:
    """The turn's events; errors before or during the stream carry their code."""
    try:
        context = info.context
        turn = await context.services.turns.start(
            session_id=session_id, message=message, client=context.client
        )
        async for event in turn.events():
            yield event
    except GraphQLError:
        raise
    except Exception as exc:
        raise to_graphql_error(exc) from None


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

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        request_data = kwargs.get("request_data")
        if isinstance(request_data, GraphQLRequestData) and _is_subscription(
            request_data.query, request_data.operation_name, self.max_tokens
        ):
            error = GraphQLError(
                "subscriptions run over WebSocket (graphql-transport-ws or graphql-ws) at /graphql",
                extensions={"code": "BAD_USER_INPUT"},
            )
            return ExecutionResult(data=None, errors=[error])
        result: ExecutionResult = await super().execute_single(*args, **kwargs)
        return result
