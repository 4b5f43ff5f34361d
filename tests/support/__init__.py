"""Helpers of the test suite: real servers (Redis, the fake model, the app under
uvicorn), client-side helpers, a WebSocket GraphQL client, a fault-injecting TCP proxy
and the fuzzers' shared strategies. Fixtures live in `tests/conftest.py`."""

from tests.support.clients import error_codes, gql, new_session
from tests.support.servers import (
    FAKE_GROQ,
    LOOPBACK,
    REPO,
    AppServer,
    FakeGroq,
    RedisServer,
    app_env,
    free_port,
    redis_executable,
    start_redis,
    stop,
    wait_for_port,
)

__all__ = [
    "FAKE_GROQ",
    "LOOPBACK",
    "REPO",
    "AppServer",
    "FakeGroq",
    "RedisServer",
    "app_env",
    "error_codes",
    "free_port",
    "gql",
    "new_session",
    "redis_executable",
    "start_redis",
    "stop",
    "wait_for_port",
]
