"""Rich turns' parts, each alone: the checks of tools and results, pending calls, the
history shapes with tool messages, reasoning kept apart (in events, in the turn's
stream, from the model's prompt), and the offline model's markers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from resolvers.services.errors import BadInput
from resolvers.services.history import (
    Reasoning,
    Role,
    StoredMessage,
    ToolCall,
    decode,
    encode,
    exchanges,
    pending_calls,
    reply_message,
    to_model,
)
from resolvers.services.model import ChatModel, OfflineChatModel
from resolvers.services.tools import check_results, check_tools, match_results
from resolvers.services.turn_store import _entry, _token_args
from resolvers.services.turnlog import LiveTurn
from resolvers.services.usage import MAX_TOOL_CALL_CHARS, ReplyReport
from resolvers.services.window import plan_context


def message(role: Role, content: str = "", **fields: Any) -> StoredMessage:
    return StoredMessage(role=role, content=content, created_at=None, **fields)


ADD = ToolCall(id="c1", name="add", arguments='{"a": 1}')
CLOCK = ToolCall(id="c2", name="clock", arguments="{}")


def test_tools_are_given_to_the_model_in_the_openai_format() -> None:
    checked = check_tools(
        [
            {"name": "add", "description": "Adds.", "parameters": {"type": "object"}},
            {"name": "clock", "description": None, "parameters": None},
        ]
    )
    assert checked == (
        {
            "type": "function",
            "function": {"name": "add", "parameters": {"type": "object"}, "description": "Adds."},
        },
        {
            "type": "function",
            "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}},
        },
    )
    assert check_tools(None) == () and check_tools([]) == ()


@pytest.mark.parametrize(
    "tools",
    [
        [{"name": ""}],
        [{"name": "a b"}],
        [{"name": 5}],
        [{"name": "t"}, {"name": "t"}],
        [{"name": "t", "description": "x" * 5000}],
        [{"name": "t", "description": "\ud800"}],
        [{"name": "t", "parameters": []}],
        [{"name": "t", "parameters": {"type": "array"}}],
        [{"name": "t", "parameters": {"properties": {"a": "b"}}}],
        [{"name": "t", "parameters": {"type": "object", "enum": ["\udc00"]}}],
        [{"name": f"t{n}", "parameters": {"type": "object", "d": "x" * 15_000}} for n in range(5)],
    ],
)
def test_bad_tools_are_refused(tools: list[dict[str, Any]]) -> None:
    with pytest.raises(BadInput):
        check_tools(tools)


def test_a_schema_nested_past_any_use_is_refused_without_recursion() -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(5000):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(BadInput, match="nested deeper"):
        check_tools([{"name": "deep", "parameters": schema}])


def test_results_must_answer_every_pending_call_once() -> None:
    answers = check_results(
        [{"tool_call_id": "c2", "content": "noon"}, {"tool_call_id": "c1", "content": "2"}], 100
    )
    # In the order of the calls, whatever order they came in.
    assert [r.tool_call_id for r in match_results([ADD, CLOCK], answers)] == ["c1", "c2"]
    with pytest.raises(BadInput, match="no result"):
        match_results([ADD, CLOCK], answers[:1])
    with pytest.raises(BadInput, match="no pending tool call"):
        match_results([ADD], answers)
    with pytest.raises(BadInput, match="no tool calls waiting"):
        match_results([], answers)
    for wrong in (
        [],
        [{"tool_call_id": "c1", "content": "1"}, {"tool_call_id": "c1", "content": "2"}],
        [{"tool_call_id": "", "content": "1"}],
        [{"tool_call_id": "c" * 129, "content": "1"}],
        [{"tool_call_id": "c1", "content": 5}],
        [{"tool_call_id": "c1", "content": "x" * 101}],
        [{"tool_call_id": "c1", "content": "\ud800"}],
        [{"tool_call_id": f"c{n}", "content": "x" * 100} for n in range(5)],  # 500 in all
    ):
        with pytest.raises(BadInput):
            check_results(wrong, 100)


def test_pending_calls_are_those_of_the_last_reply_no_result_answers() -> None:
    asking = message(Role.ASSISTANT, tool_calls=(ADD, CLOCK))
    answered = message(Role.TOOL, "2", tool_call_id="c1")
    summary = message(Role.SYSTEM, "summary")
    assert pending_calls([message(Role.USER, "q"), asking]) == (ADD, CLOCK)
    assert pending_calls([asking, answered, summary]) == (CLOCK,)
    assert pending_calls([asking, answered, message(Role.TOOL, "x", tool_call_id="c2")]) == ()
    assert pending_calls([asking, message(Role.USER, "next")]) == ()
    assert pending_calls([message(Role.ASSISTANT, "plain")]) == ()
    assert pending_calls([]) == ()


def test_a_turn_is_its_message_and_its_final_answer() -> None:
    history = [
        message(Role.USER, "q1"),
        message(Role.ASSISTANT, "let me look", tool_calls=(ADD,)),
        message(Role.TOOL, "2", tool_call_id="c1"),
        message(Role.ASSISTANT, "it is 2"),
        message(Role.USER, "q2"),
        message(Role.ASSISTANT, "", tool_calls=(CLOCK,)),
        message(Role.TOOL, "cancelled", tool_call_id="c2"),
        message(Role.USER, "q3"),
        message(Role.ASSISTANT, "", tool_calls=(ADD,)),
    ]
    assert [(t.input, t.output) for t in exchanges(history)] == [
        ("q1", "it is 2"),
        ("q2", ""),
        ("q3", ""),
    ]


def test_a_reply_is_stored_as_langchain_keeps_it_and_sent_without_its_reasoning() -> None:
    invalid = ToolCall(id="c3", name="bad", arguments="{not json")
    stored = reply_message("answer", reasoning="because", tool_calls=[ADD, invalid])
    data = json.loads(encode(stored))["data"]
    assert data["additional_kwargs"]["reasoning_content"] == "because"
    assert data["tool_calls"] == [
        {"name": "add", "args": {"a": 1}, "id": "c1", "type": "tool_call"}
    ]
    assert data["invalid_tool_calls"][0]["args"] == "{not json"
    read = decode(encode(stored), 3)
    assert read is not None
    assert read.reasoning == "because" and read.tool_calls == (ADD, invalid)
    sent = to_model(read)
    assert isinstance(sent, AIMessage) and sent.additional_kwargs == {}
    assert "because" not in sent.model_dump_json()
    result = decode(encode(ToolMessage(content="2", tool_call_id="c1")), 4)
    assert result is not None and result.role is Role.TOOL and result.tool_call_id == "c1"
    assert isinstance(to_model(result), ToolMessage)


def test_the_window_never_starts_with_a_result_whose_call_it_left_out() -> None:
    window = [
        message(Role.TOOL, "2", tool_call_id="c1", id="4.a"),
        message(Role.ASSISTANT, "it is 2", id="5.b"),
        message(Role.USER, "again " * 50, id="6.c"),
        message(Role.ASSISTANT, "", tool_calls=(CLOCK,), id="7.d"),
        message(Role.TOOL, "noon " * 200, tool_call_id="c2", id="8.e"),
    ]
    whole = plan_context("sys", window, total=9, max_tokens=10_000)
    assert whole.message_ids == ["5.b", "6.c", "7.d", "8.e"]
    cut = plan_context("sys", window, total=9, max_tokens=300)
    # Over the budget, the newest whole messages go; the result alone would not do.
    assert cut.message_ids[0] != "8.e" and all(m.type != "tool" for m in cut.messages[:1])


def test_reasoning_and_answer_go_out_as_events_of_their_own_kind() -> None:
    live = LiveTurn("s", "t")
    live.extend([Reasoning(" r0"), "a", Reasoning(" r1"), "b"])
    assert live.answer() == "ab" and live.reasoning() == " r0 r1"

    async def merged() -> list[tuple[str, bool, int]]:
        turn = LiveTurn("s", "t", min_gap=0.05)
        turn.extend([Reasoning(" r0"), Reasoning(" r1"), "a", "b", Reasoning(" r2"), "c"])
        seen: list[tuple[str, bool, int]] = []
        events = turn.events(after=1)
        for _ in range(4):
            event = await anext(events)
            seen.append((event.token, event.reasoning, event.seq))
        await events.aclose()  # type: ignore[attr-defined]
        return seen

    assert asyncio.run(merged()) == [
        (" r1", True, 2),
        ("ab", False, 4),
        (" r2", True, 5),
        ("c", False, 6),
    ]


def test_the_turns_stream_keeps_the_kind_of_each_piece() -> None:
    pieces = ["[n=1]", Reasoning(" r0"), " a", Reasoning("")]
    args = _token_args(3, pieces)
    entry = _entry("6-0", {"f": str(args["first"]), "t": args["tokens"]})
    assert entry.tokens == pieces  # type: ignore[union-attr]
    assert [type(t) is Reasoning for t in entry.tokens] == [False, True, False, True]  # type: ignore[union-attr]
    # A plain reply's entry is what it always was: a list of strings.
    assert json.loads(str(_token_args(1, ["a", "b"])["tokens"])) == ["a", "b"]


def test_a_model_asking_for_too_much_fails_rather_than_fill_the_process() -> None:
    report = ReplyReport()
    report.add_call(0, "c", "f", "{")
    with pytest.raises(ValueError, match="arguments are longer"):
        report.add_call(0, None, None, "x" * MAX_TOOL_CALL_CHARS)
    report = ReplyReport()
    for index in range(64):
        report.add_call(index, f"c{index}", "f", "{}")
    with pytest.raises(ValueError, match="more than 64 tool calls"):
        report.add_call(64, "c64", "f", "{}")


def test_the_offline_model_reasons_calls_a_tool_and_answers_from_its_result() -> None:
    model = ChatModel([[OfflineChatModel(token_delay=0)]], "offline")
    tool = {"type": "function", "function": {"name": "calculator", "parameters": {}}}

    async def reply(
        messages: list[Any], tools: list[dict[str, Any]]
    ) -> tuple[list[str], ReplyReport]:
        report = ReplyReport()
        pieces = [p async for batch in model.stream(messages, report, tools) for p in batch]
        return pieces, report

    asking = [HumanMessage(content='!reason=2 !call=calculator{"expression":"6*7"} hi')]
    pieces, report = asyncio.run(reply(asking, [tool]))
    assert pieces == [" thought 0", " thought 1"] and all(type(p) is Reasoning for p in pieces)
    [(call_id, name, arguments)] = report.tool_calls()
    assert (name, json.loads(arguments)) == ("calculator", {"expression": "6*7"})
    answered = [
        *asking,
        AIMessage(content="", tool_calls=[{"name": name, "args": {}, "id": call_id}]),
        ToolMessage(content="42", tool_call_id=call_id),
    ]
    pieces, report = asyncio.run(reply(answered, [tool]))
    assert "".join(pieces) == "The tools answered: 42" and report.tool_calls() == []
    # A tool the client did not offer is not called.
    pieces, report = asyncio.run(reply(asking, []))
    assert report.tool_calls() == [] and "No LLM provider" in "".join(pieces)
