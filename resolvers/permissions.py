"""Who may call a GraphQL field, declared on the field (`permission_classes=[...]`)."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from resolvers.context import Context
from resolvers.services.container import ADMIN_NEEDED
from resolvers.services.errors import Unauthenticated


class IsAdmin(BasePermission):
    """The admin operations: open without ADMIN_TOKEN, else its bearer only."""

    message = ADMIN_NEEDED
    error_extensions = {"code": Unauthenticated.code}  # noqa: RUF012  Strawberry's interface

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        context: Context = info.context
        return context.services.is_admin(context.admin_token)
