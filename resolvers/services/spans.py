"""OpenTelemetry spans for turns, when the `opentelemetry` packages are installed;
nothing at all when they are not. (Each request's span is FastAPI's own, which continues
the caller's trace from `traceparent`; a turn's span is made inside it.)

The server makes spans through the OpenTelemetry API only: they go wherever the process's
tracer provider sends them (set up by `opentelemetry-instrument`, or by a program that
configures the SDK), and cost next to nothing while none is set up (the API's default
provider makes spans that record nothing).
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import trace
except ImportError:  # the packages are optional
    trace = None  # type: ignore[assignment]

TRACER_NAME = "chat-session-server"


def enabled() -> bool:
    return trace is not None


def start(name: str, attributes: dict[str, Any]) -> Any:
    """A started span, a child of the current one (None without OpenTelemetry)."""
    if trace is None:
        return None
    return trace.get_tracer(TRACER_NAME).start_span(name, attributes=attributes)


def finish(span: Any, attributes: dict[str, Any], *, error: str | None = None) -> None:
    if span is None:
        return
    span.set_attributes(attributes)
    if error is not None and trace is not None:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error))
    span.end()
