"""The REST routes' bodies and answers, as FastAPI validates and documents them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NewSessionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    title: str | None = None
    system_prompt: str | None = None


class NewSessionResponse(BaseModel):
    session_id: str


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    session_id: str
    message: str
    # Chosen by the client (a UUID): sending it again joins the turn instead of running
    # the message twice.
    turn_id: str | None = None


class StopBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    turn_id: str | None = None


class StopResponse(BaseModel):
    stopped: bool


class ChatResponse(BaseModel):
    session_id: str
    response: str


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
