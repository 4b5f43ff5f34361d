"""OpenTelemetry spans, when the packages are installed: FastAPI's span for each request
continues the caller's trace (`traceparent`), and each turn is a span inside it. Run
in-process against the real app and Redis, with the SDK's in-memory exporter."""

from __future__ import annotations

import httpx
import pytest

from main import create_app
from resolvers.services.settings import Settings

otel = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def test_a_request_and_its_turn_are_spans_of_the_caller_s_trace(
    shared_redis_url: str,
) -> None:
    exporter = InMemorySpanExporter()
    provider = otel.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    settings = Settings(
        redis_url=shared_redis_url, llm_model="offline", offline_token_delay_seconds=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            session_id = (await http.post("/new_session")).json()["session_id"]
            body = {"session_id": session_id, "message": "hello"}
            reply = await http.post("/chat", json=body, headers={"traceparent": CALLER})
            assert reply.status_code == 200
    provider.force_flush()
    finished = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    (request,) = [s for s in finished if s.name == "POST /chat" and s.parent is not None]
    (turn,) = [s for s in finished if s.name == "chat.turn"]
    # FastAPI's span of the request continues the caller's trace; the turn is inside it.
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(turn.context.trace_id, "032x") == TRACE_ID
    ancestors = []
    parent = turn.parent
    while parent is not None and parent.span_id in by_id:
        ancestors.append(parent.span_id)
        parent = by_id[parent.span_id].parent
    assert request.context.span_id in ancestors
    assert turn.attributes is not None
    assert turn.attributes["chat.outcome"] == "COMPLETE"
    assert turn.attributes["chat.session_id"] == session_id
    tokens = turn.attributes["chat.tokens"]
    assert isinstance(tokens, int) and tokens > 0
