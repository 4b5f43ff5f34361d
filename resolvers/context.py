"""The GraphQL context: the process's services and who is asking."""

from __future__ import annotations

from typing import Any

from strawberry.fastapi import BaseContext

from resolvers.services.container import Services
from resolvers.services.identity import Identity


class Context(BaseContext):
    def __init__(self, services: Services, bearer: str | None, client: str | None) -> None:
        super().__init__()
        self.services = services
        self._header_token = bearer
        self.client = client
        self._identity: Identity | None = None

    @property
    def bearer(self) -> str | None:
        """The bearer token of the request, or of a WebSocket's `connection_init`."""
        if self._header_token is not None:
            return self._header_token
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

        Worked out once per request, or once per WebSocket connection.
        """
        if self._identity is None:
            self._identity = await self.services.auth.identify(self.bearer)
        return self._identity


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
