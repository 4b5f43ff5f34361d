"""A session's messages in Redis, in the layout of LangChain's own Redis chat history.

`message_store:<session_id>` (see `keys`) is a list of `json.dumps(message_to_dict(m))`,
newest first, exactly as `langchain_community`'s `RedisChatMessageHistory` writes it,
so either program reads what the other wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)
from redis.asyncio import Redis, RedisCluster

from resolvers.services.keys import messages_key
from resolvers.services.usage import Usage

logger = logging.getLogger(__name__)

CREATED_AT = "created_at"
# Kept in a message's `additional_kwargs`, which LangChain carries along untouched.
MESSAGE_ID = "message_id"
TURN_ID = "turn_id"
TURN_STATUS = "turn_status"
# The message a message follows, kept by this server on what it writes; a message on the
# path follows the one below it whatever it says.
PARENT_ID = "parent_id"
# Where LangChain keeps a reply's reasoning (langchain-groq, langchain-deepseek, ...).
REASONING = "reasoning_content"
# What a tool call left unanswered gets when a new message is sent.
CANCELLED = "cancelled"


class Role(Enum):
    USER = "USER"
    ASSISTANT = "ASSISTANT"
    SYSTEM = "SYSTEM"
    TOOL = "TOOL"


class TurnStatus(Enum):
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    # The reply asks for tool calls the client runs (`submitToolResults`).
    REQUIRES_ACTION = "REQUIRES_ACTION"
    # Waiting in the session's queue.
    QUEUED = "QUEUED"


class Reasoning(str):
    """A piece of a reply's reasoning, among the pieces of its answer: the kind travels
    with the text, so a plain reply's pieces stay plain strings and cost nothing more."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of one of the client's tools, as the model asked for it; `arguments` is
    the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class StoredMessage:
    role: Role
    content: str
    created_at: datetime | None
    # Unique within the session. Messages this server wrote carry theirs; any other gets
    # its position from the oldest (0, 1, ...) when read. See `message_id`.
    id: str = ""
    turn_id: str | None = None
    status: TurnStatus = TurnStatus.COMPLETE
    # A reply's token counts and finish reason, as its provider reported them.
    usage: Usage | None = None
    finish_reason: str | None = None
    # The id of the message this one follows in the conversation's tree: None for the
    # first, and for one read alone whose parent was not read with it.
    parent_id: str | None = None
    # A reply's reasoning, and the tool calls it asks for; a tool result's call.
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


def message_id(position: int, nonce: str) -> str:
    """The id of a message this server writes at `position` (counted from the oldest).

    The position comes first, so a later lookup by id finds the message with one
    `LINDEX` and checks the whole id there; the nonce keeps the id unique after the
    list is rewound and a new message takes the same position.
    """
    return f"{position}.{nonce}"


def position_of(identifier: str) -> int | None:
    """The position an id names (ids of both kinds start with it); None if malformed."""
    head = identifier.partition(".")[0]
    if not head.isascii() or not head.isdigit() or len(head) > 12:
        return None
    return int(head)


@dataclass(frozen=True, slots=True)
class Exchange:
    """A user message and the reply that follows it: what the contract calls a `Turn`
    (and REST's history an item). Internally a turn is the run that makes a reply."""

    input: str
    output: str


_ROLE_OF_TYPE = {
    "human": Role.USER,
    "ai": Role.ASSISTANT,
    # Replies streamed through the documented REST app are stored as chunks.
    "AIMessageChunk": Role.ASSISTANT,
    "system": Role.SYSTEM,
    "tool": Role.TOOL,
}


def encode(message: BaseMessage) -> str:
    """One list element, as LangChain's Redis history writes it."""
    return json.dumps(message_to_dict(message))


