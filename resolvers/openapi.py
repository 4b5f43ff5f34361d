"""The OpenAPI document as generated clients read it (FastAPI's, made true)."""

from __future__ import annotations

from typing import Any

from resolvers.rest_models import ChatResponse

_BEARER = "bearer"
# Routes no limit or token applies to.
_PROBES = ("/healthz", "/readyz", "/metrics")
# Routes that need no token.
_OPEN = ("/guest",)
_COMPONENT = "#/components/schemas/{model}"


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's OpenAPI document, made true for generated clients: the bearer token as
    a security scheme (optional: without one the caller is anonymous), `limit` an
    integer (the route reads it as text so a bad one is the contract's 400), the 429 of
    the rate limits with its `Retry-After`, and every schema named in the components."""
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[_BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "ADMIN_TOKEN, a guest token from POST /guest, or an identity "
        "provider's JWT. Optional: without one the caller is anonymous.",
    }
    schemas = components.setdefault("schemas", {})
    # Its own schemas (a tool call) join the components, where its references point.
    chat_response = ChatResponse.model_json_schema(ref_template=_COMPONENT)
    schemas.update(chat_response.pop("$defs", {}))
    schemas["ChatResponse"] = chat_response
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            if path in _PROBES:
                continue
            # A guest token is what an anonymous caller asks for: it needs none.
            operation["security"] = [] if path in _OPEN else [{}, {_BEARER: []}]
            operation["parameters"] = [
                _integer_parameter(p)
                for p in operation.get("parameters", [])
                if not (p.get("in") == "header" and p.get("name") == "authorization")
            ]
            if not operation["parameters"]:
                del operation["parameters"]
            operation["responses"]["429"] = {
                "description": "Too many requests from this address, or turns on this "
                "session: retry after Retry-After seconds.",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                },
            }
    chat = spec["paths"]["/chat"]["post"]["responses"]["200"]
    chat["content"]["application/json"]["schema"] = {"$ref": "#/components/schemas/ChatResponse"}
    chat["headers"] = {"X-Turn-Id": {"schema": {"type": "string"}, "description": "The turn."}}
    events = spec["paths"]["/session/{session_id}/turns/{turn_id}/events"]["get"]["responses"]
    # Only the stream: FastAPI adds a JSON body to every route's 200 by default.
    events["200"]["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
    return spec


def _integer_parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    """`limit` and `after` as the integers they are (the routes read them as text, so a
    bad one is the contract's 400, not FastAPI's 422)."""
    if parameter.get("in") == "query" and parameter.get("name") == "limit":
        return {
            **parameter,
            "schema": {"type": "integer", "minimum": 1, "title": "Limit"},
            "description": "Page size (at most 1000): one page and a next_cursor. "
            "Without it, every id.",
        }
    if parameter.get("in") == "query" and parameter.get("name") == "after":
        return {
            **parameter,
            "schema": {"type": "integer", "minimum": 0, "title": "After"},
            "description": "The last event seen (as Last-Event-ID): the stream resumes after it.",
        }
    return parameter
