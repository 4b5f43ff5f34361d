"""Who is asking: the admin token, a JWT this server signed (guests), or one of an outside
identity provider (its JWKS). A token that is present but invalid is refused, never
taken as anonymous."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import jwt
from redis.asyncio import Redis, RedisCluster

from resolvers.services.errors import ChatError, Unauthenticated
from resolvers.services.keys import AUTH_SECRET_KEY

logger = logging.getLogger(__name__)

# The issuer of the tokens this server signs.
LOCAL_ISSUER = "chat-session-server"
# What begins every guest's user id: guests and an identity provider's users never share
# an id, whatever the provider's subjects look like.
GUEST_PREFIX = "guest:"
# The algorithms accepted from an identity provider (never "none", never HMAC with its keys).
PROVIDER_ALGORITHMS = ("RS256", "ES256")
MAX_SUBJECT_CHARS = 256
MAX_TOKEN_CHARS = 8192
# How long the provider's keys are used before they are fetched again.
KEYS_CACHE_SECONDS = 300.0
# After a failed fetch of the keys, how long requests that need a fetch fail at once.
FAILED_FETCH_BACKOFF = 5.0


class IdentityUnavailable(ChatError):
    """The identity provider's keys cannot be fetched: the token may be good."""

    code = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller: a user (`user_id`), an admin, both, or neither (anonymous)."""

    user_id: str | None = None
    is_admin: bool = False

    def may_use(self, owner: str | None) -> bool:
        """Whether this caller may read and change a session owned by `owner`."""
        return owner is None or self.is_admin or owner == self.user_id


ANONYMOUS = Identity()


@dataclass(frozen=True, slots=True)
class GuestToken:
    token: str
    user_id: str
    expires_at: datetime


class Authenticator:
    """Turns a bearer token into an Identity; signs guest tokens."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        secret: str | None,
        admin_token: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str | None,
        admin_claim: str,
        required: bool,
        guest_seconds: int,
        jwks_timeout: float,
        jwks_refresh: float,
        move_owner: Callable[[str, str], Awaitable[object]] | None = None,
    ) -> None:
        self._redis = redis
        self._secret = secret.encode() if secret else None
        self._admin_token = admin_token.encode() if admin_token else None
        self._issuer = issuer
        self._audience = audience
        self._admin_claim = admin_claim
        self.required = required
        self._guest_seconds = guest_seconds
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_jwk_set=False, timeout=jwks_timeout)
            if jwks_url
            else None
        )
        self._jwks_timeout = jwks_timeout
        self._jwks_refresh = jwks_refresh
        # The provider's keys by kid, fetched at most once at a time (`_fetching`), at
        # most once per `jwks_refresh` for an unknown kid, and not at all for a while
        # after a failed fetch: a flood of tokens cannot turn into a flood of fetches.
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_until = -float("inf")
        self._fetched_at = -float("inf")
        self._failed_until = -float("inf")
        self._fetching = asyncio.Lock()
        # Moves what a user id owns to another (a legacy guest's to its prefixed id).
        self._move_owner = move_owner
        self._moved: set[str] = set()

    async def identify(self, token: str | None) -> Identity:
        """The caller of a request with this bearer token (None: no token)."""
        if not token:
            if self.required:
                raise Unauthenticated(
                    "this server needs a bearer token: createGuest or POST /guest gives one"
                )
            return ANONYMOUS
        if self._admin_token is not None and hmac.compare_digest(token.encode(), self._admin_token):
            return Identity(is_admin=True)
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("the bearer token is too long")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not a valid JWT") from None
        if algorithm == "HS256":
            key: Any = await self._local_secret()
            options: dict[str, Any] = {"verify_aud": False}
            issuer = None
        elif algorithm in PROVIDER_ALGORITHMS and self._jwks is not None:
            provider_key = await self._provider_key(token)
            if provider_key.algorithm_name != algorithm:
                raise Unauthenticated("the token's algorithm does not match its key")
            key = provider_key
            options = {"verify_aud": self._audience is not None}
            issuer = self._issuer
        else:
            raise Unauthenticated(f"tokens signed with {algorithm!r} are not accepted here")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience if options["verify_aud"] else None,
                issuer=issuer,
                options=cast("Any", {"require": ["exp", "sub"], **options}),
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired") from None
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            raise Unauthenticated(f"the bearer token is not valid: {exc}") from None
        for name in ("exp", "iat", "nbf"):
            # PyJWT takes a time written as text ("9999999999"); a JWT's times are numbers.
            value = claims.get(name)
            if name in claims and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise Unauthenticated(f"the token's {name} must be a number (NumericDate)")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
            raise Unauthenticated(f"the token's sub must be a string of 1 to {MAX_SUBJECT_CHARS}")
        guest = algorithm == "HS256" and claims.get("guest") is True
        if guest:
            user_id = await self._guest_id(subject)
        elif subject.startswith(GUEST_PREFIX):
            # Guests' ids are their own: no other token may name one.
            raise Unauthenticated(f"a sub beginning {GUEST_PREFIX!r} names only a guest")
        else:
            user_id = subject
        return Identity(user_id=user_id, is_admin=claims.get(self._admin_claim) is True)

    async def _guest_id(self, subject: str) -> str:
        """A guest's user id: `guest:<uuid>`, apart from every provider's subjects. A
        token signed before guests had the prefix names the bare uuid: its sessions move
        to the prefixed id the first time it is seen (the guest keeps its chats)."""
        if subject.startswith(GUEST_PREFIX):
            return subject
        user_id = GUEST_PREFIX + subject
        if subject not in self._moved and self._move_owner is not None:
            await self._move_owner(subject, user_id)
            self._moved.add(subject)
        return user_id

    async def issue_guest(self) -> GuestToken:
        """A token this server signs for a new random user id."""
        user_id = GUEST_PREFIX + str(uuid.uuid4())
        now = datetime.now(UTC).replace(microsecond=0)
        expires = now + timedelta(seconds=self._guest_seconds)
        claims = {"sub": user_id, "iss": LOCAL_ISSUER, "iat": now, "exp": expires, "guest": True}
        token = jwt.encode(claims, await self._local_secret(), algorithm="HS256")
        return GuestToken(token=token, user_id=user_id, expires_at=expires)

    async def _local_secret(self) -> bytes:
        if self._secret is None:
            # One secret for every process sharing this Redis, made by whichever asks first.
            await self._redis.set(AUTH_SECRET_KEY, secrets.token_urlsafe(48), nx=True)
            shared = await self._redis.get(AUTH_SECRET_KEY)
            if not shared:
                raise ChatError("the shared token secret could not be read")
            self._secret = str(shared).encode()
        return self._secret

    async def _provider_key(self, token: str) -> jwt.PyJWK:
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str):
            raise Unauthenticated("the token names no key (kid)")
        now = time.monotonic()
        if now < self._keys_until and kid in self._keys:
            return self._keys[kid]
        async with self._fetching:
            now = time.monotonic()
            stale = now >= self._keys_until
            unknown = kid not in self._keys
            if stale or (unknown and now - self._fetched_at >= self._jwks_refresh):
                if now < self._failed_until:
                    raise IdentityUnavailable("the identity provider's keys cannot be fetched")
                await self._fetch_keys()
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated(f"no key of the identity provider has kid {kid!r}")
        return key

    async def _fetch_keys(self) -> None:
        assert self._jwks is not None
        try:
            keys = await asyncio.wait_for(
                asyncio.to_thread(self._jwks.get_signing_keys, True), self._jwks_timeout + 1
            )
        except (TimeoutError, jwt.PyJWKClientError) as exc:
            self._failed_until = time.monotonic() + FAILED_FETCH_BACKOFF
            logger.warning("identity provider keys unavailable: %s", type(exc).__name__)
            raise IdentityUnavailable("the identity provider's keys cannot be fetched") from None
        now = time.monotonic()
        self._fetched_at = now
        self._keys_until = now + KEYS_CACHE_SECONDS
        self._keys = {key.key_id: key for key in keys if key.key_id}
