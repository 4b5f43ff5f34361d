"""Checks of what clients send, before any of it reaches Redis or the model."""

from __future__ import annotations

import re

from resolvers.services.errors import BadInput
from resolvers.services.history import position_of

_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def is_session_id(value: str) -> bool:
    return isinstance(value, str) and _UUID4.fullmatch(value) is not None


def check_session_id(session_id: str) -> str:
    """`session_id` if it is a canonical UUID4; never build a key from anything else."""
    if not is_session_id(session_id):
        raise BadInput("session id must be a UUID4 in canonical form")
    return session_id


def check_text(value: str, what: str) -> str:
    """`value` if it can be stored and sent as UTF-8 (JSON allows lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{what} is not valid text (it holds a lone surrogate)") from None
    return value


def check_length(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise BadInput(f"{what} is longer than {limit} characters")
    return value


_TURN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_turn_id(turn_id: str) -> str:
    """A turn id is a UUID (any version) in canonical form; returned in lower case."""
    lowered = turn_id.lower() if isinstance(turn_id, str) else ""
    if not _TURN_ID.fullmatch(lowered):
        raise BadInput("turn id must be a UUID in canonical form")
    return lowered


# Longer than any id this server gives (a position, a dot, eight hex digits).
MAX_MESSAGE_ID_CHARS = 64


def message_position(message_id: str) -> int:
    """The position on the path (the depth in the conversation's tree) that a message id
    names; BadInput for an id this server did not give."""
    position = None
    if isinstance(message_id, str) and len(message_id) <= MAX_MESSAGE_ID_CHARS:
        position = position_of(message_id)
    if position is None:
        raise BadInput("message id is not one this server gave")
    return position
