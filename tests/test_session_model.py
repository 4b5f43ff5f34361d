"""A model of one session, driven through the real services of two server processes.

Two `Services` (what `main.py` opens per process) on one Redis database, the second
through a proxy that can lose a reply on the wire, and the real `langchain-groq` client
against the fake provider with its fault markers. Hypothesis picks any sequence of what
happens to a session: turns that complete, fail, are stopped or whose stream the
provider holds open after `[DONE]`, commits whose answer is lost, rewinds, regenerates
(of the last reply or any), edits, switches between branches, summaries of trimmed
history (on, with a small budget), an expiry, export and import, deletes, another
LangChain program appending to or clearing the list. A plain Python model of the
conversation (a tree, with its active path) says what must be; after every step:

- the history (user and assistant messages, in order) equals the model's active path;
- a turn reported failed is not stored, and one reported stored is;
- `Session.usage` is the sum of the stored replies' counts, in every branch;
- the provider never received a message that was not on the active path (rewound,
  cleared, or left on another branch) when the request was made;
- nothing of a deleted (or expired) session is left in Redis;
- its flags (pinned, archived) are what was last set, through export and import too;
- each share link reads the conversation as it was when shared, and a revoked one, or
  one of a deleted, expired or replaced session, reads as none.

The model's titles (TITLE_AUTO) are off here: they land in the background, at no step
of the model; their usage and their place are test_list_api.py's and test_scripts.py's.

Later operations (branches, tools, queues, budgets) add their rules here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from resolvers.services import scripts
from resolvers.services.container import Services, open_services
from resolvers.services.conversation import Conversations
from resolvers.services.errors import ChatError, NotFound
from resolvers.services.history import Role, StoredMessage
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.keys import messages_key, share_pointer_key
from resolvers.services.settings import Settings
from tests.support import FakeGroq, RedisServer
from tests.support.fuzzing import FuzzStats, reporting
from tests.support.machines import AsyncMachine
from tests.support.redis_proxy import RedisProxy

ADMIN = Identity(user_id=None, is_admin=True)
TOOLS: list[dict[str, Any]] = [{"name": "look"}, {"name": "find", "parameters": {"type": "object"}}]
COMMIT_SHA = hashlib.sha1(scripts.source("commit_turn").encode()).hexdigest().encode()  # noqa: S324


@dataclass
class Said:
    role: Role
    text: str
    usage: tuple[int, int] = (0, 0)
    # The id the server gave it (read back after the step that stored it), the id of the
    # message it follows ('' for the first), and when it was made (the newest child is
    # the one a switch goes down).
    id: str = ""
    parent: str = ""
    made: int = 0
    # A reply's tool calls (their ids), answered together by the next turn.
    calls: tuple[str, ...] = ()


@dataclass
class Conversation:
    """The model: the active path, the messages off it, and the markers that may not
    reach the model while they are off the path."""

    exists: bool = False
    messages: list[Said] = field(default_factory=list)
    off: dict[str, Said] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    # The session's flags, and its share links: id -> the conversation when shared.
    pinned: bool = False
    archived: bool = False
    shares: dict[str, list[tuple[Role, str]]] = field(default_factory=dict)
    # Share links revoked, or gone with their session: each reads as no share.
    gone_shares: set[str] = field(default_factory=set)

    def forget(self, from_index: int) -> None:
        """A rewind: the path from `from_index` on and every branch below it go."""
        gone = {said.id for said in self.messages[from_index:]}
        for said in self.messages[from_index:]:
            self.forgotten |= markers(said.text)
        for _ in range(len(self.off) + 1):
            below = [s for s in self.off.values() if s.parent in gone and s.id not in gone]
            if not below:
                break
            gone |= {s.id for s in below}
        for said_id in gone & set(self.off):
            self.forgotten |= markers(self.off.pop(said_id).text)
        del self.messages[from_index:]

    def drop_all(self) -> None:
        """The list cleared by another program: the branches lose their places too."""
        self.forget(0)
        for said in self.off.values():
            self.forgotten |= markers(said.text)
        self.off.clear()

    def leave(self, from_index: int) -> None:
        """An edit or a regenerate: the path from `from_index` on moves off it. A message
        another program wrote has its place for an id until then; the server gives it
        one of its own as it leaves, which the model names apart (`rename`)."""
        for said in self.messages[from_index:]:
            if "." not in said.id:
                self.rename(said.id, f"~{len(self.off)}.{said.made}")
            self.off[said.id] = said
            self.forgotten |= markers(said.text)
        del self.messages[from_index:]

    def rename(self, old: str, new: str) -> None:
        """A message's id in the model, and in the messages that follow it."""
        for said in self.every():
            if said.parent == old:
                said.parent = new
        for said in self.messages:
            if said.id == old:
                said.id = new
        if old in self.off:
            self.off[new] = self.off.pop(old)
            self.off[new].id = new

    def switch(self, target: str) -> None:
        """The path through `target`, then down the newest children."""
        every = {s.id: s for s in [*self.messages, *self.off.values()]}
        chain = [every[target]]
        while chain[-1].parent:
            chain.append(every[chain[-1].parent])
        chain.reverse()
        for _ in range(len(every)):
            children = [s for s in every.values() if s.parent == chain[-1].id]
            if not children:
                break
            chain.append(max(children, key=lambda s: s.made))
        on = {s.id for s in chain}
        for said in self.messages:
            if said.id not in on:
                self.off[said.id] = said
                self.forgotten |= markers(said.text)
        for said in chain:
            self.off.pop(said.id, None)
        self.messages = chain

    def every(self) -> list[Said]:
        return [*self.messages, *self.off.values()]

    def pending(self) -> tuple[str, ...]:
        """The calls of the path's last reply, when it ends with one that asks."""
        last = self.messages[-1] if self.messages else None
        return last.calls if last is not None and last.role is Role.ASSISTANT else ()

    def kept(self) -> set[str]:
        """The markers on the active path (a reply echoes its message's)."""
        return {m for said in self.messages for m in markers(said.text)}


