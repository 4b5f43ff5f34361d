"""The GraphQL context: the process's services and who is asking."""

from __future__ import annotations

from typing import Any

from strawberry.fastapi import BaseContext

from resolvers.services.container import Services


class Context(BaseContext):
    def __init__(self, services: Services, admin_token: str | None, client: str | None) -> None:
        super().__init__()
        self.services = services
        self._header_token = admin_token
        self.client = client

    @property
    def admin_token(self) -> str | None:
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


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
