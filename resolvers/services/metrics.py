"""The server's Prometheus metrics, the same under `uvicorn --workers N` as in one process.

prometheus-client's multiprocess mode keeps each process's values in files of one
directory, which a scrape of any worker sums. The directory must be known before the
library is imported, so this module picks it first: PROMETHEUS_MULTIPROC_DIR when set,
else one of its own per server (named after the uvicorn supervisor, or the lone process,
and its start time: the workers of one server share it, a later server starts afresh).
No metric has a per-session or per-user label.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar


def _multiprocess_dir() -> str:
    chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if chosen:
        return chosen
    # A uvicorn worker is started by its supervisor through multiprocessing: the workers
    # of one server share the supervisor's directory. A lone process has its own.
    owner = os.getppid() if multiprocessing.parent_process() is not None else os.getpid()
    try:
        started = Path(f"/proc/{owner}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    folder = Path(tempfile.gettempdir()) / f"chat-server-metrics-{owner}-{started}"
    folder.mkdir(mode=0o700, exist_ok=True)
    found = folder.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        # Made by someone else (the name is predictable): not a place to write to.
        folder = Path(tempfile.mkdtemp(prefix="chat-server-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return str(folder)


MULTIPROCESS_DIR = _multiprocess_dir()

# Imported only now that the directory is set (the library reads it at import).
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

TURNS = Counter(
    "chat_turns_total",
    "Turns ended, by outcome: COMPLETE, STOPPED, or the error code they failed with.",
    ["outcome"],
)
FIRST_TOKEN = Histogram(
    "chat_turn_first_token_seconds",
    "From a turn's start to the model's first token.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60),
)
TURN_SECONDS = Histogram(
    "chat_turn_duration_seconds",
    "From a turn's start to its end (stored, stopped or failed).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)
TOKENS = Counter("chat_tokens_streamed_total", "Pieces of replies relayed from the model.")
SUBSCRIPTIONS = Gauge(
    "chat_open_subscriptions",
    "GraphQL subscriptions (chat, regenerate, turn) streaming now.",
    multiprocess_mode="livesum",
)
WEBSOCKETS = Gauge(
    "chat_open_websockets", "WebSocket connections open now.", multiprocess_mode="livesum"
)
REDIS_SECONDS = Histogram(
    "chat_redis_seconds",
    "Time of a turn's Redis steps, by step: begin (lock and read), commit, flush (the "
    "stream writer's pipeline of every running turn).",
    ["step"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RATE_LIMITED = Counter(
    "chat_rate_limited_total",
    "Requests refused by a rate limit, by limit: address (requests and GraphQL "
    "operations from one address) or turns (turns on one session).",
    ["limit"],
)
FALLBACKS = Counter(
    "chat_model_fallbacks_total",
    "Replies handed to the fallback model because the primary failed before its first token.",
)


def exposition() -> tuple[bytes, str]:
    """The metrics of every process of this server, in Prometheus's text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def process_ended(pid: int) -> None:
    """Drop a stopped process's live gauges (its counters stay in the sums)."""
    multiprocess.mark_process_dead(pid, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


def forget_dead_processes() -> None:
    """Drop the live gauges of processes of this folder that are gone (a worker killed
    rather than stopped never says so itself)."""
    for path in Path(MULTIPROCESS_DIR).glob("gauge_live*_*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            process_ended(pid)
        except PermissionError:
            pass  # alive, another user's


T = TypeVar("T")


async def timed(step: str, work: Awaitable[T]) -> T:
    """`work`, its time observed as the Redis step `step`."""
    began = time.perf_counter()
    try:
        return await work
    finally:
        REDIS_SECONDS.labels(step).observe(time.perf_counter() - began)
