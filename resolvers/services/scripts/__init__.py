"""The Redis scripts of the server, one `.lua` file each in this folder.

Each file opens with its interface, one line an entry, which the loader reads and the
callers must match by name:

    -- KEYS[1] messages: the session's list
    -- KEYS[6] turn_session?: ...          (a `?`: may be left out, with all after it)
    -- ARGV[1] token: the turn's lock token
    -- RETURNS {outcome, prompt, window}   (a table, read by name) or `RETURNS outcome`
    -- INCLUDE numbers                     (a fragment of this folder, `_numbers.lua`)

An include is resolved when the file is loaded (each fragment once, in order), never by
gluing strings in Python. A script is a transaction Redis never rolls back: each one
reads and checks everything first, computes every value, and only then writes, with
writes that cannot fail (docs/reliability.md, "Scripts").
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.commands.core import AsyncScript
from redis.typing import EncodableT

from resolvers.services.errors import DataConflict
from resolvers.services.identity import Identity

FOLDER = Path(__file__).parent

_ENTRY = re.compile(r"--\s+(KEYS|ARGV)\[(\d+)\]\s+([a-z_]+)(\?)?:")
_RETURNS = re.compile(r"--\s+RETURNS\s+(\{([a-z_, ]+)\}|[a-z_]+)")
_INCLUDE = re.compile(r"--\s+INCLUDE\s+([a-z_]+)\s*$")


@dataclass(frozen=True, slots=True)
class Interface:
    """What a script takes and gives, by name, as its header declares."""

    keys: tuple[str, ...]
    args: tuple[str, ...]
    # The first optional key and argument (their count when none is optional).
    keys_required: int
    args_required: int
    # The names of a table result's entries, in order; None for a single value.
    returns: tuple[str, ...] | None


def _header(text: str, name: str) -> tuple[Interface, list[str]]:
    entries: dict[str, list[tuple[int, str, bool]]] = {"KEYS": [], "ARGV": []}
    returns: tuple[str, ...] | None = None
    includes: list[str] = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if found := _ENTRY.match(line):
            kind, index, entry, optional = found.groups()
            entries[kind].append((int(index), entry, bool(optional)))
        elif found := _RETURNS.match(line):
            if found.group(2) is not None:
                returns = tuple(part.strip() for part in found.group(2).split(","))
        elif found := _INCLUDE.match(line):
            includes.append(found.group(1))
    declared: dict[str, tuple[str, ...]] = {}
    required: dict[str, int] = {}
    for kind, found_entries in entries.items():
        numbers = [index for index, _, _ in found_entries]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{name}.lua: {kind} must be declared 1, 2, 3, ... in order")
        flags = [optional for _, _, optional in found_entries]
        first_optional = flags.index(True) if True in flags else len(flags)
        if not all(flags[first_optional:]):
            raise ValueError(f"{name}.lua: only the last {kind} may be optional")
        declared[kind] = tuple(entry for _, entry, _ in found_entries)
        required[kind] = first_optional
    interface = Interface(
        keys=declared["KEYS"],
        args=declared["ARGV"],
        keys_required=required["KEYS"],
        args_required=required["ARGV"],
        returns=returns,
    )
    return interface, includes


@cache
def source(name: str) -> str:
    """The script's text with its includes in place (each fragment once)."""
    text = (FOLDER / f"{name}.lua").read_text()
    _, includes = _header(text, name)
    seen: list[str] = []

    def gather(fragment: str) -> None:
        if fragment in seen:
            return
        fragment_text = (FOLDER / f"_{fragment}.lua").read_text()
        for needed in _header(fragment_text, fragment)[1]:
            gather(needed)
        seen.append(fragment)

    for fragment in includes:
        gather(fragment)
    parts = [(FOLDER / f"_{fragment}.lua").read_text() for fragment in seen]
    return "\n".join([*parts, text])


@cache
def interface(name: str) -> Interface:
    return _header((FOLDER / f"{name}.lua").read_text(), name)[0]


def names() -> list[str]:
    """Every script of the folder (fragments, named `_*.lua`, left out)."""
    return sorted(p.stem for p in FOLDER.glob("*.lua") if not p.stem.startswith("_"))


class Script:
    """A script registered on a client, called with named keys and arguments."""

    def __init__(self, redis: Redis | RedisCluster, name: str) -> None:
        self.name = name
        self.interface = interface(name)
        self._script: AsyncScript = redis.register_script(source(name))

    async def __call__(
        self,
        *,
        keys: Mapping[str, str],
        args: Mapping[str, EncodableT],
        client: Redis | RedisCluster | Pipeline | ClusterPipeline | None = None,
    ) -> Any:
        """Run it (queue it, given a pipeline): a table result is a dict by the header's
        names; a pipeline's results are read with `named`."""
        result = await self._script(
            keys=self._ordered("key", self.interface.keys, self.interface.keys_required, keys),
            args=self._ordered("argument", self.interface.args, self.interface.args_required, args),
            client=client,  # type: ignore[arg-type]  # redis-py accepts pipelines here
        )
        if isinstance(client, Pipeline | ClusterPipeline):
            return result
        return self.named(result)

    def named(self, result: Any) -> Any:
        """A raw table result as a dict by the header's names (missing entries None)."""
        names_ = self.interface.returns
        if names_ is None or not isinstance(result, list):
            return result
        if len(result) > len(names_):
            raise ValueError(f"{self.name}.lua returned more than its header names")
        return dict(zip(names_, [*result, *[None] * (len(names_) - len(result))], strict=True))

    def _ordered(
        self, what: str, declared: Sequence[str], required: int, given: Mapping[str, Any]
    ) -> list[Any]:
        unknown = set(given) - set(declared)
        if unknown:
            raise TypeError(f"{self.name}.lua takes no {what} {sorted(unknown)}")
        values: list[Any] = []
        for position, entry in enumerate(declared):
            if entry not in given:
                if position < required:
                    raise TypeError(f"{self.name}.lua needs the {what} {entry!r}")
                if any(later in given for later in declared[position:]):
                    raise TypeError(f"{self.name}.lua: {entry!r} leaves out one before a later")
                break
            values.append(given[entry])
        return values


async def each(
    script: Script,
    redis: Redis | RedisCluster,
    calls: Sequence[tuple[Mapping[str, str], Mapping[str, EncodableT]]],
) -> list[Any]:
    """`script` called for each (keys, args): on one Redis in one pipeline; a cluster
    pipeline takes no scripts, so there the calls go at once, each to its node. Each
    result by name, or the exception it raised."""
    if not calls:
        return []
    if isinstance(redis, Redis):
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await script(keys=keys, args=args, client=pipe)
            raw = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else script.named(r) for r in raw]
    return list(
        await asyncio.gather(
            *(script(keys=keys, args=args) for keys, args in calls), return_exceptions=True
        )
    )


def caller(who: Identity | None) -> dict[str, str]:
    """The `admin` and `user` arguments of a script that checks the owner ('*': the
    caller filters by owner itself)."""
    if who is None:
        return {"admin": "*", "user": ""}
    return {"admin": "1" if who.is_admin else "0", "user": who.user_id or ""}


# The outcome of a script that found a key of another type: it changed nothing.
WRONG_TYPE = -9


def outcome_of(result: Any) -> int:
    """A script's outcome (its result, or its `outcome` entry); DataConflict for a key of
    another type."""
    value = result["outcome"] if isinstance(result, Mapping) else result
    outcome = int(value)
    if outcome == WRONG_TYPE:
        raise DataConflict(
            "a key of this session holds a value of another type (another program wrote "
            "it); nothing was changed"
        )
    return outcome
