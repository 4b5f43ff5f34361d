"""The GraphQL schema of the contract (docs/api.md), from the types here and the resolvers
in `resolvers/`."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.error import GraphQLSyntaxError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from resolvers import graphql as resolve
from resolvers.permissions import IsAdmin
from schema.access import AnonymousIntrospection
from schema.documents import DocumentCache, document_extension
from schema.execution import EventExecutor
from schema.types import (
    ChatEvent,
    CreateSessionInput,
    GuestToken,
    Message,
    OutsideHistories,
    ServerInfo,
    Session,
    SessionConnection,
    Share,
    ToolInput,
    ToolResultInput,
    Turn,
    Viewer,
)

logger = logging.getLogger(__name__)


@strawberry.type
class Query:
    @strawberry.field(
        description="Admin: every session, most recently active first.",
        permission_classes=[IsAdmin],
    )
    async def sessions(
        self, info: resolve.Info, first: int = 50, after: str | None = None
    ) -> SessionConnection:
        return SessionConnection.of(await resolve.sessions_page(info, first, after))

    @strawberry.field(description="Who is asking, and their own sessions.")
    async def viewer(self, info: resolve.Info) -> Viewer:
        return Viewer.of(await resolve.viewer(info))

    @strawberry.field(description="null when there is no such session.")
    async def session(self, info: resolve.Info, id: strawberry.ID) -> Session | None:
        found = await resolve.session(info, str(id))
        return Session.of(found) if found else None

    @strawberry.field(
        description="The session's turns, oldest first (as GET /session/{id}/history)."
    )
    async def history(self, info: resolve.Info, session_id: strawberry.ID) -> list[Turn]:
        return [Turn.of(t) for t in await resolve.history(info, str(session_id))]

    @strawberry.field(description="The model in use and the server's limits.")
    async def server_info(self, info: resolve.Info) -> ServerInfo:
        services = await resolve.server_info(info)
        found = services.elsewhere
        return ServerInfo(
            model=services.model_name,
            admin_required=not services.admin_open,
            max_message_chars=services.settings.max_message_chars,
            outside_histories=(
                OutsideHistories(count=found.count, more=found.more, redis_url=found.redis_url)
                if found is not None
                else None
            ),
        )


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_session(
        self, info: resolve.Info, input: CreateSessionInput | None = None
    ) -> Session:
        title = input.title if input else None
        prompt = input.system_prompt if input else None
        pinned = input.pinned if input else None
        archived = input.archived if input else None
        return Session.of(await resolve.create_session(info, title, prompt, pinned, archived))

    @strawberry.mutation(description="One whole turn without streaming; returns the stored reply.")
    async def send_message(
        self, info: resolve.Info, session_id: strawberry.ID, message: str
    ) -> Message:
        return Message.of(
            await resolve.send_message(info, str(session_id), message), str(session_id)
        )

    @strawberry.mutation(description="false when there was no such session.")
    async def delete_session(self, info: resolve.Info, id: strawberry.ID) -> bool:
        return await resolve.delete_session(info, str(id))

    @strawberry.mutation(
        description=(
            "A token this server signs for a new random user id: a browser without "
            "accounts owns its sessions."
        )
    )
    async def create_guest(self, info: resolve.Info) -> GuestToken:
        return GuestToken.of(await resolve.create_guest(info))

    @strawberry.mutation(
        description=(
            "Changes the title and the system prompt (a field left null is unchanged; a "
            "blank title clears it, a blank prompt restores the default); the session."
        )
    )
    async def update_session(
        self, info: resolve.Info, id: strawberry.ID, input: CreateSessionInput
    ) -> Session:
        changed = await resolve.update_session(
            info, str(id), input.title, input.system_prompt, input.pinned, input.archived
        )
        return Session.of(changed)

    @strawberry.mutation(
        description=(
            "Forgets the message with this id and every later one (then send a new message "
            "to edit)."
        )
    )
    async def rewind(
        self, info: resolve.Info, session_id: strawberry.ID, message_id: strawberry.ID
    ) -> Session:
        return Session.of(await resolve.rewind(info, str(session_id), str(message_id)))

    @strawberry.mutation(
        description=(
            "Makes the path through this message active (down its most recent "
            "descendants); returns the session."
        )
    )
    async def switch_branch(
        self, info: resolve.Info, session_id: strawberry.ID, message_id: strawberry.ID
    ) -> Session:
        return Session.of(await resolve.switch_branch(info, str(session_id), str(message_id)))

    @strawberry.mutation(
        description=(
            "Stops the running turn from any process: the reply so far is stored with "
            "status STOPPED. false when nothing was running."
        )
    )
    async def stop_turn(
        self, info: resolve.Info, session_id: strawberry.ID, turn_id: strawberry.ID | None = None
    ) -> bool:
        return await resolve.stop_turn(info, str(session_id), _optional(turn_id))

    # -- the conversation list: share links

    @strawberry.mutation(
        description=(
            "A read-only snapshot of the active path as it is now; anyone with the url can read it."
        )
    )
    async def share_session(self, info: resolve.Info, id: strawberry.ID) -> Share:
        return Share.of(info, await resolve.share_session(info, str(id)))

    @strawberry.mutation(
        description="Revokes a share link: its url reads 404 from then on. NOT_FOUND when "
        "there is no such share of a session of the caller's."
    )
    async def revoke_share(self, info: resolve.Info, id: strawberry.ID) -> bool:
        return await resolve.revoke_share(info, str(id))


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Runs one turn and streams the reply: token events, then one done event."
    )
    async def chat(
        self,
        info: resolve.Info,
        session_id: strawberry.ID,
        message: str,
        turn_id: strawberry.ID | None = None,
        tools: list[ToolInput] | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        chosen = _optional(turn_id)
        events = resolve.chat(info, str(session_id), message, chosen, tools=_tools(tools))
        async with aclosing(events) as running:
            async for event in running:
                yield ChatEvent.of(event, str(session_id))

    @strawberry.subscription(
        description="Answers the pending tool calls and streams the model's next reply."
    )
    async def submit_tool_results(
        self,
        info: resolve.Info,
        session_id: strawberry.ID,
        turn_id: strawberry.ID | None = None,
        *,
        results: list[ToolResultInput],
        tools: list[ToolInput] | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        chosen = _optional(turn_id)
        answers = [result.as_dict() for result in results]
        events = resolve.chat(
            info, str(session_id), "", chosen, tools=_tools(tools), results=answers
        )
        async with aclosing(events) as running:
            async for event in running:
                yield ChatEvent.of(event, str(session_id))

    @strawberry.subscription(
        description=(
            "Runs the user message of the reply `messageId` (the last reply when null) "
            "again; the new reply becomes that reply's sibling, and the active path ends "
            "there."
        )
    )
    async def regenerate(
        self,
        info: resolve.Info,
        session_id: strawberry.ID,
        turn_id: strawberry.ID | None = None,
        message_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        chosen = _optional(turn_id)
        events = resolve.chat(
            info, str(session_id), "", chosen, regenerate=True, at=_optional(message_id)
        )
        async with aclosing(events) as running:
            async for event in running:
                yield ChatEvent.of(event, str(session_id))

    @strawberry.subscription(
        description=(
            "Sends `message` as a sibling of the user message `messageId` (a new branch) "
            "and streams the reply."
        )
    )
    async def edit(
        self,
        info: resolve.Info,
        session_id: strawberry.ID,
        message_id: strawberry.ID,
        message: str,
        turn_id: strawberry.ID | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        chosen = _optional(turn_id)
        events = resolve.chat(info, str(session_id), message, chosen, edit=True, at=str(message_id))
        async with aclosing(events) as running:
            async for event in running:
                yield ChatEvent.of(event, str(session_id))

    @strawberry.subscription(
        description=(
            "Replays the turn's events after `after`, then follows it live to its end; the "
            "running turn when turnId is null. NOT_FOUND when there is no such turn (or it "
            "has expired)."
        )
    )
    async def turn(
        self,
        info: resolve.Info,
        session_id: strawberry.ID,
        turn_id: strawberry.ID | None = None,
        after: int = 0,
    ) -> AsyncGenerator[ChatEvent, None]:
        chosen = _optional(turn_id)
        async with aclosing(resolve.follow_turn(info, str(session_id), chosen, after)) as events:
            async for event in events:
                yield ChatEvent.of(event, str(session_id))


def _optional(value: strawberry.ID | None) -> str | None:
    return None if value is None else str(value)


def _tools(tools: list[ToolInput] | None) -> list[dict[str, Any]] | None:
    return None if tools is None else [tool.as_dict() for tool in tools]


class ChatSchema(strawberry.Schema):
    """Logs each error as one line: client errors are routine, and tracebacks can name
    internal paths (resolvers log unexpected errors themselves)."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if isinstance(error.original_error, InvalidOperationTypeError):
                error.message = _operation_type_hint(error.original_error)
            code = (error.extensions or {}).get("code") or _pre_execution_code(error)
            if code is not None:
                error.extensions = {**(error.extensions or {}), "code": code}
            logger.info("GraphQL error%s: %s", f" {code}" if code else "", error.message)


