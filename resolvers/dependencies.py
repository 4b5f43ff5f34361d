"""What both edges take from a request: the process's services, who is asking, the
client's address, and the GraphQL context built from them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header
from starlette.requests import HTTPConnection

from resolvers.context import Context, header_token
from resolvers.services.container import Services
from resolvers.services.identity import Identity


def get_services(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services


async def _services(connection: HTTPConnection) -> Services:
    # A dependency that is a plain `def` runs in FastAPI's thread pool: a hand-off to a
    # thread and back on every request, for one attribute read.
    return get_services(connection)


ServicesDep = Annotated[Services, Depends(_services)]


async def get_identity(
    services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> Identity:
    """Who is asking (401 for a bad token, or none when one is required)."""
    return await services.auth.identify(header_token(authorization))


IdentityDep = Annotated[Identity, Depends(get_identity)]


async def get_stream_identity(
    services: ServicesDep,
    authorization: Annotated[str | None, Header()] = None,
    access_token: str | None = None,
) -> Identity:
    """Who is asking, for a route a browser's EventSource reads: it cannot send headers,
    so the token may come as `?access_token=` (RFC 6750, section 2.3) instead."""
    if authorization is None and access_token is not None:
        return await services.auth.identify(access_token)
    return await services.auth.identify(header_token(authorization))


StreamIdentityDep = Annotated[Identity, Depends(get_stream_identity)]


def client_address(connection: HTTPConnection) -> str | None:
    return connection.client.host if connection.client else None


async def require_admin(services: ServicesDep, who: IdentityDep) -> None:
    """REST: refuse the route (401) unless the caller may use the admin operations."""
    services.check_admin(who)


def base_url(connection: HTTPConnection) -> str:
    """The server's own url as the request reached it, ending in '/' (a WebSocket's
    ws:// or wss:// as http:// or https://)."""
    url = connection.base_url
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    return str(url.replace(scheme=scheme))


async def get_context(connection: HTTPConnection) -> Context:
    return Context(
        services=get_services(connection),
        authorization=connection.headers.get("authorization"),
        client=client_address(connection),
        base_url=base_url(connection),
    )
