"""The GraphQL types of the contract (docs/api.md). They hold data; resolvers fill them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from resolvers import graphql as resolve
from resolvers.context import Context
from resolvers.services.history import Exchange, StoredMessage, position_of
from resolvers.services.history import Role as StoredRole
from resolvers.services.history import ToolCall as StoredToolCall
from resolvers.services.history import TurnStatus as StoredTurnStatus
from resolvers.services.identity import GuestToken as IssuedGuest
from resolvers.services.identity import Identity
from resolvers.services.sessions import SessionInfo, SessionPage
from resolvers.services.shares import ShareInfo
from resolvers.services.turn_store import ActiveTurn as RunningTurn
from resolvers.services.turnlog import TurnEvent
from resolvers.services.usage import Usage as StoredUsage
from resolvers.services.window import ContextPlan

# Registers the stored enums as the GraphQL enums `Role` and `TurnStatus`.
strawberry.enum(StoredRole, name="Role")
strawberry.enum(StoredTurnStatus, name="TurnStatus")


@strawberry.type(description="Tokens, as the model provider counted them.")
class Usage:
    input_tokens: int
    output_tokens: int

    @classmethod
    def of(cls, usage: StoredUsage) -> Usage:
        return cls(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


@strawberry.type(description="A call of one of the client's tools, as the model asked for it.")
class ToolCall:
    id: strawberry.ID
    name: str
    arguments: str = strawberry.field(description="The arguments as JSON text.")

    @classmethod
    def of(cls, call: StoredToolCall) -> ToolCall:
        return cls(id=strawberry.ID(call.id), name=call.name, arguments=call.arguments)

    @classmethod
    def each(cls, calls: Sequence[StoredToolCall]) -> list[ToolCall] | None:
        return [cls.of(call) for call in calls] if calls else None


@strawberry.input(description="A tool the client runs, offered to the model for one reply.")
class ToolInput:
    name: str
    description: str | None = None
    parameters: JSON | None = strawberry.field(
        default=None, description="JSON Schema of the arguments."
    )

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@strawberry.input(description="The client's result of one tool call.")
class ToolResultInput:
    tool_call_id: strawberry.ID
    content: str

    def as_dict(self) -> dict[str, Any]:
        return {"tool_call_id": str(self.tool_call_id), "content": self.content}


@strawberry.type
class Message:
    role: StoredRole
    content: str
    created_at: datetime | None
    id: strawberry.ID
    turn_id: strawberry.ID | None
    status: StoredTurnStatus = strawberry.field(
        description="STOPPED when the reply was cut short by stopTurn; COMPLETE otherwise."
    )
    usage: Usage | None = strawberry.field(
        description="A reply's tokens, when its provider reported them."
    )
    finish_reason: str | None = strawberry.field(
        description="Why the provider ended the reply (stop, length, ...), when it said."
    )
    parent_id: strawberry.ID | None = strawberry.field(
        description="The message this one follows; null for the first."
    )
    reasoning: str | None = strawberry.field(
        default=None, description="A reply's reasoning, for models that send it apart."
    )
    tool_calls: list[ToolCall] | None = strawberry.field(
        default=None, description="The tool calls a reply asks for."
    )
    tool_call_id: strawberry.ID | None = strawberry.field(
        default=None, description="A tool result's call (role TOOL)."
    )
    session_id: strawberry.Private[str] = ""

    @strawberry.field(
        description=(
            "1-based position among the messages with the same parent (this one "
            "included), and their count."
        )
    )
    async def branch(self, info: strawberry.Info[Context]) -> int:
        siblings = await self._siblings(info)
        return siblings.index(str(self.id)) + 1

    @strawberry.field
    async def branches(self, info: strawberry.Info[Context]) -> int:
        return len(await self._siblings(info))

    @strawberry.field
    async def sibling_ids(self, info: strawberry.Info[Context]) -> list[strawberry.ID]:
        return [strawberry.ID(i) for i in await self._siblings(info)]

    async def _siblings(self, info: strawberry.Info[Context]) -> list[str]:
        """The ids of the messages with this one's parent, oldest first (this one
        alone when its parent has no other child, or its parent is not known)."""
        own = str(self.id)
        parent = str(self.parent_id) if self.parent_id else ("" if position_of(own) == 0 else None)
        if parent is None:
            return [own]
        listed = await resolve.siblings(info, self.session_id, parent)
        if not listed:
            return [own]
        # A message another program appended after one with children off the path is
        # one of them, unlisted (its place is its own, at the end).
        return listed if own in listed else [*listed, own]

    @classmethod
    def of(cls, message: StoredMessage, session_id: str) -> Message:
        return cls(
            role=message.role,
            content=message.content,
            created_at=message.created_at,
            id=strawberry.ID(message.id),
            turn_id=strawberry.ID(message.turn_id) if message.turn_id else None,
            status=message.status,
            usage=Usage.of(message.usage) if message.usage else None,
            finish_reason=message.finish_reason,
            parent_id=strawberry.ID(message.parent_id) if message.parent_id else None,
            reasoning=message.reasoning,
            tool_calls=ToolCall.each(message.tool_calls),
            tool_call_id=strawberry.ID(message.tool_call_id) if message.tool_call_id else None,
            session_id=session_id,
        )


@strawberry.type(description="What the next turn would send of the session's history.")
class ContextReceipt:
    message_ids: list[strawberry.ID] = strawberry.field(
        description=(
            "What the next turn would send: the ids of the history messages included, oldest first."
        )
    )
    trimmed: int = strawberry.field(description="Earlier messages left out to fit the budget.")
    summary: str | None = strawberry.field(
        description="A summary of trimmed messages, sent as a system message, when one is kept."
    )
    estimated_tokens: int

    @classmethod
    def of(cls, plan: ContextPlan) -> ContextReceipt:
        return cls(
            message_ids=[strawberry.ID(i) for i in plan.message_ids],
            trimmed=plan.trimmed,
            summary=plan.summary,
            estimated_tokens=plan.estimated_tokens,
        )


@strawberry.type(description="The turn running on a session.")
class ActiveTurn:
    turn_id: strawberry.ID
    started_at: datetime
    message: str

    @classmethod
    def of(cls, turn: RunningTurn) -> ActiveTurn:
        return cls(
            turn_id=strawberry.ID(turn.turn_id), started_at=turn.started_at, message=turn.message
        )


@strawberry.type(description="One exchange, in the shape of the REST history.")
class Turn:
    input: str
    output: str

    @classmethod
    def of(cls, turn: Exchange) -> Turn:
        return cls(input=turn.input, output=turn.output)


@strawberry.type
class Session:
    id: strawberry.ID
    title: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int
    owner_id: strawberry.ID | None = strawberry.field(
        description="Visible to the owner and admins.", default=None
    )
    usage: Usage = strawberry.field(
        description="The sum of its replies' tokens, as the provider reported them."
    )
    pinned: bool = strawberry.field(default=False, description="Pinned by its owner.")
    archived: bool = strawberry.field(
        default=False,
        description="Archived by its owner: left out of viewer.sessions unless archived: true.",
    )
    # Read with the session, or (in a listing) only when the field is asked for.
    prompt: strawberry.Private[str | None] = None

    @classmethod
    def of(cls, info: SessionInfo) -> Session:
        return cls(
            id=strawberry.ID(info.id),
            title=info.title,
            prompt=info.system_prompt,
            created_at=info.created_at,
            updated_at=info.updated_at,
            message_count=info.message_count,
            owner_id=strawberry.ID(info.owner_id) if info.owner_id else None,
            usage=Usage.of(info.usage),
            pinned=info.pinned,
            archived=info.archived,
        )

    @strawberry.field
    async def system_prompt(self, info: strawberry.Info[Context]) -> str | None:
        if self.prompt is not None:
            return self.prompt
        return await resolve.session_prompt(info, str(self.id))

    @strawberry.field(
        description="The last `last` messages, oldest first; all when `last` is null."
    )
    async def messages(
        self, info: strawberry.Info[Context], last: int | None = None
    ) -> list[Message]:
        found = await resolve.session_messages(info, str(self.id), last)
        return [Message.of(m, str(self.id)) for m in found]

    @strawberry.field
    async def turns(self, info: strawberry.Info[Context]) -> list[Turn]:
        return [Turn.of(t) for t in await resolve.history(info, str(self.id))]

    @strawberry.field(
        description=(
            "The last `last` messages before the message `before` (exclusive), oldest first."
        )
    )
    async def messages_page(
        self, info: strawberry.Info[Context], last: int = 50, before: strawberry.ID | None = None
    ) -> list[Message]:
        found = await resolve.messages_page(
            info, str(self.id), last, None if before is None else str(before)
        )
        return [Message.of(m, str(self.id)) for m in found]

    @strawberry.field(description="What the next turn would send of the history.")
    async def context(self, info: strawberry.Info[Context]) -> ContextReceipt:
        return ContextReceipt.of(await resolve.session_context(info, str(self.id)))

    @strawberry.field(description="The turn running now; null when none is.")
    async def active_turn(self, info: strawberry.Info[Context]) -> ActiveTurn | None:
        running = await resolve.active_turn(info, str(self.id))
        return ActiveTurn.of(running) if running else None

    @strawberry.field(description="Tool calls of the last reply still waiting for results.")
    async def pending_tool_calls(self, info: strawberry.Info[Context]) -> list[ToolCall]:
        return [ToolCall.of(call) for call in await resolve.pending_tool_calls(info, str(self.id))]

    @strawberry.field(description="Its share links, oldest first (the owner's and admins').")
    async def shares(self, info: strawberry.Info[Context]) -> list[Share]:
        return [Share.of(info, s) for s in await resolve.session_shares(info, str(self.id))]


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class SessionEdge:
    cursor: str
    node: Session


@strawberry.type
class SessionConnection:
    edges: list[SessionEdge]
    page_info: PageInfo
    total_count: int

    @classmethod
    def of(cls, page: SessionPage) -> SessionConnection:
        edges = [
            SessionEdge(cursor=cursor, node=Session.of(found))
            for found, cursor in zip(page.sessions, page.cursors, strict=True)
        ]
        end = page.end_cursor or (page.cursors[-1] if page.cursors else None)
        return cls(
            edges=edges,
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=end),
            total_count=page.total,
        )


@strawberry.type(description="Who is asking.")
class Viewer:
    id: strawberry.ID | None = strawberry.field(
        description="The caller's user id; null when anonymous."
    )
    is_admin: bool
    who: strawberry.Private[Identity]

    @classmethod
    def of(cls, who: Identity) -> Viewer:
        user = strawberry.ID(who.user_id) if who.user_id is not None else None
        return cls(id=user, is_admin=who.is_admin, who=who)

    @strawberry.field(
        description=(
            "The caller's own sessions, most recently active first (empty when anonymous)."
        )
    )
    async def sessions(
        self,
        info: strawberry.Info[Context],
        first: int = 50,
        after: str | None = None,
        archived: bool = False,
    ) -> SessionConnection:
        page = await resolve.viewer_sessions(info, self.who, first, after, archived)
        return SessionConnection.of(page)

    @strawberry.field(
        description="The caller's pinned sessions, most recently active first (at most 100)."
    )
    async def pinned_sessions(self, info: strawberry.Info[Context]) -> list[Session]:
        return [Session.of(s) for s in await resolve.viewer_pinned_sessions(info, self.who)]


@strawberry.type
class GuestToken:
    token: str
    user_id: strawberry.ID
    expires_at: datetime | None

    @classmethod
    def of(cls, guest: IssuedGuest) -> GuestToken:
        return cls(
            token=guest.token, user_id=strawberry.ID(guest.user_id), expires_at=guest.expires_at
        )


@strawberry.type(
    description=(
        "One piece of a streamed reply. The last event has done = true and carries the "
        "stored reply."
    )
)
class ChatEvent:
    token: str
    done: bool
    message: Message | None
    turn_id: strawberry.ID
    seq: int = strawberry.field(
        description=(
            "The turn's events are numbered 1, 2, ... as they are stored; an event that "
            "carries several (a reader that fell behind) has the last one's number. A "
            "client that reconnects resumes after the last it saw."
        )
    )
    status: StoredTurnStatus | None = strawberry.field(
        description=(
            "On the done event: COMPLETE, STOPPED, or REQUIRES_ACTION (the reply asks for "
            "tool calls: toolCalls)."
        )
    )
    reasoning: str | None = strawberry.field(
        default=None,
        description=(
            "A piece of the model's reasoning, for models that stream it apart from the "
            "answer (token is then empty)."
        ),
    )
    tool_calls: list[ToolCall] | None = strawberry.field(
        default=None,
        description=(
            "On a done event with status REQUIRES_ACTION: the calls the client must answer."
        ),
    )

    @classmethod
    def of(cls, event: TurnEvent, session_id: str) -> ChatEvent:
        message = event.message
        if event.reasoning:
            return cls(
                token="",
                done=False,
                message=None,
                turn_id=strawberry.ID(event.turn_id),
                seq=event.seq,
                status=None,
                reasoning=event.token,
            )
        return cls(
            token=event.token,
            done=event.done,
            message=Message.of(message, session_id) if message else None,
            turn_id=strawberry.ID(event.turn_id),
            seq=event.seq,
            status=event.status,
            tool_calls=ToolCall.each(message.tool_calls)
            if message is not None and event.status is StoredTurnStatus.REQUIRES_ACTION
            else None,
        )


@strawberry.type(description="What a client may want to know about this server.")
class ServerInfo:
    model: str = strawberry.field(description="The chat model in use, as LLM_MODEL names it.")
    admin_required: bool = strawberry.field(
        description="Whether listing sessions needs the admin token."
    )
    max_message_chars: int
    outside_histories: OutsideHistories | None = strawberry.field(
        default=None,
        description=(
            "Chats of another LangChain app in a Redis on localhost:6379 that this server "
            "does not use (it runs its own, REDIS_URL being unset); null when none."
        ),
    )


@strawberry.type(description="LangChain chat histories in a Redis this server does not use.")
class OutsideHistories:
    count: int = strawberry.field(description="How many were counted (a bounded look).")
    more: bool = strawberry.field(description="Whether there may be more than counted.")
    redis_url: str = strawberry.field(description="The REDIS_URL that serves them.")


@strawberry.input
class CreateSessionInput:
    title: str | None = None
    system_prompt: str | None = None
    pinned: bool | None = None
    archived: bool | None = None


# -- the conversation list: share links -------------------------------------------------


@strawberry.type(description="A read-only copy of a session's conversation, at a url.")
class Share:
    id: strawberry.ID
    url: str = strawberry.field(description="The absolute url of its read-only page.")
    created_at: datetime

    @classmethod
    def of(cls, info: strawberry.Info[Context], share: ShareInfo) -> Share:
        return cls(
            id=strawberry.ID(share.id),
            url=resolve.share_url(info, share.id),
            created_at=share.created_at,
        )
