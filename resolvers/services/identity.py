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
# The algorithms accepted from an identity provider (never "none", never HMAC with its keys).
PROVIDER_ALGORITHMS = ("RS256", "ES256")
MAX_SUBJECT_CHARS = 256
MAX_TOKEN_CHARS = 8192


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
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=jwks_timeout)
            if jwks_url
            else None
        )
        self._jwks_timeout = jwks_timeout
        self._jwks_refresh = jwks_refresh
        self._refreshed_at = -float("inf")

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
            key = await self._provider_key(token)
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
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the bearer token is not valid: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
            raise Unauthenticated(f"the token's sub must be a string of 1 to {MAX_SUBJECT_CHARS}")
        return Identity(user_id=subject, is_admin=claims.get(self._admin_claim) is True)

    async def issue_guest(self) -> GuestToken:
        """A token this server signs for a new random user id."""
        user_id = str(uuid.uuid4())
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

    async def _provider_key(self, token: str) -> Any:
        assert self._jwks is not None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            return await asyncio.wait_for(
                asyncio.to_thread(self._key_for, kid), self._jwks_timeout + 1
            )
        except (TimeoutError, jwt.PyJWKClientConnectionError) as exc:
            logger.warning("identity provider keys unavailable: %s", type(exc).__name__)
            raise IdentityUnavailable("the identity provider's keys cannot be fetched") from None
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(f"the token's key is not known: {exc}") from None

    def _key_for(self, kid: object) -> Any:
        """The provider's key `kid` (runs in a thread: PyJWKClient is blocking)."""
        assert self._jwks is not None
        keys = self._jwks.get_signing_keys()
        found = [key for key in keys if key.key_id == kid]
        now = time.monotonic()
        if not found and now - self._refreshed_at >= self._jwks_refresh:
            # An unknown kid: the provider may have rotated its keys. Refetch, not too often.
            self._refreshed_at = now
            found = [k for k in self._jwks.get_signing_keys(refresh=True) if k.key_id == kid]
        if not found:
            raise jwt.PyJWKClientError(f"no key with kid {kid!r}")
        return found[0].key
