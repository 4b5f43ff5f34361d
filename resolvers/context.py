"""The GraphQL context: the process's services and who is asking."""

from __future__ import annotations

from strawberry.fastapi import BaseContext

from resolvers.services import Services


class Context(BaseContext):
    def __init__(self, services: Services, admin_token: str | None, client: str | None) -> None:
        super().__init__()
        self.services = services
        self.admin_token = admin_token
        self.client = client
