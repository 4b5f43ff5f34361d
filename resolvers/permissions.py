"""Who may call a GraphQL field, declared on the field (`permission_classes=[...]`)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from resolvers.context import Context
from resolvers.graphql import to_graphql_error
from resolvers.services.container import ADMIN_NEEDED
from resolvers.services.errors import ChatError, Unauthenticated


class IsAdmin(BasePermission):
    """The admin operations: open without ADMIN_TOKEN, else its bearer (or a token whose
    AUTH_ADMIN_CLAIM is true) only."""

    message = ADMIN_NEEDED
    error_extensions = {"code": Unauthenticated.code}  # noqa: RUF012  Strawberry's interface

    async def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        context: Context = info.context
        try:
            who = await context.identity()
        except ChatError as exc:
            raise to_graphql_error(exc) from None
        return context.services.allows_admin(who)
