"""Refusals that depend on who asks, for every transport (HTTP and both WebSocket
protocols): with AUTH_REQUIRED, an anonymous caller gets no introspection either. The
resolvers refuse such a caller everything but createGuest; introspection runs none of
them, so it is refused here, once the document is parsed and validated."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
)
from strawberry.extensions import SchemaExtension

from resolvers.context import Context
from resolvers.services.errors import Unauthenticated

INTROSPECTION = frozenset({"__schema", "__type"})


class AnonymousIntrospection(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        document = self.execution_context.graphql_document
        if (
            isinstance(context, Context)
            and document is not None
            and context.services.auth.required
            and _anonymous(context)
            and root_fields(document) & INTROSPECTION
        ):
            error = GraphQLError(
                "this server needs a bearer token, also to describe its schema: "
                "createGuest or POST /guest gives one",
                extensions={"code": "UNAUTHENTICATED"},
            )
            self.execution_context.result = ExecutionResult(data=None, errors=[error])
        yield


def _anonymous(context: Context) -> bool:
    try:
        return context.bearer is None
    except Unauthenticated:
        return False  # a malformed header: the resolvers report it


def root_fields(document: DocumentNode) -> set[str]:
    """The names of the fields at the root of every operation, through fragments."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    names: set[str] = set()
    seen: set[str] = set()
    pending = [
        d.selection_set for d in document.definitions if isinstance(d, OperationDefinitionNode)
    ]
    while pending:  # bounded: each fragment is walked once
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in seen and name in fragments:
                    seen.add(name)
                    pending.append(fragments[name].selection_set)
    return names
