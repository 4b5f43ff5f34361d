"""What both edges take from a request: the process's services, the bearer token, the
client's address, and the GraphQL context built from them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header
from starlette.requests import HTTPConnection

from resolvers.context import Context, bearer_token
from resolvers.services.container import Services


def get_services(connection: HTTPConnection) -> Services:
    services: Services = connection.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def client_address(connection: HTTPConnection) -> str | None:
    return connection.client.host if connection.client else None


async def require_admin(
    services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """REST: refuse the route (401) unless the caller may use the admin operations."""
    services.check_admin(bearer_token(authorization))


async def get_context(connection: HTTPConnection) -> Context:
    return Context(
        services=get_services(connection),
        admin_token=bearer_token(connection.headers.get("authorization")),
        client=client_address(connection),
    )
