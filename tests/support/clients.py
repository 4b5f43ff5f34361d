"""Small client-side helpers: a session over REST, a GraphQL request, error codes."""

from __future__ import annotations

import httpx


async def new_session(http: httpx.AsyncClient, **body: str) -> str:
    response = await http.post("/new_session", json=body or None)
    assert response.status_code == 200, response.text
    session_id: str = response.json()["session_id"]
    return session_id


async def gql(
    http: httpx.AsyncClient, query: str, headers: dict[str, str] | None = None, **variables: object
) -> dict[str, object]:
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def error_codes(body: dict[str, object]) -> list[str]:
    errors = body.get("errors") or []
    assert isinstance(errors, list)
    return [e["extensions"]["code"] for e in errors]
