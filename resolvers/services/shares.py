"""Share links: a read-only copy of a session's conversation as it was when shared.

A share is a snapshot kept in the session's slot (`{message_store:<id>}:share:<share_id>`:
its title, when it was made, the list's elements as a JSON list) and listed in the
session's `{message_store:<id>}:shares`; `shares:<share_id>` names its session, so a
reader with the id alone finds it. Later turns change nothing of it; revoking it, or
deleting its session (`scripts/delete_session.lua`), removes it. Its id has 192 random
bits: holding it is what lets anyone read it, no token needed. Only who may use the
session (its owner, or an admin) makes, lists and revokes its shares.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from resolvers.services.errors import BadInput, NotFound
from resolvers.services.history import StoredMessage, decode
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.index import from_micros, now_micros
from resolvers.services.keys import messages_key, meta_key, share_key, share_pointer_key, shares_key
from resolvers.services.scripts import Script, caller, outcome_of
from resolvers.services.sessions import SessionStore
from resolvers.services.validation import check_session_id

# Shares one session may keep at once: each is a copy of its conversation.
MAX_SHARES = 20
_ID = re.compile(r"[A-Za-z0-9_-]{32}")
_NO_SHARE = "no share with that id"
_NO_SESSION = "no session with that id"


def new_share_id() -> str:
    """192 random bits, URL-safe (32 characters)."""
    return secrets.token_urlsafe(24)


def check_share_id(share_id: object) -> str:
    """A share id as this server makes them; anything else is bad input (as a session
    id that is not one), never used to build a key."""
    if not isinstance(share_id, str) or not _ID.fullmatch(share_id):
        raise BadInput("share id is not one this server gave")
    return share_id


@dataclass(frozen=True, slots=True)
class ShareInfo:
    id: str
    session_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a share shows: the title and the messages as they were when it was made."""

    title: str | None
    messages: list[StoredMessage]
    created_at: datetime


class ShareStore:
    def __init__(
        self, redis: Redis | RedisCluster, sessions: SessionStore, *, max_shares: int = MAX_SHARES
    ) -> None:
        self._redis = redis
        self._single = isinstance(redis, Redis)
        self._sessions = sessions
        self._max = max_shares
        self._share = Script(redis, "share_session")
        self._revoke = Script(redis, "revoke_share")
        self._list = Script(redis, "read_shares")
        self._read = Script(redis, "read_share")

    async def create(self, session_id: str, *, who: Identity = ANONYMOUS) -> ShareInfo:
        """A new share of the session's conversation as it is now; NotFound for a
        session `who` may not use, BadInput when it keeps as many shares as it may."""
        check_session_id(session_id)
        await self._sessions.require(session_id, who=who)  # adopts a foreign list first
        share_id = new_share_id()
        now = now_micros()
        keys = {
            "meta": meta_key(session_id),
            "messages": messages_key(session_id),
            "shares": shares_key(session_id),
            "share": share_key(session_id, share_id),
        }
        if self._single:
            keys["pointer"] = share_pointer_key(share_id)
        args: dict[str, EncodableT] = {
            **caller(who),
            "share_id": share_id,
            "session_id": session_id,
            "now": now,
            "most": self._max,
        }
        outcome = outcome_of(await self._share(keys=keys, args=args))
        if outcome == 0:
            raise NotFound(_NO_SESSION)
        if outcome == -2:
            raise BadInput(
                f"a session keeps at most {self._max} shares: revoke one to share it again"
            )
        if not self._single:
            # Another slot: written once the share exists (a reader finds it from here).
            await self._redis.set(share_pointer_key(share_id), session_id)
        return ShareInfo(id=share_id, session_id=session_id, created_at=from_micros(now))

    async def shares(self, session_id: str, *, who: Identity = ANONYMOUS) -> list[ShareInfo]:
        """The session's shares, oldest first; NotFound for a session `who` may not use."""
        check_session_id(session_id)
        result = await self._list(
            keys={"meta": meta_key(session_id), "shares": shares_key(session_id)},
            args=caller(who),
        )
        if outcome_of(result) != 1:
            raise NotFound(_NO_SESSION)
        flat = [str(v) for v in result["shares"] or []]
        return [
            ShareInfo(id=share_id, session_id=session_id, created_at=from_micros(_micros(score)))
            for share_id, score in zip(flat[::2], flat[1::2], strict=True)
        ]

    async def revoke(self, share_id: str, *, who: Identity = ANONYMOUS) -> bool:
        """Revoke a share: from then on its url is 404. NotFound when there is no such
        share, or it is of a session `who` may not use (the same answer). A share of a
        session with no owner only an admin revokes: its id is all a reader has, which
        must not be enough (deleting the session takes its shares)."""
        share_id = check_share_id(share_id)
        session_id = await self._session_of(share_id)
        keys = {
            "meta": meta_key(session_id),
            "shares": shares_key(session_id),
            "share": share_key(session_id, share_id),
        }
        if self._single:
            keys["pointer"] = share_pointer_key(share_id)
        outcome = outcome_of(
            await self._revoke(keys=keys, args={**caller(who), "share_id": share_id})
        )
        if outcome != 1:
            raise NotFound(_NO_SHARE)
        if not self._single:
            await self._redis.delete(share_pointer_key(share_id))
        return True

    async def snapshot(self, share_id: str) -> Snapshot:
        """What the share shows, to anyone with its id; NotFound once it is revoked or
        its session is gone."""
        share_id = check_share_id(share_id)
        session_id = await self._session_of(share_id)
        result = await self._read(
            keys={
                "meta": meta_key(session_id),
                "shares": shares_key(session_id),
                "share": share_key(session_id, share_id),
            },
            args={"share_id": share_id},
        )
        if outcome_of(result) != 1:
            raise NotFound(_NO_SHARE)
        try:
            elements = json.loads(str(result["messages"]))
        except (ValueError, RecursionError):
            elements = []
        elements = elements if isinstance(elements, list) else []  # another program's
        newest = len(elements) - 1
        messages = [
            found
            for index, raw in reversed(list(enumerate(elements)))
            if isinstance(raw, str) and (found := decode(raw, newest - index)) is not None
        ]
        title = result["title"]
        return Snapshot(
            title=str(title) if title else None,
            messages=messages,
            created_at=from_micros(result["created_at"]),
        )

    async def _session_of(self, share_id: str) -> str:
        """The session the share belongs to (NotFound for none, or for a record another
        program left that names no session)."""
        try:
            found = await self._redis.get(share_pointer_key(share_id))
            if found is None:
                raise NotFound(_NO_SHARE)
            return check_session_id(str(found))
        except (BadInput, ResponseError):
            raise NotFound(_NO_SHARE) from None


def _micros(score: str) -> int:
    try:
        return int(float(score))
    except ValueError:
        return 0
