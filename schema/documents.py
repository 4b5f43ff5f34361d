"""Parsed and validated GraphQL documents, cached within a memory budget.

Clients send the same few documents again and again (a `chat` subscription per turn), so
each distinct small one is parsed and validated once. Strawberry's `ParserCache` and
`ValidationCache` keep any document whole, whatever its size (distinct multi-MiB
documents grew the process by hundreds of MB); here only documents up to
`max_chars_each` are kept, and all of them together within `budget_chars` of text (a
parsed document takes roughly a hundred times its text). A document larger than
`max_document_bytes` is refused before it is parsed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from graphql import DocumentNode, GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document


@dataclass(slots=True)
class _Entry:
    document: DocumentNode
    errors: list[GraphQLError] | None = None


class DocumentCache:
    """An LRU of documents by their text, bounded by count of characters."""

    def __init__(self, *, max_chars_each: int = 4096, budget_chars: int = 256 * 1024) -> None:
        self.max_chars_each = max_chars_each
        self.budget_chars = budget_chars
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def chars(self) -> int:
        return self._chars

    def get(self, query: str) -> _Entry | None:
        entry = self._entries.get(query)
        if entry is not None:
            self._entries.move_to_end(query)
        return entry

    def put(self, query: str, document: DocumentNode) -> _Entry:
        entry = _Entry(document)
        self._entries[query] = entry
        self._chars += len(query)
        while self._chars > self.budget_chars:
            oldest, _ = self._entries.popitem(last=False)
            self._chars -= len(oldest)
        return entry


def document_extension(cache: DocumentCache, max_document_bytes: int) -> type[SchemaExtension]:
    """A schema extension that parses and validates through `cache`."""

    class CachedDocuments(SchemaExtension):
        _entry: _Entry | None = None

        def on_parse(self) -> Iterator[None]:
            context = self.execution_context
            query = context.query
            if query is not None:
                # Characters are at most 4 bytes: count bytes only when it can matter.
                if len(query) * 4 > max_document_bytes and (
                    len(query.encode("utf-8", "surrogatepass")) > max_document_bytes
                ):
                    raise GraphQLError(
                        f"the document is larger than {max_document_bytes} bytes",
                        extensions={"code": "BAD_USER_INPUT"},
                    )
                if len(query) <= cache.max_chars_each:
                    entry = cache.get(query)
                    if entry is None:
                        try:
                            document = parse(query, **context.parse_options)
                        except GraphQLError:
                            # Left to Strawberry, which parses it again and reports
                            # the error in every transport's own form.
                            yield
                            return
                        entry = cache.put(query, document)
                    context.graphql_document = entry.document
                    self._entry = entry
            yield

        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            entry = self._entry
            if entry is not None and context.graphql_document is entry.document:
                # The rules are the schema's, the same for every request.
                if entry.errors is None:
                    entry.errors = validate_document(
                        context.schema._schema, entry.document, context.validation_rules
                    )
                context.pre_execution_errors = entry.errors
            yield

    return CachedDocuments
