"""The session record: every field of a session's metadata hash, declared once.

`{message_store:<id>}:meta` holds them (the message list is LangChain's, beside it).
What a listing reads, what the export writes and the import takes, which values it
checks and how, and the storage table in docs/architecture.md all come from `FIELDS`
(a test holds the docs and `SessionInfo` to it). A new field is one line here, its
script include if it is indexed, the schema, and the docs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_COUNT = 2**31 - 1
MAX_MICROS = 2**53 - 1  # exact as a Lua number

Kind = Literal["text", "micros", "count", "position", "after", "user", "turn", "mark", "flag"]

# The values each kind may take, as text in the hash.
_WHOLE = re.compile(r"-?[0-9]{1,16}")
RANGES: dict[Kind, tuple[int, int]] = {
    "micros": (0, MAX_MICROS),
    "count": (0, MAX_COUNT),
    "position": (0, MAX_COUNT),
    "after": (-1, MAX_COUNT),  # a position, or -1 for none
}
_MARK = re.compile(r"[0-9]{1,16}:[0-9a-f]{0,40}")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    doc: str
    # Read by a listing (a page of sessions reads these, not the whole hash).
    listed: bool = False
    # Written by the export and taken by the import.
    exported: bool = False
    # The import needs it.
    required: bool = False
    # Computed by the import from the messages (what a line says of it is not trusted).
    derived: bool = False


FIELDS: tuple[Field, ...] = (
    Field("title", "text", "the title (a user's, the start of the first message, or the "
          "model's name for the conversation)", listed=True, exported=True),
    Field("title_auto", "flag", "set while the title is the server's (the first message's "
          "start, or the model's): only such a title is replaced by the model's; a user's "
          "title clears it", exported=True),
    Field("pinned", "flag", "set when its owner pinned it: it is in the owner's pinned "
          "index too (unless archived)", listed=True, exported=True),
    Field("archived", "flag", "set when its owner archived it: it is in the owner's "
          "archived index instead of the main one", listed=True, exported=True),
    Field("system_prompt", "text", "the system prompt, sent first on every turn",
          exported=True, required=True),
    Field("created_at", "micros", "when it was made (µs since the epoch)",
          listed=True, exported=True, required=True),
    Field("updated_at", "micros", "its last activity (µs): its score in the indexes",
          listed=True, exported=True, required=True),
    Field("owner", "user", "the user who made it; none for an anonymous session",
          listed=True, exported=True),
    Field("input_tokens", "count", "the sum of its replies' input tokens",
          listed=True, exported=True, derived=True),
    Field("output_tokens", "count", "the sum of its replies' output tokens",
          listed=True, exported=True, derived=True),
    Field("last_turn", "turn", "the last stored turn's id"),
    Field("list_mark", "mark", "`<length>:<SHA-1 of the newest element>` as this server last "
          "left the list: while the list holds it (perhaps with more appended), the usage "
          "and the summary's positions hold", derived=True),
    Field("epoch", "count", "moved by whatever takes messages back: a summary read under "
          "another epoch is not kept"),
    Field("summary_at", "position", "where the summary of trimmed history is in the list",
          exported=True),
    Field("summary_covers", "after", "the last position the summary covers",
          exported=True),
    Field("summary_stale", "flag", "set when a rewind took back what the summary covers",
          exported=True),
)  # fmt: skip

BY_NAME = {f.name: f for f in FIELDS}
LISTED = tuple(f.name for f in FIELDS if f.listed)
EXPORTED = frozenset(f.name for f in FIELDS if f.exported)
IMPORTED = frozenset(f.name for f in FIELDS if f.exported or f.derived)
REQUIRED = tuple(f.name for f in FIELDS if f.required)


def check_value(name: str, value: str) -> str:
    """`value` if field `name` may hold it (ValueError naming the field otherwise)."""
    field = BY_NAME[name]
    if field.kind in RANGES:
        low, high = RANGES[field.kind]
        if not _WHOLE.fullmatch(value) or not low <= int(value) <= high:
            raise ValueError(f"meta.{name} must be a whole number from {low} to {high}")
    elif field.kind == "mark" and not _MARK.fullmatch(value):
        raise ValueError(f"meta.{name} must be a list mark")
    elif field.kind == "flag" and value != "1":
        raise ValueError(f"meta.{name} must be 1 when set")
    elif field.kind == "user" and not value:
        raise ValueError(f"meta.{name} must be a user id")
    return value


def exported(meta: dict[str, str]) -> dict[str, str]:
    """What the export writes of a session's hash."""
    return {k: v for k, v in meta.items() if k in EXPORTED}


def storage_row() -> str:
    """The storage table's row for the hash (docs/architecture.md), from `FIELDS`."""
    described = "; ".join(f"`{f.name}`: {f.doc}" for f in FIELDS)
    return f"| `{{message_store:<id>}}:meta` | hash | {described} |"
