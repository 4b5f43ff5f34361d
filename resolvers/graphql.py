"""The GraphQL edge: thin resolvers over the services, and the error codes of the contract.

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
from graphql import GraphQLError
from strawberry.dataloader import DataLoader

from resolvers.context import Context
from resolvers.services import metrics
from resolvers.services.container import Services
from resolvers.services.errors import RateLimited, client_error
from resolvers.services.history import Exchange, StoredMessage, ToolCall, TurnStatus
from resolvers.services.identity import GuestToken, Identity
from resolvers.services.sessions import SessionInfo, SessionPage
from resolvers.services.shares import ShareInfo
from resolvers.services.turn_store import ActiveTurn
from resolvers.services.turnlog import TurnEvent, TurnFailed
from resolvers.services.window import ContextPlan

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

Info = strawberry.Info[Context]


def to_graphql_error(exc: BaseException) -> GraphQLError:
    error = client_error(exc, "in a GraphQL resolver")
    extensions: dict[str, object] = {"code": error.code}
    if isinstance(error, RateLimited) and error.retry_after is not None:
        extensions["retryAfter"] = error.retry_after
    if isinstance(error, TurnFailed):
        extensions["turnId"] = error.turn_id
        extensions["status"] = TurnStatus.FAILED.value
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


async def _who(info: Info) -> Identity:
    return await info.context.identity()


@graphql_errors
async def sessions_page(info: Info, first: int, after: str | None) -> SessionPage:
    # Open to all without ADMIN_TOKEN; still nobody sees another user's session.
    who = await _who(info)
    return await info.context.services.sessions.page(first=first, after=after, who=who)


@graphql_errors
async def viewer(info: Info) -> Identity:
    return await _who(info)


@graphql_errors
async def viewer_sessions(
    info: Info, who: Identity, first: int, after: str | None, archived: bool = False
) -> SessionPage:
    if who.user_id is None:
        return SessionPage(sessions=[], cursors=[], has_next=False, total=0)
    return await info.context.services.sessions.page(
        first=first, after=after, owner=who.user_id, listing="archived" if archived else "main"
    )


@graphql_errors
async def create_guest(info: Info) -> GuestToken:
    return await info.context.services.auth.issue_guest()


@graphql_errors
async def server_info(info: Info) -> Services:
    await _who(info)
    return info.context.services


@graphql_errors
async def session(info: Info, session_id: str) -> SessionInfo | None:
    return await info.context.services.sessions.get(session_id, who=await _who(info))


@graphql_errors
async def session_prompt(info: Info, session_id: str) -> str | None:
    sessions = info.context.services.sessions
    return await sessions.system_prompt(session_id, who=await _who(info))


@graphql_errors
async def history(info: Info, session_id: str) -> list[Exchange]:
    return await info.context.services.sessions.exchanges(session_id, who=await _who(info))


@graphql_errors
async def session_messages(info: Info, session_id: str, last: int | None) -> list[StoredMessage]:
    sessions = info.context.services.sessions
    return await sessions.messages(session_id, last=last, who=await _who(info))


@graphql_errors
async def pending_tool_calls(info: Info, session_id: str) -> tuple[ToolCall, ...]:
    sessions = info.context.services.sessions
    return await sessions.pending_tool_calls(session_id, who=await _who(info))


@graphql_errors
async def create_session(
    info: Info,
    title: str | None,
    system_prompt: str | None,
    pinned: bool | None = None,
    archived: bool | None = None,
) -> SessionInfo:
    return await info.context.services.create_session(
        who=await _who(info),
        client=info.context.client,
        title=title,
        system_prompt=system_prompt,
        pinned=bool(pinned),
        archived=bool(archived),
    )


@graphql_errors
async def send_message(info: Info, session_id: str, message: str) -> StoredMessage:
    context = info.context
    turn = await context.services.turns.start(
        session_id=session_id, message=message, client=context.client, who=await _who(info)
    )
    return await turn.reply()


@graphql_errors
async def delete_session(info: Info, session_id: str) -> bool:
    return await info.context.services.sessions.delete(session_id, who=await _who(info))


@graphql_errors
async def update_session(
    info: Info,
    session_id: str,
    title: str | None,
    system_prompt: str | None,
    pinned: bool | None = None,
    archived: bool | None = None,
) -> SessionInfo:
    return await info.context.services.conversations.update(
        session_id,
        title=title,
        system_prompt=system_prompt,
        who=await _who(info),
        pinned=pinned,
        archived=archived,
    )


@graphql_errors
async def rewind(info: Info, session_id: str, message_id: str) -> SessionInfo:
    conversations = info.context.services.conversations
    return await conversations.rewind(session_id, message_id, who=await _who(info))


@graphql_errors
async def switch_branch(info: Info, session_id: str, message_id: str) -> SessionInfo:
    conversations = info.context.services.conversations
    return await conversations.switch_branch(session_id, message_id, who=await _who(info))


async def siblings(info: Info, session_id: str, parent: str) -> list[str] | None:
    """All the children of `parent` when it has some off the active path, else None;
    the reads of one request are gathered into one per session (a page of messages
    costs one more round trip, whatever its length)."""
    loaders: dict[str, DataLoader[str, list[str] | None]] = info.context.sibling_loaders
    loader = loaders.get(session_id)
    if loader is None:
        conversations = info.context.services.conversations

        async def load(parents: list[str]) -> list[list[str] | None]:
            found = await conversations.siblings(session_id, parents)
            return [found.get(parent) for parent in parents]

        # No cache: a WebSocket's context lives as long as its connection.
        loader = loaders[session_id] = DataLoader(load_fn=load, cache=False)
    return await loader.load(parent)


@graphql_errors
async def messages_page(
    info: Info, session_id: str, last: int, before: str | None
) -> list[StoredMessage]:
    conversations = info.context.services.conversations
    return await conversations.page(session_id, last=last, before=before, who=await _who(info))


@graphql_errors
async def session_context(info: Info, session_id: str) -> ContextPlan:
    conversations = info.context.services.conversations
    return await conversations.context(session_id, who=await _who(info))


@graphql_errors
async def active_turn(info: Info, session_id: str) -> ActiveTurn | None:
    return await info.context.services.stores.turns.active_turn(session_id, who=await _who(info))


@graphql_errors
async def stop_turn(info: Info, session_id: str, turn_id: str | None) -> bool:
    return await info.context.services.turns.stop(session_id, turn_id, who=await _who(info))


# -- the conversation list: pins and share links ------------------------------------

# The caller's pinned sessions a viewer lists, at most.
MAX_PINNED = 100


@graphql_errors
async def viewer_pinned_sessions(info: Info, who: Identity) -> list[SessionInfo]:
    if who.user_id is None:
        return []
    sessions = info.context.services.sessions
    page = await sessions.page(first=MAX_PINNED, after=None, owner=who.user_id, listing="pinned")
    return page.sessions


@graphql_errors
async def share_session(info: Info, session_id: str) -> ShareInfo:
    return await info.context.services.shares.create(session_id, who=await _who(info))


@graphql_errors
async def revoke_share(info: Info, share_id: str) -> bool:
    return await info.context.services.shares.revoke(share_id, who=await _who(info))


@graphql_errors
async def session_shares(info: Info, session_id: str) -> list[ShareInfo]:
    return await info.context.services.shares.shares(session_id, who=await _who(info))


def share_url(info: Info, share_id: str) -> str:
    """The absolute url of the share's page, as the request reached this server."""
    return f"{info.context.base_url}s/{share_id}"


