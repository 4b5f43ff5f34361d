"""Ids of their own for messages another program wrote, given in their places before
they move off the active path (`scripts/stamp_ids.lua`). A message off the path is found
by its id alone, and another LangChain program's messages carry none: their id is their
position, which a message of another branch takes too."""

from __future__ import annotations

import json
import secrets
from typing import Any

from redis.asyncio import Redis, RedisCluster

from resolvers.services.errors import DataConflict, NotFound, SessionBusy
from resolvers.services.history import MESSAGE_ID, element_id, message_id
from resolvers.services.identity import ANONYMOUS, Identity
from resolvers.services.keys import messages_key, meta_key
from resolvers.services.scripts import Script, caller, outcome_of


class Stamper:
    def __init__(self, redis: Redis | RedisCluster) -> None:
        self._redis = redis
        self._stamp = Script(redis, "stamp_ids")

    async def stamp(
        self, session_id: str, from_position: int, *, who: Identity = ANONYMOUS
    ) -> dict[int, str]:
        """Give every message of the path from `from_position` on that has only its
        position an id of its own (`<position>.<nonce>`, as this server's), at once;
        the new ids by position."""
        raw: list[Any] = await self._redis.lrange(messages_key(session_id), 0, -(from_position + 1))
        newest = from_position + len(raw) - 1
        changes = []
        for index, element in enumerate(raw):
            position = newest - index
            found = element_id(element, position)
            if found != str(position) and found.partition(".")[0] == str(position):
                continue
            changes.append([position, element, _with_id(element, position)])
        if not changes:
            return {}
        outcome = outcome_of(
            await self._stamp(
                keys={"messages": messages_key(session_id), "meta": meta_key(session_id)},
                args={**caller(who), "changes": json.dumps(changes)},
            )
        )
        if outcome == 0:
            raise NotFound("no session with that id")
        if outcome == -2:
            raise SessionBusy("another program changed this conversation meanwhile; try again")
        return {int(position): element_id(new, int(position)) for position, _, new in changes}


def _with_id(element: str | bytes, position: int) -> str:
    """The element with an id of its own in `additional_kwargs`, which LangChain
    carries along untouched; DataConflict for an element that is not a message."""
    extra: object = None
    try:
        data = json.loads(element)
        extra = data["data"].setdefault("additional_kwargs", {})
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    if not isinstance(extra, dict):
        raise DataConflict(
            "a message another program wrote in this conversation is not one LangChain "
            "reads; it cannot move to another branch"
        )
    extra[MESSAGE_ID] = message_id(position, secrets.token_hex(4))
    return json.dumps(data)
