"""Changing a conversation after the fact: renaming a session, changing its prompt,
pinning or archiving it, paging back through its messages by id, rewinding it to before
a message, and switching between its branches.

Message ids name a position on the path (see `history.message_id`; the depth in the
conversation's tree), so a page or a rewind finds its message with one `LINDEX` and
checks the whole id there, in the same script that reads or trims: never a read of the
whole list. The branches off the path live beside it (`scripts/_tree.lua`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from redis.asyncio import Redis, RedisCluster
from redis.typing import EncodableT

from resolvers.services.errors import BadInput, DataConflict, NotFound, SessionBusy
from resolvers.services.history import (
    Role,
    StoredMessage,
    decode,
    decode_newest_first,
)
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.keys import (
    ARCHIVED_INDEX_PREFIX,
    OWNER_INDEX_PREFIX,
    PINNED_INDEX_PREFIX,
    kids_key,
    lock_key,
    messages_key,
    meta_key,
    tree_key,
)
from resolvers.services.scripts import Script
from resolvers.services.sessions import MAX_PAGE, SessionInfo, SessionStore
from resolvers.services.stamping import Stamper
from resolvers.services.validation import check_session_id, message_position
from resolvers.services.window import ContextPlan, plan_context

_NO_SESSION = "no session with that id"
_NO_MESSAGE = "no message with that id in this session"


class Conversations:
    """Edits and reads of a session's conversation; ownership as for every session
    operation (NotFound for a session `who` may not use)."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        sessions: SessionStore,
        *,
        history_window: int = 40,
        history_tokens: int = 8000,
        summaries: bool = False,
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._index = sessions.index
        self._window = history_window
        self._history_tokens = history_tokens
        self._summaries = summaries
        self._page = Script(redis, "page")
        self._rewind = Script(redis, "rewind")
        self._update = Script(redis, "update_session")
        self._read_window = Script(redis, "read_window")
        self._switch = Script(redis, "switch_branch")
        self._stamper = Stamper(redis)

    async def update(
        self,
        session_id: str,
        *,
        title: str | None,
        system_prompt: str | None,
        who: Identity = ANONYMOUS,
        pinned: bool | None = None,
        archived: bool | None = None,
    ) -> SessionInfo:
        """Change the title, the system prompt and the flags (None: unchanged; a blank
        title clears it, a blank prompt restores the default); the session as it now
        is. A pinned or archived session moves between its owner's indexes in the same
        step (on a cluster, right after)."""
        title, system_prompt = self._sessions.check_fields(title, system_prompt)
        await self._sessions.require(session_id, who=who)  # adopts a foreign list first
        title_arg = "" if title is None else ("=" + title if title.strip() else "-")
        prompt_arg = "" if system_prompt is None else "=" + system_prompt
        args: dict[str, EncodableT] = {
            **_caller(who),
            "title": title_arg,
            "prompt": prompt_arg,
            "pinned": _flag_arg(pinned),
            "archived": _flag_arg(archived),
            "session_id": session_id,
        }
        single = isinstance(self._redis, Redis)
        if single:
            args["owner_prefix"] = OWNER_INDEX_PREFIX
            args["archived_prefix"] = ARCHIVED_INDEX_PREFIX
            args["pinned_prefix"] = PINNED_INDEX_PREFIX
        result = await self._update(keys={"meta": meta_key(session_id)}, args=args)
        if _outcome(result) == 0:
            raise NotFound(_NO_SESSION)
        info = await self._sessions.require(session_id, who=who)
        owner = result["owner"]
        if not single and owner and (pinned is not None or archived is not None):
            await self._index.refile(
                session_id,
                owner=str(owner),
                score=int(result["score"]),
                pinned=info.pinned,
                archived=info.archived,
            )
        return info

    async def page(
        self,
        session_id: str,
        *,
        last: int,
        before: str | None,
        who: Identity = ANONYMOUS,
    ) -> list[StoredMessage]:
        """The last `last` messages before the message `before` (all the latest when
        None), oldest first, in one round trip whatever the session's length."""
        check_session_id(session_id)
        if not 0 <= last <= MAX_PAGE:
            raise BadInput(f"last must be from 0 to {MAX_PAGE}")
        position = -1 if before is None else message_position(before)
        result = await self._page(
            keys={"messages": messages_key(session_id), "meta": meta_key(session_id)},
            args={**_caller(who), "last": last, "position": position, "id": before or ""},
        )
        outcome = _outcome(result)
        if outcome == 0:
            raise NotFound(_NO_SESSION)
        if outcome == -2:
            raise BadInput(_NO_MESSAGE)
        return decode_newest_first(
            result["elements"], int(result["newest"]) + 1, below=result["below"] or None
        )

    async def context(self, session_id: str, *, who: Identity = ANONYMOUS) -> ContextPlan:
        """What the next turn would send: the same choice the turn makes, on the same
        reads (the system prompt, the window, the list's length)."""
        check_session_id(session_id)
        result = await self._read_window(
            keys={"meta": meta_key(session_id), "messages": messages_key(session_id)},
            args={**_caller(who), "window": self._window},
        )
        if _outcome(result) == 0:
            raise NotFound(_NO_SESSION)
        length = int(result["length"])
        window = decode_newest_first(result["window"] or [], length)
        summary = None
        if self._summaries and result["summary"]:
            found = decode(str(result["summary"]), int(result["summary_at"]))
            summary = found if found is not None and found.role is Role.SYSTEM else None
        prompt = result["prompt"]
        return plan_context(
            self._sessions.prompt_or_default(prompt),
            window,
            total=length,
            max_tokens=self._history_tokens,
            summary=summary,
        )

    async def rewind(
        self, session_id: str, message_id: str, *, who: Identity = ANONYMOUS
    ) -> SessionInfo:
        """Forget the message `message_id` and everything after it (the rest of the path
        and every branch below them), at once; SessionBusy while a turn runs. The
        session as it now is."""
        return await self._change_path(self._rewind, session_id, message_id, who)

    async def switch_branch(
        self, session_id: str, message_id: str, *, who: Identity = ANONYMOUS
    ) -> SessionInfo:
        """Make the path through `message_id` active (up to it, then down its newest
        children), at once; SessionBusy while a turn runs. The session as it now is."""
        return await self._change_path(self._switch, session_id, message_id, who)

    async def _change_path(
        self, script: Script, session_id: str, message_id: str, who: Identity
    ) -> SessionInfo:
        """Run a script that changes the path at a message (`rewind.lua`,
        `switch_branch.lua`: the same keys, arguments and outcomes)."""
        check_session_id(session_id)
        position = message_position(message_id)
        args: dict[str, EncodableT] = {**_caller(who), "position": position, "id": message_id}
        result = await script(keys=self._tree_keys(session_id), args=args)
        if _outcome(result) == -5:
            # Another program's messages would leave the path: ids of their own first.
            await self._stamper.stamp(session_id, int(result["moved"]), who=who)
            result = await script(keys=self._tree_keys(session_id), args=args)
        outcome = _outcome(result)
        if outcome == -5:
            raise SessionBusy("another program changed this conversation meanwhile; try again")
        if outcome == 0:
            raise NotFound(_NO_SESSION)
        if outcome == -1:
            raise SessionBusy("a turn is running on this session; stop it or wait")
        if outcome == -2:
            raise BadInput(_NO_MESSAGE)
        return await self._sessions.require(session_id, who=who)

    async def siblings(self, session_id: str, parents: Sequence[str]) -> dict[str, list[str]]:
        """The children of each message in `parents` ('' for the start) that has some
        off the active path, all of them, oldest first; a message left out has at most
        one child, the next on the path. One read, whatever the tree's size; the caller
        has read the session's messages already (its owner is checked)."""
        unique = list(dict.fromkeys(parents))
        if not unique:
            return {}
        found = await self._redis.hmget(kids_key(session_id), unique)
        listed: dict[str, list[str]] = {}
        for parent, value in zip(unique, found, strict=True):
            ids = _id_list(value)
            if ids:
                listed[parent] = ids
        return listed

    @staticmethod
    def _tree_keys(session_id: str) -> dict[str, str]:
        return {
            "messages": messages_key(session_id),
            "meta": meta_key(session_id),
            "lock": lock_key(session_id),
            "tree": tree_key(session_id),
            "kids": kids_key(session_id),
        }


def _id_list(value: object) -> list[str] | None:
    """A children entry as the scripts write it (a JSON list of ids), or None."""
    if not isinstance(value, str | bytes):
        return None
    try:
        ids = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return ids


def _flag_arg(value: bool | None) -> str:
    return "" if value is None else ("1" if value else "0")


def _caller(who: Identity) -> dict[str, str]:
    return {"admin": "1" if who.is_admin else "0", "user": who.user_id or ""}


def _outcome(result: dict[str, object]) -> int:
    outcome = int(str(result["outcome"]))
    if outcome == -9:
        raise DataConflict(
            "a key of this session holds a value of another type (another program wrote "
            "it); nothing was changed"
        )
    return outcome
