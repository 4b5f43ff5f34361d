"""Every Redis key of the server, and the hash-tag rule that keeps a session in one slot.

`message_store:<session_id>` is the list of a session's messages under LangChain's own
name (`langchain_community`'s `RedisChatMessageHistory` writes and reads it), so other
LangChain programs share the history. The session's other keys carry the hash tag
`{message_store:<session_id>}`: Redis Cluster hashes only the text inside the braces,
which is the whole name of the list, so every key of a session lands in the list's slot
(one atomic script can touch them all) while the list keeps LangChain's exact name.

The keys of one session:

- `message_store:<id>`: the messages (LangChain layout, newest first)
- `{message_store:<id>}:meta`: hash of title, system_prompt, created_at, updated_at
  (microseconds since the epoch), last_turn
- `{message_store:<id>}:tree`: hash of the messages off the active path (the other
  branches): id -> `<length of the parent's id>:<parent's id><element>`
- `{message_store:<id>}:kids`: hash of the children of each message that has one off
  the active path: id (`''` for the start) -> JSON list of ids, oldest first
- `{message_store:<id>}:lock`: the running turn's token, with an expiry
- `{message_store:<id>}:active`: hash of the running turn (turn_id, token, started_at,
  message, stop), with the lock's expiry; it names a running turn while the lock holds
  its token
- `{message_store:<id>}:turn:<turn_id>`: a Redis Stream of the turn's events, kept
  while it runs and for TURN_REPLAY_SECONDS after it ends
- `{message_store:<id>}:turn_ids`: the session's turns whose events are kept, each scored
  by when they are forgotten (ms), so a delete finds every stream
- `{message_store:<id>}:turns:<minute>`: turns started in that minute (rate limit)
- `{message_store:<id>}:shares`: the session's share links (ids scored by creation, µs)
- `{message_store:<id>}:share:<share_id>`: hash of one share's snapshot (title,
  created_at, messages: the active path's elements as a JSON list)

and, each in a slot of its own:

- `sessions:index`: a sorted set of session ids scored by the time of last activity
- `sessions:owner:<user id>`: the same, for the sessions one user owns and has not archived
- `sessions:archived:<user id>`: the same, for the sessions one user has archived
- `sessions:pinned:<user id>`: the same, for the sessions one user has pinned (and not
  archived)
- `shares:<share_id>`: the session a share link belongs to
- `turns:<turn_id>`: the session a turn id belongs to (a client-chosen id cannot be
  reused on another session), as long as the turn's stream
- `auth:secret`: the HMAC key of the tokens this server signs, when AUTH_SECRET is unset
- `ratelimit:addr:<address>:<minute>`: requests from one client address in that minute

and, for each identity that limits count against (a user, or the address of anonymous
callers), in the slot of the tag `{limits:user:<id>}` or `{limits:addr:<address>}`:

- `<tag>:held`: the sessions it created (ids scored by creation), for USER_MAX_SESSIONS
- `<tag>:<what>:<minute>`: what it did that minute (turns, sessions, documents)
"""

from __future__ import annotations

MESSAGES_PREFIX = "message_store:"
INDEX_KEY = "sessions:index"
AUTH_SECRET_KEY = "auth:secret"  # noqa: S105  the name of a key, not a secret


def messages_key(session_id: str) -> str:
    return f"{MESSAGES_PREFIX}{session_id}"


def session_tag(session_id: str) -> str:
    """The hash tag that puts a key in the slot of the session's message list."""
    return f"{{{MESSAGES_PREFIX}{session_id}}}"


def meta_key(session_id: str) -> str:
    return f"{session_tag(session_id)}:meta"


def tree_key(session_id: str) -> str:
    return f"{session_tag(session_id)}:tree"


def kids_key(session_id: str) -> str:
    return f"{session_tag(session_id)}:kids"


def lock_key(session_id: str) -> str:
    return f"{session_tag(session_id)}:lock"


def active_turn_key(session_id: str) -> str:
    return f"{session_tag(session_id)}:active"


def turn_stream_key(session_id: str, turn_id: str) -> str:
    return f"{session_tag(session_id)}:turn:{turn_id}"


def turn_ids_key(session_id: str) -> str:
    return f"{session_tag(session_id)}:turn_ids"


TURN_SESSION_PREFIX = "turns:"


def turn_session_key(turn_id: str) -> str:
    return f"{TURN_SESSION_PREFIX}{turn_id}"


OWNER_INDEX_PREFIX = "sessions:owner:"


def owner_index_key(user_id: str) -> str:
    return f"{OWNER_INDEX_PREFIX}{user_id}"


ARCHIVED_INDEX_PREFIX = "sessions:archived:"
PINNED_INDEX_PREFIX = "sessions:pinned:"


def archived_index_key(user_id: str) -> str:
    return f"{ARCHIVED_INDEX_PREFIX}{user_id}"


def pinned_index_key(user_id: str) -> str:
    return f"{PINNED_INDEX_PREFIX}{user_id}"


def shares_key(session_id: str) -> str:
    return f"{session_tag(session_id)}:shares"


def share_key(session_id: str, share_id: str) -> str:
    return f"{session_tag(session_id)}:share:{share_id}"


SHARE_PREFIX = "shares:"


def share_pointer_key(share_id: str) -> str:
    return f"{SHARE_PREFIX}{share_id}"


def turn_rate_key(session_id: str, window: int) -> str:
    return f"{session_tag(session_id)}:turns:{window}"


def address_rate_key(address: str | None, window: int) -> str:
    return f"ratelimit:addr:{address}:{window}"


def identity_tag(kind: str, name: str) -> str:
    """The hash tag of one identity's limits: `kind` "user" or "addr"."""
    return f"{{limits:{kind}:{name}}}"


def identity_held_key(tag: str) -> str:
    return f"{tag}:held"


def identity_rate_key(tag: str, what: str, window: int) -> str:
    return f"{tag}:{what}:{window}"
