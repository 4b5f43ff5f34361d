"""The project's own errors; each edge maps them to its own form.

Services raise these and know nothing of HTTP or GraphQL. `code` is the GraphQL
`extensions.code` of docs/api.md; the REST edge turns the same code into a status.
"""

from __future__ import annotations

import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)


class ChatError(Exception):
    """Base of the errors a client is told about."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ChatError):
    code = "BAD_USER_INPUT"


class NotFound(ChatError):
    code = "NOT_FOUND"


class Unauthenticated(ChatError):
    code = "UNAUTHENTICATED"


class SessionBusy(ChatError):
    code = "SESSION_BUSY"


class ModelFailed(ChatError):
    code = "LLM_ERROR"


class StoreUnavailable(ChatError):
    code = "UNAVAILABLE"


class DataConflict(ChatError):
    """A key of a session holds what this server did not write there (another program
    set it to another type): nothing was changed."""

    code = "INTERNAL"


class RateLimited(ChatError):
    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int | None) -> None:
        super().__init__(message)
        # Seconds until the limit lets the caller in again; None when waiting does not
        # help (the most sessions held: only a delete does).
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    code = "QUOTA_EXCEEDED"


def as_chat_error(exc: BaseException) -> ChatError | None:
    """The client-facing error for `exc`, or None when it is a bug to report as such.

    Redis connection failures surface from many calls; they all mean one thing to a
    client, so they are translated here rather than at every call site.
    """
    if isinstance(exc, ChatError):
        return exc
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return StoreUnavailable("the session store (Redis) cannot be reached")
    return None


def client_error(exc: BaseException, where: str) -> ChatError:
    """What a client is told about `exc`: its own error, or, for a bug, "internal error".

    The one path for unexpected errors, called by every edge: one line in the log (a
    traceback can name internal paths), the details at DEBUG, a generic message out.
    """
    error = as_chat_error(exc)
    if error is None:
        logger.error("unexpected %s %s", type(exc).__name__, where)
        logger.debug("details", exc_info=exc)
        error = ChatError("internal error")
    return error
