"""The documented REST routes: thin aliases over the same services as GraphQL. Their
bodies are `rest_models.py`'s, their streams `rest_streams.py`'s, their OpenAPI
document `openapi.py`'s."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from resolvers.dependencies import (
    IdentityDep,
    ServicesDep,
    StreamIdentityDep,
    client_address,
    require_admin,
)
from resolvers.rest_models import (
    ChatBody,
    ChatResponse,
    ErrorResponse,
    GuestResponse,
    HistoryResponse,
    HistoryTurn,
    NewSessionBody,
    NewSessionResponse,
    SessionsResponse,
    SharedMessage,
    ShareResponse,
    StopBody,
    StopResponse,
)
from resolvers.rest_streams import TurnStreamResponse, stream_mode
from resolvers.services import metrics
from resolvers.services.errors import (
    BadInput,
    ChatError,
    NotFound,
    RateLimited,
    Unauthenticated,
    client_error,
)
from resolvers.services.identity import Identity
from resolvers.services.index import Listing
from resolvers.services.validation import check_session_id

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

STATUS_OF_CODE = {
    "BAD_USER_INPUT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "SESSION_BUSY": 409,
    "RATE_LIMITED": 429,
    "QUOTA_EXCEEDED": 429,
    "LLM_ERROR": 502,
    "UNAVAILABLE": 503,
}


router = APIRouter()

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 503)
}


def error_response(error: ChatError) -> JSONResponse:
    status = STATUS_OF_CODE.get(error.code, 500)
    headers: dict[str, str] | None = None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(error, RateLimited) and error.retry_after is not None:
        headers = {"Retry-After": str(error.retry_after)}
    return JSONResponse({"detail": error.message}, status_code=status, headers=headers)


async def chat_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(client_error(exc, f"on {request.method} {request.url.path}"))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's own errors, with one change: a body it could not decode at all (not
    UTF-8) is a body that is not the documented JSON, so 422 as the contract says."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        return JSONResponse({"detail": "request body is not the documented JSON"}, status_code=422)
    return await http_exception_handler(request, exc)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    problems = []
    for err in exc.errors() if isinstance(exc, RequestValidationError) else []:
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    detail = "request is not the documented JSON: " + ("; ".join(problems) or "invalid")
    return JSONResponse({"detail": detail}, status_code=422)


@router.post("/new_session", responses=_ERRORS, tags=["sessions"])
async def new_session(
    request: Request,
    services: ServicesDep,
    who: IdentityDep,
    body: Annotated[NewSessionBody | None, Body()] = None,
) -> NewSessionResponse:
    """Create a session (owned by the caller's user, if any); optional title and prompt."""
    found = await services.create_session(
        who=who,
        client=client_address(request),
        title=body.title if body else None,
        system_prompt=body.system_prompt if body else None,
    )
    return NewSessionResponse(session_id=found.id)


@router.post(
    "/chat",
    tags=["chat"],
    response_class=Response,
    responses={
        **_ERRORS,
        200: {
            # The default first: generated clients read a response as its first type.
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": {"type": "string"}},
                "application/json": {"schema": ChatResponse.model_json_schema()},
            },
            "description": "The reply, streamed as text (the default) or server-sent events "
            "(Accept: text/event-stream), or whole as JSON (Accept: application/json).",
        },
        409: {"model": ErrorResponse},
        502: {"model": ErrorResponse},
    },
)
async def chat(
    body: ChatBody,
    request: Request,
    services: ServicesDep,
    who: IdentityDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Run one turn (or, with a `turn_id` the session already has, join it). The status
    is sent once the first token is in hand; `X-Turn-Id` names the turn."""
    mode = stream_mode(accept)
    results = body.tool_results
    turn = await services.turns.start(
        session_id=body.session_id,
        message=body.message or "",
        client=client_address(request),
        who=who,
        turn_id=body.turn_id,
        tools=None if body.tools is None else [tool.model_dump() for tool in body.tools],
        results=None if results is None else [result.model_dump() for result in results],
    )
    headers = {"X-Turn-Id": turn.turn_id}
    if mode == "json":
        reply = await turn.reply()
        answer: dict[str, Any] = {"session_id": body.session_id, "response": reply.content}
        if reply.tool_calls:
            answer["tool_calls"] = [asdict(call) for call in reply.tool_calls]
        return JSONResponse(answer, headers=headers)
    events = turn.events()
    first = await anext(events)
    return TurnStreamResponse(first, events, sse=mode == "sse", turn_id=turn.turn_id)


@router.get(
    "/session/{session_id}/turns/{turn_id}/events",
    tags=["chat"],
    response_class=Response,
    responses={
        **_ERRORS,
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "The turn's events as server-sent events: replayed, then live.",
        },
        204: {"description": "The client has seen the turn's last event already."},
    },
)
async def turn_events(
    session_id: str,
    turn_id: str,
    services: ServicesDep,
    who: StreamIdentityDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: str | None = None,
) -> Response:
    """A turn's events (replay, then live) as server-sent events, after `Last-Event-ID`
    (or `?after=N`), so a browser's EventSource follows a turn and resumes it. The bearer
    token may come as `?access_token=` (EventSource sends no headers)."""
    start = _event_number(last_event_id if last_event_id is not None else after)
    turn = await services.turns.follow(session_id, turn_id, who=who, after=start)
    if turn.ended and start == turn.end_seq:
        # Seen to the end: 204 tells EventSource not to connect again.
        return Response(status_code=204, headers={"X-Turn-Id": turn.turn_id})
    events = turn.events(after=start)
    first = await anext(events, None)
    if first is None:
        return Response(status_code=204, headers={"X-Turn-Id": turn.turn_id})
    return TurnStreamResponse(first, events, sse=True, turn_id=turn.turn_id, retry_ms=1000)


def _event_number(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    try:
        number = int(value.strip())
    except ValueError:
        raise BadInput("Last-Event-ID must be an event number this server sent") from None
    if number < 0:
        raise BadInput("Last-Event-ID must not be negative")
    return number


@router.post(
    "/session/{session_id}/stop",
    response_model=StopResponse,
    responses=_ERRORS,
    tags=["chat"],
)
async def stop_turn(
    session_id: str,
    services: ServicesDep,
    who: IdentityDep,
    body: Annotated[StopBody | None, Body()] = None,
) -> StopResponse:
    """Stop the running turn (only if it is `turn_id`, when given), from any process:
    the reply so far is stored as STOPPED. `stopped` is false when nothing was running."""
    stopped = await services.turns.stop(session_id, body.turn_id if body else None, who=who)
    return StopResponse(stopped=stopped)


def _parse_limit(limit: str | None) -> int | None:
    if limit is None:
        return None
    try:
        return int(limit)
    except ValueError:
        raise BadInput("limit must be a whole number") from None


@router.get(
    "/sessions",
    response_model=SessionsResponse,
    responses={**_ERRORS, 401: {"model": ErrorResponse}},
    tags=["sessions"],
    dependencies=[Depends(require_admin)],
)
async def sessions(
    services: ServicesDep, limit: str | None = None, cursor: str | None = None
) -> JSONResponse:
    """Admin: session ids, most recently active first (all, or a page with `limit`)."""
    page = await services.sessions.ids(limit=_parse_limit(limit), cursor=cursor)
    if limit is None:
        return JSONResponse({"sessions": page.ids})
    return JSONResponse({"sessions": page.ids, "next_cursor": page.next_cursor})


@router.get(
    "/me/sessions",
    response_model=SessionsResponse,
    responses={**_ERRORS, 401: {"model": ErrorResponse}},
    tags=["sessions"],
)
async def my_sessions(
    services: ServicesDep,
    who: IdentityDep,
    limit: str | None = None,
    cursor: str | None = None,
    archived: str | None = None,
) -> JSONResponse:
    """The caller's own session ids, most recently active first (empty when anonymous):
    the archived left out, or (`archived=true`) only those."""
    size = _parse_limit(limit)
    if size is not None and size < 1:
        raise BadInput("limit must be at least 1")
    if archived not in (None, "true", "false"):
        raise BadInput("archived must be true or false")
    if who.user_id is None:
        return JSONResponse({"sessions": [], "next_cursor": None})
    listing: Listing = "archived" if archived == "true" else "main"
    page = await services.sessions.ids(
        limit=size, cursor=cursor, owner=who.user_id, listing=listing
    )
    return JSONResponse({"sessions": page.ids, "next_cursor": page.next_cursor})


@router.post(
    "/guest",
    response_model=GuestResponse,
    tags=["identity"],
    responses={503: {"model": ErrorResponse}},
)
async def guest(services: ServicesDep) -> GuestResponse:
    """A token this server signs for a new random user id (pass it as the bearer)."""
    issued = await services.auth.issue_guest()
    return GuestResponse(token=issued.token, user_id=issued.user_id)


@router.get("/session/{session_id}/history", responses=_ERRORS, tags=["sessions"])
async def history(session_id: str, services: ServicesDep, who: IdentityDep) -> HistoryResponse:
    """The session's turns, oldest first."""
    turns = await services.sessions.exchanges(session_id, who=who)
    return HistoryResponse(history=[HistoryTurn(input=t.input, output=t.output) for t in turns])


@router.delete("/session/{session_id}", status_code=204, responses=_ERRORS, tags=["sessions"])
async def delete_session(session_id: str, services: ServicesDep, who: IdentityDep) -> Response:
    """Delete a session and all of its messages."""
    if not await services.sessions.delete(session_id, who=who):
        raise NotFound("no session with that id")
    return Response(status_code=204)


@router.get(
    "/share/{share_id}",
    response_model=ShareResponse,
    responses={status: {"model": ErrorResponse} for status in (400, 404, 503)},
    tags=["shares"],
)
async def share(share_id: str, services: ServicesDep, response: Response) -> ShareResponse:
    """A share link's snapshot, to anyone with its id (no token); 404 once revoked or
    its session deleted, 400 for an id this server never gives."""
    found = await services.shares.snapshot(share_id)
    response.headers.update(_SHARE_HEADERS)
    return ShareResponse(
        title=found.title,
        messages=[
            SharedMessage(
                role=m.role.value,
                content=m.content,
                created_at=m.created_at.isoformat() if m.created_at else None,
            )
            for m in found.messages
        ],
        created_at=found.created_at.isoformat(),
    )


@router.api_route("/s/{share_id}", methods=["GET", "HEAD"], include_in_schema=False)
async def share_page(share_id: str, services: ServicesDep) -> FileResponse:
    """The share's read-only page (it reads `/share/{id}` itself); 404 for a share that
    is revoked or gone (or an id that names none), with the same page saying so."""
    try:
        await services.shares.snapshot(share_id)
        status = 200
    except (NotFound, BadInput):
        status = 404
    return FileResponse(STATIC_DIR / "share.html", status_code=status, headers=_SHARE_HEADERS)


# A revoked share must not be served from a cache, nor its url sent on to the sites its
# links lead to, nor indexed.
_SHARE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/admin/export", include_in_schema=False)
async def export_sessions(
    services: ServicesDep,
    who: IdentityDep,
    session_id: Annotated[list[str] | None, Query()] = None,
) -> StreamingResponse:
    """Admin: every session (or those named by `session_id`) as JSON Lines. Needs the
    admin's token even where the other admin operations are open (no ADMIN_TOKEN)."""
    _require_admin_token(who)
    named = [check_session_id(s) for s in session_id] if session_id is not None else None

    async def lines() -> AsyncIterator[bytes]:
        async for line in services.transfer.export(named):
            yield (line + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/admin/import", include_in_schema=False)
async def import_sessions(
    request: Request, services: ServicesDep, who: IdentityDep, replace: bool = False
) -> JSONResponse:
    """Admin: sessions as JSON Lines (the export's form), in a body of at most
    MAX_REQUEST_BYTES; every line is checked before any is written. Needs the admin's
    token even where the other admin operations are open."""
    _require_admin_token(who)
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the body must be JSON Lines in UTF-8") from None
    # Lines end at LF only: a message may hold U+2028 and such, written as they are.
    done = await services.transfer.import_lines(body.split("\n"), replace=replace)
    return JSONResponse({"imported": done.written, "skipped": done.skipped})


def _require_admin_token(who: Identity) -> None:
    if not who.is_admin:
        raise Unauthenticated("exporting and importing sessions needs the admin token")


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Prometheus metrics of every worker of this server (text exposition format)."""
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


@router.get("/readyz", tags=["operations"], responses={503: {"model": ErrorResponse}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when Redis answers, else 503."""
    if await services.ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"detail": "Redis cannot be reached"}, status_code=503)
