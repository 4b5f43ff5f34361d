"""How each event of a subscription is executed: as graphql-core does, with the fields it
collects for the first event kept for the rest.

graphql-core runs every event as a fresh execution of the operation: it collects the
root fields again, which gives new field lists, and its cache of sub-fields is keyed by
the identity of those lists, so every event also collects the sub-fields again (the
largest single cost of a streamed event) and adds an entry to that cache that lives as
long as the subscription. The fields an operation selects depend only on the document,
its fragments and its variables, which a subscription keeps from its first event to its
last; so the root fields of the first event are the root fields of every event, and with
them kept the sub-field cache is hit instead of grown.

This relies on graphql-core's `Executor.build_per_event_executor` (a shallow copy of the
subscription's executor) and `execute_collected_root_fields`, pinned by the lock file;
`tests/test_event_execution.py` fails loudly if either changes.
"""

from __future__ import annotations

from typing import Any

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class EventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context; its per-event copies share the root fields the
    first event collected (a list of at most one item, shared through the copies)."""

    _event_root_fields: list[Any] | None = None

    def build_per_event_executor(self, payload: Any) -> Any:
        if self._event_root_fields is None:
            self._event_root_fields = []
        return super().build_per_event_executor(payload)

    def execute_collected_root_fields(
        self,
        root_type: Any,
        root_value: Any,
        grouped_field_set: Any,
        serially: bool,
        new_defer_usages: Any,
    ) -> Any:
        kept = self._event_root_fields
        if kept is not None and not new_defer_usages:
            if kept:
                grouped_field_set = kept[0]
            else:
                kept.append(grouped_field_set)
        return super().execute_collected_root_fields(
            root_type, root_value, grouped_field_set, serially, new_defer_usages
        )