def stamped(
    message: BaseMessage,
    at: datetime,
    *,
    identifier: str | None = None,
    turn_id: str | None = None,
    status: TurnStatus | None = None,
    finish_reason: str | None = None,
    parent_id: str | None = None,
) -> BaseMessage:
    """`message` with its creation time, id, turn and status kept where LangChain passes
    them along untouched (`response_metadata`, `additional_kwargs`)."""
    message.response_metadata[CREATED_AT] = at.isoformat()
    if identifier is not None:
        message.additional_kwargs[MESSAGE_ID] = identifier
    if turn_id is not None:
        message.additional_kwargs[TURN_ID] = turn_id
    if status is not None:
        message.additional_kwargs[TURN_STATUS] = status.value
    if finish_reason is not None:
        message.response_metadata["finish_reason"] = finish_reason
    if parent_id:
        message.additional_kwargs[PARENT_ID] = parent_id
    return message


def decode(
    raw: str | bytes, position: int = 0, *, parent_id: str | None = None
) -> StoredMessage | None:
    """The stored message, or None for an element that is not a chat message.

    `position` (from the oldest) is its id when the message carries none of its own.
    """
    try:
        data = json.loads(raw)
        role = _ROLE_OF_TYPE.get(data["type"])
        if role is None:
            return None
        fields = data["data"]
        content = fields.get("content")
        metadata = fields.get("response_metadata") or {}
        extra = fields.get("additional_kwargs") or {}
        if not isinstance(content, str) or not isinstance(metadata, dict):
            # Content blocks: let LangChain extract the text. Plain text (every message
            # this server writes) skips building a message object, on every turn's window.
            [message] = messages_from_dict([data])
            content, metadata = message.text, message.response_metadata
            extra = message.additional_kwargs
        if not isinstance(extra, dict):
            extra = {}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes (another program's).
        logger.warning("skipping an unreadable message_store element")
        return None
    created = metadata.get(CREATED_AT)
    created_at: datetime | None = None
    if isinstance(created, str):
        try:
            created_at = datetime.fromisoformat(created)
        except ValueError:
            created_at = None
        if created_at is not None and created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
    usage = None
    counts = fields.get("usage_metadata") if isinstance(fields, dict) else None
    if isinstance(counts, dict):
        tokens_in, tokens_out = counts.get("input_tokens"), counts.get("output_tokens")
        if isinstance(tokens_in, int) and isinstance(tokens_out, int):
            usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out)
    reason = metadata.get("finish_reason")
    own_id = extra.get(MESSAGE_ID)
    turn_id = extra.get(TURN_ID)
    if parent_id is None and position > 0:
        kept = extra.get(PARENT_ID)
        parent_id = kept if isinstance(kept, str) and kept else None
    try:
        status = TurnStatus(extra.get(TURN_STATUS) or "COMPLETE")
    except ValueError:
        status = TurnStatus.COMPLETE
    reasoning = extra.get(REASONING) if role is Role.ASSISTANT else None
    call_id = fields.get("tool_call_id") if role is Role.TOOL else None
    return StoredMessage(
        role=role,
        content=content,
        created_at=created_at,
        id=own_id if isinstance(own_id, str) and own_id else str(position),
        turn_id=turn_id if isinstance(turn_id, str) else None,
        status=status,
        usage=usage,
        finish_reason=reason if isinstance(reason, str) else None,
        parent_id=parent_id,
        reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
        tool_calls=_tool_calls(fields) if role is Role.ASSISTANT else (),
        tool_call_id=str(call_id) if isinstance(call_id, str | int) else None,
    )


def _tool_calls(fields: dict[str, object]) -> tuple[ToolCall, ...]:
    """A reply's tool calls as LangChain keeps them (`tool_calls`, with arguments read;
    `invalid_tool_calls`, with the text the model wrote), in the model's order."""
    found: list[ToolCall] = []
    for key in ("tool_calls", "invalid_tool_calls"):
        calls = fields.get(key)
        if not isinstance(calls, list):
            continue
        for call in calls:
            if not isinstance(call, dict):
                continue
            call_id, name, args = call.get("id"), call.get("name"), call.get("args")
            if not isinstance(call_id, str) or not call_id:
                continue
            text = valid_text(args) if isinstance(args, str) else arguments_text(args)
            found.append(
                ToolCall(id=valid_text(call_id), name=valid_text(str(name or "")), arguments=text)
            )
    return tuple(found)


