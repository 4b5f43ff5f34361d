"""The committed SDL is the schema the code builds, and it holds docs/api.md's names."""

from __future__ import annotations

from pathlib import Path

from schema import schema

SDL_FILE = Path(__file__).resolve().parent.parent / "schema" / "schema.graphql"


def test_committed_schema_matches_the_code() -> None:
    printed = schema.as_str() + "\n"
    assert SDL_FILE.read_text() == printed, (
        "schema/schema.graphql is stale: regenerate it with "
        "`python -c 'from schema import schema; print(schema.as_str())' > schema/schema.graphql`"
    )


def test_schema_has_the_contracts_operations() -> None:
    sdl = schema.as_str()
    for line in (
        "sessions(first: Int! = 50, after: String = null): SessionConnection!",
        "session(id: ID!): Session",
        "history(sessionId: ID!): [Turn!]!",
        "createSession(input: CreateSessionInput = null): Session!",
        "sendMessage(sessionId: ID!, message: String!): Message!",
        "deleteSession(id: ID!): Boolean!",
        "chat(sessionId: ID!, message: String!, turnId: ID = null, tools: [ToolInput!] = null): "
        "ChatEvent!",
        "submitToolResults(sessionId: ID!, turnId: ID = null, results: [ToolResultInput!]!, "
        "tools: [ToolInput!] = null): ChatEvent!",
        "pendingToolCalls: [ToolCall!]!",
        "toolCalls: [ToolCall!]",
        "toolCallId: ID",
        "reasoning: String",
        "scalar JSON",
        "messages(last: Int = null): [Message!]!",
        "switchBranch(sessionId: ID!, messageId: ID!): Session!",
        "edit(sessionId: ID!, messageId: ID!, message: String!, turnId: ID = null): ChatEvent!",
        "regenerate(sessionId: ID!, turnId: ID = null, messageId: ID = null): ChatEvent!",
        "parentId: ID",
        "siblingIds: [ID!]!",
    ):
        assert line in sdl
