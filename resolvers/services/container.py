"""The services of one process, opened and closed with the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis, RedisCluster

from resolvers.services.adoption import Adoption
from resolvers.services.conversation import Conversations
from resolvers.services.elsewhere import OutsideHistories, look_for_histories
from resolvers.services.errors import Unauthenticated
from resolvers.services.identity import Authenticator, Identity
from resolvers.services.index import SessionIndex
from resolvers.services.limits import RateLimiter
from resolvers.services.model import build_model
from resolvers.services.persisted import PersistedQueries
from resolvers.services.sessions import SessionInfo, SessionStore, new_session_id
from resolvers.services.settings import OFFLINE_MODEL, Settings
from resolvers.services.shares import ShareStore
from resolvers.services.storage import describe_url, make_client, redis_url
from resolvers.services.stores import Stores, open_stores
from resolvers.services.summaries import Summarizer
from resolvers.services.titles import Titler
from resolvers.services.transfer import Transfer
from resolvers.services.turns import TurnRunner

logger = logging.getLogger(__name__)

ADMIN_NEEDED = "this operation needs Authorization: Bearer <ADMIN_TOKEN>"

# How often a cluster's index entries that could not be written are tried again.
INDEX_REPAIR_SECONDS = 1.0


@dataclass(slots=True)
class Services:
    settings: Settings
    redis: Redis | RedisCluster
    sessions: SessionStore
    stores: Stores
    conversations: Conversations
    turns: TurnRunner
    limiter: RateLimiter
    model_name: str
    auth: Authenticator
    persisted: PersistedQueries
    transfer: Transfer
    shares: ShareStore
    # Chats of the documented app in a Redis on localhost:6379 this server does not use
    # (looked for at start, when REDIS_URL is unset).
    elsewhere: OutsideHistories | None = None

    @property
    def admin_open(self) -> bool:
        """Whether the admin operations are open to all (no ADMIN_TOKEN set)."""
        return self.settings.admin_token is None

    def allows_admin(self, who: Identity) -> bool:
        """Whether `who` may use the admin operations (all may, without ADMIN_TOKEN)."""
        return self.admin_open or who.is_admin

    def check_admin(self, who: Identity) -> None:
        """Raise Unauthenticated unless `who` may use the admin operations."""
        if not self.allows_admin(who):
            raise Unauthenticated(ADMIN_NEEDED)

    async def create_session(
        self,
        *,
        who: Identity,
        client: str | None,
        title: str | None = None,
        system_prompt: str | None = None,
        pinned: bool = False,
        archived: bool = False,
    ) -> SessionInfo:
        """A new session of `who` (owned by its user, if any), counted against the
        creator's limits before anything is written."""
        title, system_prompt = self.sessions.check_fields(title, system_prompt)
        session_id = new_session_id()
        await self.limiter.claim_session(session_id, client, who)
        return await self.sessions.create(
            session_id=session_id,
            title=title,
            system_prompt=system_prompt,
            owner=who.user_id,
            pinned=pinned,
            archived=archived,
        )

    def begin_shutdown(self) -> None:
        """A SIGTERM came: end the streams this process serves within the bound."""
        self.turns.shutdown(self.settings.shutdown_timeout_seconds)

    async def ready(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Start Redis (embedded unless REDIS_URL is set), the model and the services."""
    model = build_model(
        settings.model_name,
        fallback=settings.llm_fallback_model,
        timeout=settings.llm_timeout_seconds,
        max_retries=settings.llm_max_retries,
        max_connections=settings.llm_max_connections,
        fast=settings.llm_fast_stream,
        reasoning_format=settings.llm_reasoning_format,
        offline_token_delay=settings.offline_token_delay_seconds,
    )
    async with contextlib.AsyncExitStack() as stack:
        url = await redis_url(settings.redis_url, settings.data_dir, stack)
        if settings.redis_url:
            where = describe_url(url) + (" (Redis Cluster)" if settings.redis_cluster else "")
        else:
            where = f"embedded redis-server, data in {settings.data_dir.resolve()}"
        redis = make_client(
            url, max_connections=settings.redis_max_connections, cluster=settings.redis_cluster
        )
        stack.push_async_callback(redis.aclose)
        blocking = make_client(
            url, max_connections=settings.turn_follow_connections, cluster=settings.redis_cluster
        )
        stack.push_async_callback(blocking.aclose)
        stack.push_async_callback(model.aclose)
        stores = open_stores(
            redis,
            default_system_prompt=settings.system_prompt,
            history_window=settings.history_window,
            ttl_seconds=settings.session_ttl_seconds,
            lock_seconds=settings.turn_lock_seconds,
            max_prompt_chars=settings.max_message_chars,
            replay_seconds=settings.turn_replay_seconds,
            blocking=blocking,
        )
        sessions = stores.sessions
        limiter = RateLimiter(
            redis,
            per_address=settings.rate_limit_per_minute,
            turns_per_session=settings.rate_limit_turns_per_minute,
            exempt=settings.rate_limit_exempt_set,
            user_turns=settings.user_turns_per_minute,
            user_sessions=settings.user_sessions_per_minute,
            user_max_sessions=settings.user_max_sessions,
            document_registrations=settings.apq_registrations_per_minute,
        )
        turns = TurnRunner(
            stores.turns,
            sessions,
            model,
            limiter=limiter,
            max_message_chars=settings.max_message_chars,
            llm_timeout=settings.llm_timeout_seconds,
            turn_timeout=settings.llm_turn_timeout_seconds,
            lock_seconds=settings.turn_lock_seconds,
            stream_min_gap=settings.stream_min_interval_ms / 1000,
            follow_connections=settings.turn_follow_connections,
            history_tokens=settings.history_max_tokens,
            summarizer=(
                Summarizer(stores.summaries, model, timeout=settings.llm_timeout_seconds * 2)
                if settings.history_summary
                else None
            ),
            titler=(
                Titler(redis, model, timeout=settings.llm_timeout_seconds)
                if settings.title_auto and settings.model_name != OFFLINE_MODEL
                else None
            ),
        )
        logger.info("redis: %s", where)
        logger.info("model: %s", settings.model_name)
        if settings.llm_fallback_model:
            logger.info("fallback model: %s", settings.llm_fallback_model)
        if settings.admin_token is None:
            logger.warning(
                "ADMIN_TOKEN is not set: the admin operations (listing every session) are open"
            )
        else:
            logger.info("admin: operations need the ADMIN_TOKEN bearer token")
        services = Services(
            settings=settings,
            redis=redis,
            sessions=sessions,
            stores=stores,
            conversations=Conversations(
                redis,
                sessions,
                history_window=settings.history_window,
                history_tokens=settings.history_max_tokens,
                summaries=settings.history_summary,
            ),
            turns=turns,
            limiter=limiter,
            model_name=settings.model_name,
            transfer=Transfer(redis, ttl_seconds=settings.session_ttl_seconds, index=stores.index),
            shares=ShareStore(redis, sessions),
            persisted=PersistedQueries(
                redis,
                max_documents=settings.apq_max_documents,
                max_bytes=settings.apq_max_document_bytes,
                ttl=settings.apq_ttl_seconds,
            ),
            auth=Authenticator(
                redis,
                secret=settings.auth_secret.get_secret_value() if settings.auth_secret else None,
                admin_token=(
                    settings.admin_token.get_secret_value() if settings.admin_token else None
                ),
                jwks_url=settings.auth_jwks_url,
                issuer=settings.auth_issuer,
                audience=settings.auth_audience,
                admin_claim=settings.auth_admin_claim,
                required=settings.auth_required,
                guest_seconds=settings.guest_token_seconds,
                jwks_timeout=settings.auth_jwks_timeout_seconds,
                jwks_refresh=settings.auth_jwks_refresh_seconds,
                move_owner=sessions.move_owner,
            ),
        )
        background = [asyncio.create_task(_adopt_in_background(stores.adoption))]
        if not settings.redis_url:
            background.append(asyncio.create_task(_look_elsewhere(services)))
        if settings.redis_cluster:
            background.append(asyncio.create_task(_repair_index_in_background(stores.index)))
        try:
            yield services
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await turns.drain(settings.shutdown_timeout_seconds)


async def _adopt_in_background(adoption: Adoption) -> None:
    try:
        adopted = await adoption.orphans()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("adopting existing message_store lists failed: %s", type(exc).__name__)
        return
    if adopted:
        logger.info("adopted %d existing LangChain chat histories as sessions", adopted)


async def _look_elsewhere(services: Services) -> None:
    """Whether the documented app's Redis holds chats this server does not serve: said
    once, in the log and to the page (serverInfo)."""
    found = await look_for_histories()
    if found is not None:
        services.elsewhere = found
        logger.warning(found.advice)


async def _repair_index_in_background(index: SessionIndex) -> None:
    """On a cluster, write the index entries whose write failed after a stored turn."""
    while True:
        await asyncio.sleep(INDEX_REPAIR_SECONDS)
        try:
            await index.repair()
        except Exception as exc:
            logger.warning("index repair failed, retrying: %s", type(exc).__name__)