def valid_text(text: str) -> str:
    """`text` as text that encodes to UTF-8: a lone surrogate (JSON may carry one)
    becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def element_id(raw: str | bytes, position: int) -> str:
    """The id of any list element, read as the scripts read it (`_messages.lua`'s
    `id_at`): its own message id, else its position."""
    try:
        extra = json.loads(raw)["data"]["additional_kwargs"]
        own = extra.get(MESSAGE_ID) if isinstance(extra, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError):
        own = None
    return own if isinstance(own, str) and own else str(position)


def decode_newest_first(
    raw: Sequence[str | bytes], length: int | None = None, *, below: str | bytes | None = None
) -> list[StoredMessage]:
    """Decode an `LRANGE 0 ...` result (newest first) into oldest-first messages.

    `length` is the whole list's length (`LLEN` read with it), which places each element
    from the oldest; None when `raw` is the whole list. Each message's parent is the
    element below it: `below` is the one below the oldest, when it was read.
    """
    newest = (len(raw) if length is None else length) - 1
    oldest = newest - len(raw) + 1
    parent: str | None = None
    if below is not None:
        parent = element_id(below, oldest - 1)
    messages: list[StoredMessage] = []
    for index in range(len(raw) - 1, -1, -1):
        position = newest - index
        found = decode(raw[index], position, parent_id=parent if position > 0 else None)
        if found is not None:
            messages.append(found)
        parent = found.id if found is not None else element_id(raw[index], position)
    return messages


def as_langchain(messages: Iterable[StoredMessage]) -> list[BaseMessage]:
    """Plain LangChain messages for a model call (no stored metadata sent along)."""
    return [to_model(m) for m in messages]


def to_model(message: StoredMessage, *, id: str | None = None) -> BaseMessage:
    """The message as a model is sent it: its text, a reply's tool calls and a tool
    result's call id; never its reasoning (not answer text) nor this server's metadata."""
    if message.role is Role.USER:
        return HumanMessage(content=message.content, id=id)
    if message.role is Role.SYSTEM:
        return SystemMessage(content=message.content, id=id)
    if message.role is Role.TOOL:
        return ToolMessage(content=message.content, tool_call_id=message.tool_call_id or "", id=id)
    if not message.tool_calls:
        return AIMessage(content=message.content, id=id)
    calls, invalid = [], []
    for call in message.tool_calls:
        args = arguments_of(call.arguments)
        if args is None:
            invalid.append(
                {"name": call.name, "args": call.arguments, "id": call.id, "error": None}
            )
        else:
            calls.append({"name": call.name, "args": args, "id": call.id})
    return AIMessage(
        content=message.content,
        tool_calls=calls,
        invalid_tool_calls=invalid,
        id=id,
    )


def arguments_of(text: str) -> dict[str, object] | None:
    """Tool call arguments as LangChain keeps them (an object), or None when the model's
    text is not a JSON object (LangChain keeps that as an invalid call, text and all)."""
    if not text.strip():
        return {}
    try:
        args = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return args if isinstance(args, dict) else None


def reply_message(
    text: str,
    *,
    reasoning: str = "",
    tool_calls: Sequence[ToolCall] = (),
) -> AIMessage:
    """A reply as LangChain keeps it: its reasoning in `additional_kwargs` (as
    langchain-groq and others put it), its calls in `tool_calls` (`invalid_tool_calls`
    for arguments that are not a JSON object)."""
    stored = StoredMessage(
        role=Role.ASSISTANT, content=text, created_at=None, tool_calls=tuple(tool_calls)
    )
    message = to_model(stored)
    assert isinstance(message, AIMessage)
    if reasoning:
        message.additional_kwargs[REASONING] = reasoning
    return message


def pending_calls(messages: Sequence[StoredMessage]) -> tuple[ToolCall, ...]:
    """The tool calls of the path's last reply that no tool result after it answers
    (`messages` oldest first, ending with the path's newest; summaries are passed over)."""
    answered: set[str] = set()
    for message in reversed(messages):
        if message.role is Role.SYSTEM:
            continue
        if message.role is Role.TOOL:
            if message.tool_call_id is not None:
                answered.add(message.tool_call_id)
            continue
        if message.role is Role.ASSISTANT:
            return tuple(call for call in message.tool_calls if call.id not in answered)
        return ()
    return ()


def reaches_a_reply(messages: Sequence[StoredMessage]) -> bool:
    """Whether `messages` (oldest first, a path's newest) reach back past the tool
    results at their end to a reply or a user message: then `pending_calls` of them is
    the path's."""
    return any(m.role in (Role.USER, Role.ASSISTANT) for m in messages)


def calls_answered_at_end(messages: Sequence[StoredMessage]) -> list[StoredMessage]:
    """The path's last reply with tool calls and the results after it (what a turn that
    answers them must send with them), or nothing when the path ends otherwise."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role in (Role.SYSTEM, Role.TOOL):
            continue
        if message.role is Role.ASSISTANT and message.tool_calls:
            return [m for m in messages[index:] if m.role is not Role.SYSTEM]
        return []
    return []


def arguments_text(args: object) -> str:
    """Arguments as JSON text (non-ASCII kept), a lone surrogate in them (the model's
    JSON may escape one) made U+FFFD: text that encodes to UTF-8 wherever it goes, the
    provider's next request included."""
    return valid_text(json.dumps(args, ensure_ascii=False))


def exchanges(messages: Sequence[StoredMessage]) -> list[Exchange]:
    """Each user message with the final reply that answers it (summaries skipped): a
    reply that asks for tool calls, and the tools' results, lead to the reply after them;
    calls left unanswered leave the output empty."""
    turns: list[Exchange] = []
    pending: str | None = None
    for message in messages:
        if message.role is Role.USER:
            if pending is not None:
                turns.append(Exchange(input=pending, output=""))
            pending = message.content
        elif message.role is Role.ASSISTANT:
            if message.tool_calls:
                pending = pending or ""
                continue  # its answer comes after the tools' results
            turns.append(Exchange(input=pending or "", output=message.content))
            pending = None
    if pending is not None:
        turns.append(Exchange(input=pending, output=""))
    return turns


class RedisChatHistory(BaseChatMessageHistory):
    """LangChain chat history of one session, on `redis.asyncio`, with real async I/O.

    The rest of the app uses only the async methods defined here, so the (deprecated)
    LangChain base class can be dropped without touching callers. The sync interface
    would block the event loop on an async client, so it refuses.
    """

    def __init__(self, redis: Redis | RedisCluster, session_id: str) -> None:
        self._redis = redis
        self.session_id = session_id
        self.key = messages_key(session_id)

    async def aget_messages(self) -> list[BaseMessage]:
        raw = await self._redis.lrange(self.key, 0, -1)
        return as_langchain(decode_newest_first(raw))

    async def aget_stored(self, last: int | None = None) -> list[StoredMessage]:
        """The last `last` messages (all when None), oldest first, in one round trip."""
        if last is not None and last <= 0:
            return []
        raw = await self._redis.lrange(self.key, 0, -1 if last is None else last - 1)
        return decode_newest_first(raw)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        if messages:
            # One LPUSH of several values pushes them in order: the last ends up first.
            await self._redis.lpush(self.key, *(encode(m) for m in messages))

    async def aclear(self) -> None:
        await self._redis.delete(self.key)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        raise NotImplementedError("RedisChatHistory is async only: use aget_messages()")

    def add_message(self, message: BaseMessage) -> None:
        raise NotImplementedError("RedisChatHistory is async only: use aadd_messages()")

    def clear(self) -> None:
        raise NotImplementedError("RedisChatHistory is async only: use aclear()")
