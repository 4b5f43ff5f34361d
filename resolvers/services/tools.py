"""The client's tools: checked before a turn binds them, and their results before a turn
stores them. The server never runs a tool: the model asks for calls, the client runs
them and sends their results (`submitToolResults`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resolvers.services.errors import BadInput
from resolvers.services.history import ToolCall
from resolvers.services.usage import MAX_TOOL_CALLS
from resolvers.services.validation import check_text

# OpenAI's and Groq's rule for a function's name.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOOLS = 64
MAX_DESCRIPTION_CHARS = 4096
# A tool's JSON Schema, as JSON text, and all the tools of a turn together.
MAX_SCHEMA_BYTES = 16_384
MAX_TOOLS_BYTES = 65_536
MAX_SCHEMA_DEPTH = 32
MAX_CALL_ID_CHARS = 128
# The results of one turn together: at most this many messages' worth (MAX_MESSAGE_CHARS
# each), so a turn of results stores no more than a few messages would.
RESULTS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The client's answer to one tool call."""

    tool_call_id: str
    content: str


def check_tools(tools: Sequence[Mapping[str, Any]] | None) -> tuple[dict[str, Any], ...]:
    """The client's tools (`name`, `description`, `parameters`: a JSON Schema object) in
    the OpenAI format providers take (LangChain's `bind_tools` and Groq's request body);
    BadInput for a name providers refuse, a name twice, or a schema that is not a JSON
    object of at most MAX_SCHEMA_BYTES, nested at most MAX_SCHEMA_DEPTH deep."""
    if not tools:
        return ()
    if len(tools) > MAX_TOOLS:
        raise BadInput(f"at most {MAX_TOOLS} tools a turn")
    checked: list[dict[str, Any]] = []
    names: set[str] = set()
    total = 0
    for tool in tools:
        name = tool.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise BadInput("a tool's name must be 1 to 64 letters, digits, '_' or '-'")
        if name in names:
            raise BadInput(f"the tool {name!r} is given twice")
        names.add(name)
        description = tool.get("description")
        if description is not None:
            if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
                raise BadInput(
                    f"the description of tool {name!r} must be text of at most "
                    f"{MAX_DESCRIPTION_CHARS} characters"
                )
            check_text(description, f"the description of tool {name!r}")
        parameters = tool.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        size = _check_schema(parameters, name)
        total += size
        if total > MAX_TOOLS_BYTES:
            raise BadInput(f"the tools' schemas are larger than {MAX_TOOLS_BYTES} bytes in all")
        function: dict[str, Any] = {"name": name, "parameters": parameters}
        if description:
            function["description"] = description
        checked.append({"type": "function", "function": function})
    return tuple(checked)


def _check_schema(schema: Any, name: str) -> int:
    """The schema's size as JSON; BadInput unless it is a JSON Schema of an object."""
    if not isinstance(schema, dict):
        raise BadInput(f"the parameters of tool {name!r} must be a JSON Schema object")
    kind = schema.get("type", "object")
    if kind != "object":
        raise BadInput(f'the parameters of tool {name!r} must have "type": "object"')
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not all(
        isinstance(value, dict) for value in properties.values()
    ):
        raise BadInput(f"the properties of tool {name!r} must be an object of schemas")
    # Depth first, iteratively: a schema nested past any use never reaches a recursion.
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise BadInput(
                f"the parameters of tool {name!r} are nested deeper than {MAX_SCHEMA_DEPTH}"
            )
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            check_text(value, f"the parameters of tool {name!r}")
    size = len(json.dumps(schema, ensure_ascii=False).encode())
    if size > MAX_SCHEMA_BYTES:
        raise BadInput(f"the parameters of tool {name!r} are larger than {MAX_SCHEMA_BYTES} bytes")
    return size


def check_results(
    results: Sequence[Mapping[str, Any]] | None, max_chars: int
) -> tuple[ToolResult, ...]:
    """The results as sent (each call id once, each content text of at most `max_chars`,
    all of them at most RESULTS_PER_MESSAGE times that); whether they answer the pending
    calls is `match_results`' to say."""
    if not results:
        raise BadInput("results must answer the pending tool calls (none was given)")
    if len(results) > MAX_TOOL_CALLS:
        raise BadInput(f"at most {MAX_TOOL_CALLS} results")
    checked: list[ToolResult] = []
    seen: set[str] = set()
    total = 0
    for result in results:
        call_id, content = result.get("tool_call_id"), result.get("content")
        if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID_CHARS:
            raise BadInput(f"a toolCallId must be 1 to {MAX_CALL_ID_CHARS} characters")
        if call_id in seen:
            raise BadInput(f"the tool call {call_id!r} is answered twice")
        seen.add(call_id)
        if not isinstance(content, str):
            raise BadInput("a result's content must be text")
        if len(content) > max_chars:
            raise BadInput(f"a result's content is longer than {max_chars} characters")
        total += len(content)
        if total > RESULTS_PER_MESSAGE * max_chars:
            raise BadInput(
                f"the results are longer than {RESULTS_PER_MESSAGE * max_chars} characters in all"
            )
        checked.append(ToolResult(call_id, check_text(content, "a result's content")))
    return tuple(checked)


def match_results(pending: Sequence[ToolCall], results: Sequence[ToolResult]) -> list[ToolResult]:
    """`results` in the order of the calls they answer; BadInput unless they answer every
    pending call exactly once (and nothing else)."""
    if not pending:
        raise BadInput("the session has no tool calls waiting for results")
    by_id = {result.tool_call_id: result for result in results}
    unknown = [call_id for call_id in by_id if call_id not in {call.id for call in pending}]
    if unknown:
        raise BadInput(f"no pending tool call has the id {unknown[0]!r}")
    missing = [call.id for call in pending if call.id not in by_id]
    if missing:
        raise BadInput(f"the pending tool call {missing[0]!r} has no result")
    return [by_id[call.id] for call in pending]
