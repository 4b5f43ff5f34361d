"""The GraphQL context: the process's services and who is asking."""

from __future__ import annotations

from typing import Any

from strawberry.fastapi import BaseContext

from resolvers.services.container import Services
from resolvers.services.errors import Unauthenticated
from resolvers.services.identity import Identity


class Context(BaseContext):
    def __init__(
        self,
        services: Services,
        authorization: str | None,
        client: str | None,
        base_url: str = "/",
    ) -> None:
        super().__init__()
        self.services = services
        self._authorization = authorization
        self.client = client
        # Where this server is, as the request reached it (http or https, also over a
        # WebSocket), ending in '/': the base of the urls a response gives.
        self.base_url = base_url
        self._identity: tuple[str | None, Identity] | None = None
        # Per session, the batched reads of messages' siblings (`graphql.siblings`).
        self.sibling_loaders: dict[str, Any] = {}

    @property
    def bearer(self) -> str | None:
        """The bearer token of the request, or of a WebSocket's `connection_init`."""
        if self._authorization is not None:
            return header_token(self._authorization)
        params: Any = self.connection_params
        if isinstance(params, dict):
            for key in ("Authorization", "authorization"):
                value = params.get(key)
                if isinstance(value, str):
                    return bearer_token(value) or value
            token = params.get("adminToken")
            return token if isinstance(token, str) else None
        return None

    async def identity(self) -> Identity:
        """Who is asking; UNAUTHENTICATED for a bad token (or none, when one is required).

        Worked out once per request, or per WebSocket connection (again if the legacy
        protocol's client sends another `connection_init` with another token).
        """
        token = self.bearer
        if self._identity is None or self._identity[0] != token:
            self._identity = (token, await self.services.auth.identify(token))
        return self._identity[1]


def header_token(authorization: str | None) -> str | None:
    """The token of an Authorization header; one that is present but not
    `Bearer <token>` is refused, never read as no token at all."""
    if authorization is None:
        return None
    token = bearer_token(authorization)
    if not token:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
