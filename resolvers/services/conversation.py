"""Changing a conversation after the fact: renaming a session, changing its prompt,
pinning or archiving it, paging back through its messages by id, and rewinding it to
before a message.

Message ids name a position in the list (see `history.message_id`), so a page or a
rewind finds its message with one `LINDEX` and checks the whole id there, in the same
script that reads or trims: never a read of the whole list.
"""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster
from redis.typing import EncodableT

from resolvers.services.errors import BadInput, DataConflict, NotFound, SessionBusy
from resolvers.services.history import (
    Role,
    StoredMessage,
    decode,
    decode_newest_first,
    position_of,
)
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.keys import (
    ARCHIVED_INDEX_PREFIX,
    OWNER_INDEX_PREFIX,
    PINNED_INDEX_PREFIX,
    lock_key,
    messages_key,
    meta_key,
)
from resolvers.services.scripts import Script
from resolvers.services.sessions import MAX_PAGE, SessionInfo, SessionStore
from resolvers.services.validation import check_session_id
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
        position = -1 if before is None else _position(before)
        result = await self._page(
            keys={"messages": messages_key(session_id), "meta": meta_key(session_id)},
            args={**_caller(who), "last": last, "position": position, "id": before or ""},
        )
        outcome = _outcome(result)
        if outcome == 0:
            raise NotFound(_NO_SESSION)
        if outcome == -2:
            raise BadInput(_NO_MESSAGE)
        return decode_newest_first(result["elements"], int(result["newest"]) + 1)

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
        """Forget the message `message_id` and every later one, at once; SessionBusy
        while a turn runs. The session as it now is."""
        check_session_id(session_id)
        position = _position(message_id)
        result = await self._rewind(
            keys={
                "messages": messages_key(session_id),
                "meta": meta_key(session_id),
                "lock": lock_key(session_id),
            },
            args={**_caller(who), "position": position, "id": message_id},
        )
        outcome = _outcome(result)
        if outcome == 0:
            raise NotFound(_NO_SESSION)
        if outcome == -1:
            raise SessionBusy("a turn is running on this session; stop it or wait")
        if outcome == -2:
            raise BadInput(_NO_MESSAGE)
        return await self._sessions.require(session_id, who=who)


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


# Longer than any id this server gives (a position, a dot, eight hex digits).
MAX_MESSAGE_ID_CHARS = 64


def _position(message_id: str) -> int:
    if not isinstance(message_id, str) or len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise BadInput("message id is not one this server gave")
    position = position_of(message_id)
    if position is None:
        raise BadInput("message id is not one this server gave")
    return position
