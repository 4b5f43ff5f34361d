"""The REST routes' bodies and answers, as FastAPI validates and documents them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class NewSessionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    title: str | None = None
    system_prompt: str | None = None


class NewSessionResponse(BaseModel):
    session_id: str


class ToolBody(BaseModel):
    """A tool the client runs, offered to the model for this reply."""

    model_config = ConfigDict(extra="ignore")
    name: str
    description: str | None = None
    # The JSON Schema of its arguments (an object); checked by the server (400).
    parameters: Any = None


class ToolResultBody(BaseModel):
    """The client's result of one tool call."""

    model_config = ConfigDict(extra="ignore")
    tool_call_id: str
    content: str


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    session_id: str
    # The user's message; with `tool_results` instead, the turn answers the pending tool
    # calls of the last reply.
    message: str | None = None
    # Chosen by the client (a UUID): sending it again joins the turn instead of running
    # the message twice.
    turn_id: str | None = None
    tools: list[ToolBody] | None = None
    tool_results: list[ToolResultBody] | None = None

    @model_validator(mode="after")
    def _asks_something(self) -> ChatBody:
        if (self.message is None) == (self.tool_results is None):
            raise ValueError("give either message or tool_results")
        return self


class StopBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    turn_id: str | None = None


class StopResponse(BaseModel):
    stopped: bool


class ToolCallBody(BaseModel):
    id: str
    name: str
    # The arguments as JSON text.
    arguments: str


class ChatResponse(BaseModel):
    session_id: str
    response: str
    # When the reply asks for tool calls (answer them with `tool_results`).
    tool_calls: list[ToolCallBody] | None = None


class SessionsResponse(BaseModel):
    sessions: list[str]
    next_cursor: str | None = None


class HistoryTurn(BaseModel):
    input: str
    output: str


class HistoryResponse(BaseModel):
    history: list[HistoryTurn]


class GuestResponse(BaseModel):
    token: str
    user_id: str


class ErrorResponse(BaseModel):
    detail: str


class SharedMessage(BaseModel):
    role: str
    content: str
    # ISO 8601 with the UTC offset, as GraphQL's DateTime writes it.
    created_at: str | None = Field(serialization_alias="createdAt")


class ShareResponse(BaseModel):
    """A share link's snapshot: the conversation as it was when it was shared."""

    title: str | None
    messages: list[SharedMessage]
    created_at: str = Field(serialization_alias="createdAt")