def markers(text: str) -> set[str]:
    return {word for word in text.split() if word.startswith("m") and word[1:].isdigit()}


class SessionModel(AsyncMachine):
    name = "session model"
    fake: ClassVar[FakeGroq]
    proxy: ClassVar[RedisProxy]
    proxy_url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.AsyncExitStack()
        self.processes: list[Services] = [
            self.run(self.stack.enter_async_context(open_services(settings_for(url))))
            for url in (self.redis_url, self.proxy_url)
        ]
        self.redis = self.client(app_like=True)
        self.run(self.redis.flushdb())
        self.model = Conversation()
        self.session_id = ""
        self.counter = 0
        self.completes = 0

    def teardown(self) -> None:
        try:
            self.run(self.stack.aclose())
        finally:
            super().teardown()

    # -- helpers

    def marker(self) -> str:
        self.counter += 1
        return f"m{self.counter}"

    def stored(self) -> list[StoredMessage]:
        services = self.processes[0]
        try:
            found = self.run(services.sessions.messages(self.session_id))
        except ChatError:
            return []
        return [m for m in found if m.role is not Role.SYSTEM]

    def turn(
        self,
        process: int,
        message: str,
        *,
        regenerate: bool = False,
        edit: bool = False,
        at: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        results: list[dict[str, Any]] | None = None,
    ) -> StoredMessage:
        runner = self.processes[process].turns

        async def run() -> StoredMessage:
            live = await runner.start(
                session_id=self.session_id,
                message=message,
                regenerate=regenerate,
                edit=edit,
                at=at,
                tools=tools,
                results=results,
            )
            return await live.reply()

        return self.run(run())

    def add(self, *said: Said) -> None:
        """New messages at the path's end; their ids as the server gave them."""
        self.model.messages += said
        stored = self.stored()
        assert len(stored) == len(self.model.messages)
        for index, (model, found) in enumerate(zip(self.model.messages, stored, strict=True)):
            if not model.id:
                self.counter += 1
                model.id, model.made = found.id, self.counter
                model.parent = self.model.messages[index - 1].id if index else ""

    def sent_to_provider(self) -> list[dict[str, Any]]:
        recent = self.fake.requests()["recent"]
        assert isinstance(recent, list)
        return recent

    def check_provider_saw_nothing_forgotten(self, since: int) -> None:
        for body in self.sent_to_provider()[since:]:
            sent = json.dumps(body.get("messages"))
            gone = self.model.forgotten - self.model.kept()
            leaked = {m for m in gone if f"{m} " in sent or f'{m}"' in sent}
            assert not leaked, f"the provider received forgotten messages: {sorted(leaked)}"

    # -- rules

    @initialize()
    def a_session(self) -> None:
        self.create()

    @precondition(lambda self: not self.model.exists)
    @rule()
    def create(self) -> None:
        self.step("create")
        made = self.run(self.processes[0].sessions.create())
        self.session_id = made.id
        gone = self.model.gone_shares | set(self.model.shares)
        self.model = Conversation(exists=True, forgotten=self.model.forgotten, gone_shares=gone)

    @precondition(lambda self: self.model.exists)
    @rule(process=st.integers(0, 1))
    def turn_complete(self, process: int) -> None:
        """A turn; every other one a reply that asks for tools, answered at once from the
        other process, or (every third time) left pending: a later message cancels it."""
        self.completes += 1
        if self.completes % 2:
            self.send(process, "complete")
            return
        self.turn_calls_tools(process)
        if self.completes % 6:
            self.answer_calls(1 - process)

    @precondition(lambda self: self.model.exists)
    @rule(process=st.integers(0, 1))
    def turn_fails(self, process: int) -> None:
        self.send(process, "fail")

    @precondition(lambda self: self.model.exists)
    @rule(process=st.integers(0, 1))
    def turn_held_open(self, process: int) -> None:
        self.send(process, "held")

    @precondition(lambda self: self.model.exists)
    @rule()
    def turn_commit_answer_lost(self) -> None:
        self.send(1, "lost commit")

    def send(self, process: int, kind: str) -> None:
        """A turn: stored and reported stored, or reported failed and not stored."""
        marker = self.marker()
        text = {
            "complete": f"{marker} hello",
            "fail": f"{marker} !status=500",
            "held": f"{marker} !hold_after_done=1",
            "lost commit": f"{marker} for the proxy",
        }[kind]
        self.step(f"turn ({kind})")
        seen = len(self.sent_to_provider())
        proxy = None
        if kind == "lost commit":
            process = 1  # the process behind the proxy
            proxy = self.proxy
            proxy.lose_reply_to(COMMIT_SHA)
        failed: ChatError | None = None
        cancelled = [Said(Role.TOOL, "cancelled") for _ in self.model.pending()]
        try:
            reply = self.turn(process, text)
        except ChatError as error:
            failed = error
        finally:
            if proxy is not None:
                proxy.lose_reply_to(None)
        if failed is not None:
            assert kind == "fail", f"{kind}: {failed.code} {failed.message}"
            assert [m.text for m in self.model.messages] == [m.content for m in self.stored()]
            return
        assert kind != "fail", "a turn the provider failed was stored"
        usage = (reply.usage.input_tokens, reply.usage.output_tokens) if reply.usage else (0, 0)
        self.add(*cancelled, Said(Role.USER, text), Said(Role.ASSISTANT, reply.content, usage))
        self.check_provider_saw_nothing_forgotten(seen)

    def turn_calls_tools(self, process: int) -> None:
        """A reply that asks for two of the client's tools: stored with its calls."""
        self.step("turn (calls tools)")
        text = f'{self.marker()} !call=look{{}} !call=find{{"q":1}}'
        cancelled = [Said(Role.TOOL, "cancelled") for _ in self.model.pending()]
        reply = self.turn(process, text, tools=TOOLS)
        assert reply.status.value == "COMPLETE" and reply.content == ""  # the turn: REQUIRES_ACTION
        assert [c.name for c in reply.tool_calls] == ["look", "find"]
        usage = (reply.usage.input_tokens, reply.usage.output_tokens) if reply.usage else (0, 0)
        calls = tuple(c.id for c in reply.tool_calls)
        self.add(*cancelled, Said(Role.USER, text), Said(Role.ASSISTANT, "", usage, calls=calls))

    def answer_calls(self, process: int) -> None:
        """The client's results, from either process: stored, then the model's answer."""
        self.step("tool results")
        marker = self.marker()
        calls = self.model.pending()
        results = [{"tool_call_id": c, "content": f"{marker} {n}"} for n, c in enumerate(calls)]
        seen = len(self.sent_to_provider())
        reply = self.turn(process, "", results=results[::-1], tools=TOOLS)
        assert reply.status.value == "COMPLETE"
        assert reply.content.endswith(" ".join(f"{c}={marker} {n}" for n, c in enumerate(calls)))
        usage = (reply.usage.input_tokens, reply.usage.output_tokens) if reply.usage else (0, 0)
        answers = [Said(Role.TOOL, f"{marker} {n}") for n in range(len(calls))]
        self.add(*answers, Said(Role.ASSISTANT, reply.content, usage))
        self.check_provider_saw_nothing_forgotten(seen)

    @precondition(lambda self: self.model.exists)
    @rule(process=st.integers(0, 1))
    def stopped(self, process: int) -> None:
        """A slow reply stopped from the other process: stored STOPPED with what it had."""
        marker = self.marker()
        text = f"{marker} !delay=0.02 !tokens=200"
        self.step("turn (stopped)")
        runner = self.processes[process].turns
        other = self.processes[1 - process].turns

        async def run() -> StoredMessage:
            live = await runner.start(session_id=self.session_id, message=text)
            async for event in live.events():
                if event.seq >= 3:
                    break
            assert await other.stop(self.session_id)
            return await live.reply()

        cancelled = [Said(Role.TOOL, "cancelled") for _ in self.model.pending()]
        reply = self.run(run())
        assert reply.status.value == "STOPPED" and reply.content.startswith("[n=")
        usage = (reply.usage.input_tokens, reply.usage.output_tokens) if reply.usage else (0, 0)
        self.add(*cancelled, Said(Role.USER, text), Said(Role.ASSISTANT, reply.content, usage))

    @precondition(lambda self: self.model.exists and self.model.messages)
    @rule(data=st.data(), process=st.integers(0, 1))
    def rewind(self, data: st.DataObject, process: int) -> None:
        self.step("rewind")
        stored = self.stored()
        index = data.draw(st.integers(0, len(stored) - 1), label="rewind to")
        conversations: Conversations = self.processes[process].conversations
        self.run(conversations.rewind(self.session_id, stored[index].id))
        self.model.forget(index)

    @precondition(
        lambda self: (
            self.model.exists
            and len(self.model.messages) >= 2
            and self.model.messages[-1].role is Role.ASSISTANT
            and self.model.messages[-2].role is Role.USER
        )
    )
    @rule(process=st.integers(0, 1))
    def regenerate(self, process: int) -> None:
        self.step("regenerate")
        seen = len(self.sent_to_provider())
        reply = self.turn(process, "", regenerate=True)
        usage = (reply.usage.input_tokens, reply.usage.output_tokens) if reply.usage else (0, 0)
        self.model.leave(len(self.model.messages) - 1)
        self.add(Said(Role.ASSISTANT, reply.content, usage))
        self.check_provider_saw_nothing_forgotten(seen)

    @precondition(
        lambda self: self.model.exists and any(m.role is Role.USER for m in self.model.messages)
    )
    @rule(data=st.data(), process=st.integers(0, 1))
    def edit(self, data: st.DataObject, process: int) -> None:
        """A new version of any user message of the path: the old one and all after it
        stay, off the path; the model is sent the path before it."""
        # Not a message another program wrote that has versions off the path below it:
        # its id changes as it leaves the path, and those versions are then lost (a
        # known defect of stamp_ids.lua, see the closing note of issue 23).
        below = {said.parent for said in self.model.off.values()}
        users = [
            k
            for k, m in enumerate(self.model.messages)
            if m.role is Role.USER
            and not any("." not in s.id and s.id in below for s in self.model.messages[k:])
        ]
        if not users:
            return
        self.step("edit")
        index = data.draw(st.sampled_from(users), label="edit")
        text = f"{self.marker()} edited"
        seen = len(self.sent_to_provider())
        old = self.model.messages[index].id
        reply = self.turn(process, text, edit=True, at=old)
        usage = (reply.usage.input_tokens, reply.usage.output_tokens) if reply.usage else (0, 0)
        self.model.leave(index)
        self.add(Said(Role.USER, text), Said(Role.ASSISTANT, reply.content, usage))
        self.check_provider_saw_nothing_forgotten(seen)
        # Back to the old version (by the id it had: one of the server's, not a place).
        if "." in old and data.draw(st.booleans(), label="switch back"):
            self.switch_to(old, 1 - process)

    @precondition(
        lambda self: (
            self.model.exists
            and any(
                m.role is Role.ASSISTANT and k and self.model.messages[k - 1].role is Role.USER
                for k, m in enumerate(self.model.messages)
            )
        )
    )
    @rule(data=st.data(), process=st.integers(0, 1))
    def regenerate_any(self, data: st.DataObject, process: int) -> None:
        """A new version of any reply of the path, by its id."""
        self.step("regenerate (by id)")
        path = self.model.messages
        replies = [
            k
            for k, m in enumerate(path)
            if m.role is Role.ASSISTANT and k and path[k - 1].role is Role.USER
        ]
        index = data.draw(st.sampled_from(replies), label="regenerate")
        seen = len(self.sent_to_provider())
        reply = self.turn(process, "", regenerate=True, at=path[index].id)
        usage = (reply.usage.input_tokens, reply.usage.output_tokens) if reply.usage else (0, 0)
        self.model.leave(index)
        self.add(Said(Role.ASSISTANT, reply.content, usage))
        self.check_provider_saw_nothing_forgotten(seen)

    @precondition(lambda self: self.model.exists and self.model.off)
    @rule(data=st.data(), process=st.integers(0, 1))
    def switch(self, data: st.DataObject, process: int) -> None:
        """The path through any message, on the path or off it."""
        # (Not by a name only the model knows: an outside message's id it did not read.)
        every = sorted(s.id for s in self.model.every() if not s.id.startswith("~"))
        self.switch_to(data.draw(st.sampled_from(every), label="switch to"), process)

    def switch_to(self, target: str, process: int) -> None:
        self.step("switch")
        conversations: Conversations = self.processes[process].conversations
        self.run(conversations.switch_branch(self.session_id, target))
        self.model.switch(target)
        # Messages back on the path show the ids the server gave them.
        for said, found in zip(self.model.messages, self.stored(), strict=True):
            if said.id.startswith("~"):
                self.model.rename(said.id, found.id)

    @precondition(lambda self: self.model.exists)
    @rule()
    def outside_append(self) -> None:
        """Another LangChain program appends a message (its own layout, no id)."""
        self.step("outside append")
        text = f"{self.marker()} written elsewhere"
        element = json.dumps({"type": "human", "data": {"content": text}})
        self.run(self.redis.lpush(messages_key(self.session_id), element))
        self.add(Said(Role.USER, text))

    @precondition(lambda self: self.model.exists and len(self.model.messages) >= 2)
    @rule()
    def outside_clear(self) -> None:
        """Another LangChain program clears the list (RedisChatMessageHistory.clear())."""
        self.step("outside clear")
        self.run(self.redis.delete(messages_key(self.session_id)))
        self.model.drop_all()

    @precondition(lambda self: self.model.exists and len(self.model.messages) >= 4)
    @rule(process=st.integers(0, 1))
    def export_and_import(self, process: int) -> None:
        self.step("export, delete, import")
        transfer = self.processes[process].transfer

        async def move() -> None:
            lines = [line async for line in transfer.export([self.session_id])]
            assert await self.processes[1 - process].sessions.delete(self.session_id)
            done = await transfer.import_lines(lines)
            assert done.written == (1 if lines else 0)

        self.run(move())
        self.forget_shares()  # the delete took them; the export does not carry them
        if not self.model.messages and not self.run(
            self.processes[0].sessions.get(self.session_id)
        ):
            self.model.exists = False  # a session with nothing in it exports nothing

    @precondition(lambda self: self.model.exists and len(self.model.messages) >= 2)
    @rule(process=st.integers(0, 1))
    def delete(self, process: int) -> None:
        self.step("delete")
        assert self.run(self.processes[process].sessions.delete(self.session_id))
        self.model.drop_all()
        self.model.exists = False
        self.assert_nothing_left()
        for share_id in self.model.shares:
            assert not self.run(self.redis.exists(share_pointer_key(share_id)))
        self.forget_shares()

    @precondition(lambda self: self.model.exists and len(self.model.messages) >= 4)
    @rule()
    def expire(self) -> None:
        """The session's TTL runs out: its keys go (as Redis expires them)."""
        self.step("expiry")

        async def expire_all() -> None:
            async for key in self.redis.scan_iter(match=f"*{self.session_id}*", count=1000):
                await self.redis.pexpire(key, 1)

        self.run(expire_all())
        self.run(_sleep(0.01))
        self.model.drop_all()
        self.model.exists = False
        self.forget_shares()

    def forget_shares(self) -> None:
        self.model.gone_shares |= set(self.model.shares)
        self.model.shares = {}

    # One rule for the list's operations, once the session holds a turn: rules of their
    # own, always on, crowded out those the long run counts (deletes, rewinds).
    @precondition(lambda self: self.model.exists and len(self.model.messages) >= 2)
    @rule(data=st.data(), process=st.integers(0, 1))
    def listing(self, data: st.DataObject, process: int) -> None:
        actions = ["pin or archive", "share"] + (["revoke a share"] if self.model.shares else [])
        action = data.draw(st.sampled_from(actions), label="action")
        self.step(action)
        services = self.processes[process]
        if action == "pin or archive":
            pinned, archived = data.draw(st.tuples(st.booleans(), st.booleans()), label="flags")
            changed = self.run(
                services.conversations.update(
                    self.session_id,
                    title=None,
                    system_prompt=None,
                    pinned=pinned,
                    archived=archived,
                )
            )
            assert (changed.pinned, changed.archived) == (pinned, archived)
            self.model.pinned, self.model.archived = pinned, archived
        elif action == "share":
            made = self.run(services.shares.create(self.session_id))
            self.model.shares[made.id] = [(m.role, m.text) for m in self.model.messages]
        else:
            share_id = data.draw(st.sampled_from(sorted(self.model.shares)), label="share")
            # The session has no owner: an admin revokes (a share id alone may not).
            assert self.run(services.shares.revoke(share_id, who=ADMIN))
            del self.model.shares[share_id]
            self.model.gone_shares.add(share_id)
            assert not self.run(self.redis.exists(share_pointer_key(share_id)))

    def assert_nothing_left(self) -> None:
        async def left() -> list[str]:
            return [k async for k in self.redis.scan_iter(match=f"*{self.session_id}*")]

        assert self.run(left()) == []

    # -- what must hold after every step

    @invariant()
    def the_history_is_the_model(self) -> None:
        if not self.session_id:
            return
        if not self.model.exists:
            self.assert_nothing_left()
            return
        stored = self.stored()
        assert [(m.role, m.content) for m in stored] == [
            (s.role, s.text) for s in self.model.messages
        ]

    @invariant()
    def the_flags_are_the_models(self) -> None:
        if not self.model.exists:
            return
        info = self.run(self.processes[0].sessions.get(self.session_id))
        if info is not None:
            assert (info.pinned, info.archived) == (self.model.pinned, self.model.archived)

    @invariant()
    def each_share_reads_what_was_shared(self) -> None:
        shares = self.processes[1].shares
        for share_id, shared in self.model.shares.items():
            found = self.run(shares.snapshot(share_id))
            shown = [(m.role, m.content) for m in found.messages if m.role is not Role.SYSTEM]
            assert shown == shared, share_id
        for share_id in self.model.gone_shares:
            with pytest.raises(NotFound):
                self.run(shares.snapshot(share_id))

    @invariant()
    def usage_is_the_sum_of_the_stored_replies(self) -> None:
        if not self.model.exists:
            return
        info = self.run(self.processes[1].sessions.get(self.session_id, who=ANONYMOUS))
        if info is None:
            assert not self.model.messages
            return
        expected = (
            sum(m.usage[0] for m in self.model.every()),
            sum(m.usage[1] for m in self.model.every()),
        )
        assert (info.usage.input_tokens, info.usage.output_tokens) == expected


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def settings_for(redis_url: str) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        llm_model="groq:llama-3.1-8b-instant",
        groq_api_key="test-key",
        llm_timeout_seconds=5,
        history_summary=True,
        title_auto=False,
        history_max_tokens=60,
        history_window=6,
        stream_min_interval_ms=0,
        turn_lock_seconds=5,
        rate_limit_per_minute=0,
        rate_limit_turns_per_minute=0,
        user_turns_per_minute=0,
        user_sessions_per_minute=0,
        user_max_sessions=0,
    )