async def chat(
    info: Info,
    session_id: str,
    message: str,
    turn_id: str | None,
    *,
    regenerate: bool = False,
    edit: bool = False,
    at: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    results: list[dict[str, Any]] | None = None,
) -> AsyncGenerator[TurnEvent, None]:
    """The turn's events; errors before or during the stream carry their code. With
    `regenerate`, the turn runs the user message of the reply `at` (the last when None)
    again, beside that reply; with `edit`, `message` goes beside the user message `at`;
    with `results`, the turn answers the pending tool calls. `tools` are bound for the
    reply."""
    metrics.SUBSCRIPTIONS.inc()
    try:
        context = info.context
        turn = await context.services.turns.start(
            session_id=session_id,
            message=message,
            client=context.client,
            who=await context.identity(),
            turn_id=turn_id,
            regenerate=regenerate,
            edit=edit,
            at=at,
            tools=tools,
            results=results,
        )
        async for event in turn.events():
            yield event
    except GraphQLError:
        raise
    except Exception as exc:
        raise to_graphql_error(exc) from None
    finally:
        metrics.SUBSCRIPTIONS.dec()


async def follow_turn(
    info: Info, session_id: str, turn_id: str | None, after: int
) -> AsyncGenerator[TurnEvent, None]:
    """A turn's events after `after`, from whichever process runs it."""
    metrics.SUBSCRIPTIONS.inc()
    try:
        context = info.context
        turn = await context.services.turns.follow(
            session_id, turn_id, who=await context.identity(), after=after
        )
        async for event in turn.events(after=after):
            yield event
    except GraphQLError:
        raise
    except Exception as exc:
        raise to_graphql_error(exc) from None
    finally:
        metrics.SUBSCRIPTIONS.dec()
