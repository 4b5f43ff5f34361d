"""What the tests of rich turns share: the documents, a tool, and readers of what the
provider received and of a server-sent event stream."""

from __future__ import annotations

import json
from typing import Any

from tests.support.servers import FakeGroq
from tests.support.ws_client import Received, graphql_socket

ADD = {
    "name": "add",
    "description": "Adds two numbers.",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
}
CALL = "toolCalls { id name arguments }"
EVENT = (
    f"token reasoning done seq turnId status {CALL} "
    f"message {{ id role content reasoning status {CALL} }}"
)
CHAT = f"""
subscription($s: ID!, $m: String!, $t: ID, $tools: [ToolInput!]) {{
  chat(sessionId: $s, message: $m, turnId: $t, tools: $tools) {{ {EVENT} }}
}}
"""
SUBMIT = f"""
subscription($s: ID!, $r: [ToolResultInput!]!, $t: ID, $tools: [ToolInput!]) {{
  submitToolResults(sessionId: $s, results: $r, turnId: $t, tools: $tools) {{ {EVENT} }}
}}
"""
SESSION = f"""
query($s: ID!) {{
  session(id: $s) {{
    messageCount pendingToolCalls {{ id name arguments }}
    messages {{ id role content reasoning status toolCallId {CALL} parentId }}
    turns {{ input output }}
  }}
}}
"""


async def run(url: str, query: str, **variables: Any) -> Received:
    """One subscription on a socket of its own, to its end."""
    async with graphql_socket(url) as ws:
        return await ws.collect(await ws.start(query, **variables))


def sent_answering(fake: FakeGroq, call_id: str) -> list[dict[str, Any]]:
    """The messages of the last request to the provider that held a result of
    `call_id`."""
    recent = fake.requests()["recent"]
    assert isinstance(recent, list)
    bodies = [b for b in recent if any(m.get("tool_call_id") == call_id for m in b["messages"])]
    messages: list[dict[str, Any]] = bodies[-1]["messages"]
    return messages


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) of each event of a server-sent event stream."""
    found = []
    for frame in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields.get("data", "{}"))))
    return found
