"""The tree shows the layers: services know nothing of HTTP or GraphQL, and the library
internals the edges override are still there."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from strawberry.fastapi import GraphQLRouter

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / "resolvers" / "services"
# Web frameworks and the edge modules: a service importing one of these is in the wrong room.
FORBIDDEN = ("fastapi", "starlette", "strawberry", "graphql", "cross_web", "uvicorn", "schema")
EDGES = (
    "context",
    "dependencies",
    "graphql",
    "logs",
    "middleware",
    "openapi",
    "pages",
    "permissions",
    "rest",
    "rest_models",
    "rest_streams",
    "router",
    "shutdown",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted(SERVICES.rglob("*.py")), ids=lambda p: str(p.relative_to(SERVICES))
)
def test_services_import_no_web_framework_and_no_edge(path: Path) -> None:
    wrong = sorted(
        name
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
        or (name.startswith("resolvers.") and name.split(".")[1] in EDGES)
    )
    assert not wrong, f"{path.name} imports {wrong}: services know nothing of HTTP or GraphQL"


def test_the_service_rule_catches_a_web_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from fastapi import Request\nimport resolvers.rest\n")
    assert {"fastapi", "resolvers.rest"} <= imported_modules(module)


def test_only_edges_and_the_services_package_live_in_resolvers() -> None:
    modules = {p.stem for p in (REPO / "resolvers").glob("*.py")} - {"__init__"}
    assert modules == set(EDGES)


def test_the_strawberry_internals_the_router_overrides_still_exist() -> None:
    # resolvers/router.py overrides these; a Strawberry release that renames or reshapes
    # them must fail here, not silently skip the refusals.
    parse_json = inspect.signature(GraphQLRouter.parse_json)
    assert list(parse_json.parameters) == ["self", "data"]
    execute_single = inspect.signature(GraphQLRouter.execute_single)
    assert "request_data" in execute_single.parameters
    pick = inspect.signature(GraphQLRouter.pick_websocket_subprotocol)
    assert list(pick.parameters) == ["self", "request"]
    allowed = inspect.signature(GraphQLRouter.is_websocket_origin_allowed)
    assert list(allowed.parameters) == ["self", "request", "origin"]
    encode = inspect.signature(GraphQLRouter.encode_json)
    assert list(encode.parameters) == ["self", "data"]


def test_the_groq_members_the_fast_path_uses_still_exist() -> None:
    # resolvers/services/groq_fast.py calls these private members (pinned by uv.lock).
    from langchain_core.messages import HumanMessage
    from langchain_groq import ChatGroq

    model = ChatGroq(model_name="some-model", api_key="not-used")
    dicts, params = model._create_message_dicts([HumanMessage(content="hi")], None)
    assert dicts == [{"role": "user", "content": "hi"}]
    assert params["model"] == "some-model"
    post = inspect.signature(model.async_client._client.post)
    assert {"cast_to", "body", "options", "stream", "stream_cls"} <= set(post.parameters)
    # The fast path asks for the SDK's own timeout without its read bound.
    from resolvers.services.groq_fast import _stream_timeout

    timed = ChatGroq(model_name="some-model", api_key="not-used", timeout=7.0)
    stream_timeout = _stream_timeout(timed.async_client._client.timeout)
    assert (stream_timeout.connect, stream_timeout.read) == (7.0, None)


def test_the_architecture_page_names_every_module() -> None:
    """docs/architecture.md's layout lists each module of the app, by its own name."""
    page = (REPO / "docs" / "architecture.md").read_text()
    layout = page[page.index("```\nmain.py") : page.index("```", page.index("```\nmain.py") + 4)]
    named = {line.split()[0] for line in layout.splitlines()[1:] if line.strip()}
    modules = {
        p.name
        for folder in ("resolvers", "resolvers/services", "schema")
        for p in (REPO / folder).glob("*.py")
        if p.name != "__init__.py"
    }
    assert modules - named == set(), f"not in docs/architecture.md: {sorted(modules - named)}"
    assert named - modules - {"main.py", "schema/", "resolvers/", "services/", "scripts/",
                              "static/", "tests/", "bench/", "__init__.py",
                              "schema.graphql"} == set()  # fmt: skip


def test_the_storage_table_says_what_the_session_record_declares() -> None:
    from resolvers.services.meta import storage_row

    page = (REPO / "docs" / "architecture.md").read_text()
    assert storage_row() in page.splitlines(), (
        "the meta row of docs/architecture.md's storage table differs from meta.py: "
        "paste resolvers.services.meta.storage_row() over it"
    )