@pytest.fixture
def provider_env(fake_groq: FakeGroq) -> Iterator[None]:
    """The real langchain-groq client finds the fake provider through the environment."""
    saved = {k: os.environ.get(k) for k in ("GROQ_API_BASE", "GROQ_API_KEY")}
    os.environ["GROQ_API_BASE"] = fake_groq.url
    os.environ["GROQ_API_KEY"] = "test-key"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_model(
    fresh_db: Callable[[], str],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
    stats: FuzzStats,
    machine_settings: settings,
) -> None:
    url = fresh_db()
    database = url.rsplit("/", 1)[1]
    proxy = RedisProxy(redis_server.port).start()
    try:
        SessionModel.redis_url = url
        SessionModel.proxy_url = f"{proxy.url[:-2]}/{database}"
        SessionModel.proxy = proxy
        SessionModel.fake = fake_groq
        SessionModel.stats = stats
        run_state_machine_as_test(SessionModel, settings=machine_settings)
    finally:
        proxy.stop()


def machine_settings(examples: int, steps: int) -> settings:
    # No shrinking: with real servers it takes minutes; the failing run is printed whole.
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_session_follows_its_model(
    fresh_db: Callable[[], str],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
    provider_env: None,
    request: pytest.FixtureRequest,
) -> None:
    stats = reporting(request.config)
    run_model(fresh_db, redis_server, fake_groq, stats, machine_settings(10, 25))
    # Each kind of step ran (a completed turn with or without tools), most of them twice.
    at_least = {
        ("turn (complete)", "turn (calls tools)"): 2, ("turn (fail)",): 2,
        ("turn (lost commit)",): 2, ("rewind",): 2, ("delete",): 2, ("edit",): 2,
        ("switch",): 2, ("tool results",): 1,
    }  # fmt: skip
    for kinds, least in at_least.items():
        assert sum(stats.cases(SessionModel.name, kind) for kind in kinds) >= least, kinds


def test_a_session_follows_its_model_briefly(
    fresh_db: Callable[[], str],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
    provider_env: None,
    request: pytest.FixtureRequest,
) -> None:
    """The same, a short fixed run, in the fast tier."""
    run_model(fresh_db, redis_server, fake_groq, reporting(request.config), machine_settings(1, 12))