def _operation_type_hint(error: InvalidOperationTypeError) -> str:
    """Where an operation the transport refuses goes (the legacy graphql-ws protocol
    carries subscriptions only here)."""
    kinds: dict[object, str] = {OperationType.QUERY: "queries", OperationType.MUTATION: "mutations"}
    kind = kinds.get(error.operation_type, "subscriptions")
    if kind == "subscriptions":
        return "subscriptions run over WebSocket (graphql-transport-ws or graphql-ws) at /graphql"
    return (
        f"{kind} are not allowed over the legacy graphql-ws protocol, which carries "
        "subscriptions only here: send them as HTTP POST /graphql, or use the "
        "graphql-transport-ws protocol"
    )


# graphql-core's words for a variable's value it could not take (a variable that is
# unused or undefined in the document is a validation error).
_VALUE_PROBLEMS = ("invalid value", "was not provided", "must not be null")


def _pre_execution_code(error: GraphQLError) -> str | None:
    """The code of an error found before anything ran (no path), as GraphQL clients know
    them: the document does not parse (the token limit included), its variables are
    not what the operation declares, or it fails validation (depth, aliases, fields,
    introspection when off)."""
    if error.path is not None:
        return None
    if isinstance(error, GraphQLSyntaxError) or error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.message.startswith("Variable '$") and any(
        found in error.message for found in _VALUE_PROBLEMS
    ):
        return "BAD_USER_INPUT"  # a value that is not what the variable declares
    return "GRAPHQL_VALIDATION_FAILED"


def build_schema(
    *,
    max_depth: int = 12,
    max_aliases: int = 30,
    max_tokens: int = 2000,
    introspection: bool = True,
    max_document_bytes: int = 1_048_576,
) -> strawberry.Schema:
    """The schema with the abuse limits in force (depth, aliases, tokens, introspection)."""
    # The limiters' rules are built once: each limiter makes a new rule class when it is
    # created, and a new class per request would defeat the validation cache.
    rules = [
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    ]
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        lambda: AddValidationRules(rules),
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        # Parse and validate each distinct small document once.
        document_extension(DocumentCache(), max_document_bytes),
        AnonymousIntrospection,
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return ChatSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=EventExecutor,
    )


schema = build_schema()
