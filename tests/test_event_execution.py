"""Each event of a subscription runs through graphql-core's executor with the root fields
of the first event kept (schema/execution.py): the same results, and the sub-fields
collected once per subscription rather than once per event.

These tests fail loudly when graphql-core changes the two members the executor relies
on (`build_per_event_executor`, `execute_collected_root_fields`)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator
from typing import Any

import graphql.execution.executor as graphql_executor
import pytest
import strawberry
from graphql.execution.incremental.incremental_executor import IncrementalExecutor
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult

from schema import schema as app_schema
from schema.execution import EventExecutor

EVENTS = 50


@strawberry.type
class Inner:
    size: int
    label: str


@strawberry.type
class Event:
    text: str
    seq: int
    inner: Inner | None


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def events(self, count: int) -> AsyncGenerator[Event, None]:
        for n in range(1, count + 1):
            yield Event(text=f"t{n}", seq=n, inner=Inner(size=n, label="x") if n % 2 else None)


DOCUMENT = """
subscription($n: Int!, $withInner: Boolean!) {
  first: events(count: $n) {
    ...Parts
    again: seq
    inner @include(if: $withInner) { size __typename }
  }
}
fragment Parts on Event { text seq }
"""


def expected(n: int, *, with_inner: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"text": f"t{n}", "seq": n, "again": n}
    if with_inner:
        event["inner"] = {"size": n, "__typename": "Inner"} if n % 2 else None
    return {"first": event}


async def run(executor: type, *, with_inner: bool) -> tuple[list[Any], int]:
    """The events' data, and how many times sub-fields were collected."""
    test_schema = strawberry.Schema(
        query=Query, subscription=Subscription, execution_context_class=executor
    )
    calls = 0
    original = vars(graphql_executor)["collect_subfields"]

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graphql_executor, "collect_subfields", counting)
        stream = await test_schema.subscribe(
            DOCUMENT, variable_values={"n": EVENTS, "withInner": with_inner}
        )
        assert not isinstance(stream, ExecutionResult), stream
        results = []
        async for result in stream:
            assert not result.errors, result.errors
            results.append(result.data)
    return results, calls


@pytest.mark.parametrize("with_inner", [True, False])
async def test_every_event_gives_the_same_data_as_graphql_core_alone(with_inner: bool) -> None:
    kept, _ = await run(EventExecutor, with_inner=with_inner)
    plain, _ = await run(StrawberryGraphQLCoreExecutionContext, with_inner=with_inner)
    want = [expected(n, with_inner=with_inner) for n in range(1, EVENTS + 1)]
    assert kept == want
    assert plain == want


async def test_sub_fields_are_collected_once_per_subscription_not_per_event() -> None:
    _, kept_calls = await run(EventExecutor, with_inner=True)
    _, plain_calls = await run(StrawberryGraphQLCoreExecutionContext, with_inner=True)
    # Event and Inner: once each. graphql-core alone collects them for every event.
    assert kept_calls == 2
    assert plain_calls >= EVENTS


def test_the_graphql_core_members_relied_on_are_there() -> None:
    for name in ("build_per_event_executor", "execute_collected_root_fields"):
        assert hasattr(IncrementalExecutor, name), f"graphql-core has no {name} any more"
    params = list(inspect.signature(IncrementalExecutor.execute_collected_root_fields).parameters)
    assert params == [
        "self",
        "root_type",
        "root_value",
        "grouped_field_set",
        "serially",
        "new_defer_usages",
    ], f"graphql-core changed execute_collected_root_fields: {params}"
    assert issubclass(EventExecutor, IncrementalExecutor)
    assert app_schema.execution_context_class is EventExecutor
