"""Settings read from the environment (and an optional `.env` file)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from dotenv import load_dotenv
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Claims of the JWT standard and of the guest tokens this server signs.
RESERVED_CLAIMS = frozenset({"sub", "iss", "aud", "exp", "nbf", "iat", "jti", "guest"})
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."
DEFAULT_GROQ_MODEL = "groq:llama-3.1-8b-instant"
OFFLINE_MODEL = "offline"


# Request headers that pages on CORS_ORIGINS may send by default.
DEFAULT_CORS_ALLOW_HEADERS = ",".join(
    (
        "authorization",
        "content-type",
        "last-event-id",
        "x-request-id",
        # Apollo Client and Apollo's tools.
        "apollographql-client-name",
        "apollographql-client-version",
        "apollo-require-preflight",
        "x-apollo-operation-name",
        # Trace context (W3C) and Sentry.
        "traceparent",
        "tracestate",
        "baggage",
        "sentry-trace",
    )
)


class Settings(BaseSettings):
    """Every knob of the server; names match the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    redis_url: str | None = None
    redis_cluster: bool = False
    data_dir: Path = Path("./data")
    llm_model: str | None = None
    groq_api_key: SecretStr | None = None
    admin_token: SecretStr | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    history_window: int = Field(default=40, ge=0)
    # The history a turn sends is cut, oldest first, to this estimate of tokens too.
    history_max_tokens: int = Field(default=8000, ge=1)
    # Summarize the history left out of turns into a SYSTEM message sent first.
    history_summary: bool = False
    # After a session's first turn, the model names it in the background.
    title_auto: bool = True
    max_message_chars: int = Field(default=32000, ge=1)
    session_ttl_seconds: int = Field(default=0, ge=0)
    # How long a turn's lock lives without renewal: bounds how long a session stays
    # busy after a process dies mid-turn. Renewed while the turn runs.
    turn_lock_seconds: float = Field(default=20.0, ge=1)
    # Pause between the offline model's tokens, so its reply visibly streams.
    offline_token_delay_seconds: float = Field(default=0.02, ge=0)
    redis_max_connections: int = Field(default=100, ge=1)
    # How long a turn's events stay in Redis after it ends, for replay and joins.
    turn_replay_seconds: int = Field(default=300, ge=1)
    # Connections for following turns that other processes run (one per turn followed
    # at once, whatever the number of subscribers to it here).
    turn_follow_connections: int = Field(default=50, ge=1)
    # SIGTERM to exit, at most: running turns may finish for most of it, then are stopped
    # and stored with what they have (an orchestrator kills at its own bound, 30 s in
    # Kubernetes by default).
    shutdown_timeout_seconds: float = Field(default=30.0, ge=1, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # "json": one JSON object a line (for a log shipper); "text" for people.
    log_format: Literal["text", "json"] = "text"

    # The model's failure modes.
    llm_fallback_model: str | None = None
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    # Concurrent connections to the model provider (replies streaming at once).
    llm_max_connections: int = Field(default=1000, ge=1)
    llm_turn_timeout_seconds: float = Field(default=0.0, ge=0)  # 0: no bound on a whole reply
    # Read Groq's stream directly (its request still built by ChatGroq); false uses
    # LangChain's astream for every provider.
    llm_fast_stream: bool = True
    # Groq's reasoning_format for models that reason ("" never sends one); see
    # docs/configuration.md for which models take it.
    llm_reasoning_format: Literal["parsed", "raw", "hidden", ""] = "parsed"
    # Tokens that come sooner than this after the last streamed event wait (at most this
    # long) to go out in one event; 0 sends every token as its own event. 40 ms: 25
    # events a second, smoother than anyone reads, and at a provider's 300-1,000 tokens
    # a second 12-40 tokens an event, so a relayed token costs a frame's share, not a
    # frame (docs/performance.md has the measure).
    stream_min_interval_ms: int = Field(default=40, ge=0, le=50)

    # Abuse limits.
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    rate_limit_turns_per_minute: int = Field(default=60, ge=0)
    rate_limit_exempt: str = "127.0.0.1,::1"
    # Per user, and per address for anonymous callers (RATE_LIMIT_EXEMPT exempts an
    # address, never a user): turns, sessions made and held, documents kept for APQ.
    user_turns_per_minute: int = Field(default=60, ge=0)
    user_sessions_per_minute: int = Field(default=30, ge=0)
    user_max_sessions: int = Field(default=10_000, ge=0)
    apq_registrations_per_minute: int = Field(default=60, ge=0)
    # Open WebSockets from one address, in each server process (exempt addresses too).
    ws_max_per_address: int = Field(default=50, ge=1)
    graphql_introspection: bool = True
    graphql_max_depth: int = Field(default=12, ge=1)
    graphql_max_aliases: int = Field(default=30, ge=1)
    graphql_max_tokens: int = Field(default=2000, ge=10)
    ws_max_subscriptions: int = Field(default=20, ge=1)
    ws_init_timeout_seconds: float = Field(default=10.0, gt=0)
    ws_max_message_bytes: int = Field(default=262_144, ge=1024)
    # Automatic persisted queries: documents kept by hash (0: none kept), each at most
    # this size, each for this long after its last use.
    apq_max_documents: int = Field(default=1000, ge=0, le=100_000)
    apq_max_document_bytes: int = Field(default=65_536, ge=1, le=1_048_576)
    apq_ttl_seconds: int = Field(default=7 * 86_400, ge=1)
    cors_origins: str = ""
    # Request headers a page on an allowed origin may send (its preflight is refused
    # otherwise): the API's own, Apollo Client's, and the trace context's.
    cors_allow_headers: str = DEFAULT_CORS_ALLOW_HEADERS
    # A request body (REST or GraphQL) larger than this is refused with 413 as it
    # arrives; a GraphQL document larger than it is never parsed.
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Proxies whose X-Forwarded-For names the client (uvicorn reads the same variable);
    # none by default, so no header can choose a client's address.
    forwarded_allow_ips: str = ""
    # Host names served; unset: loopback names on loopback connections, any elsewhere.
    allowed_hosts: str = ""

    # Identity (docs/api.md, "Identity and ownership").
    # HMAC key of the tokens this server signs; unset: generated once, kept in Redis.
    auth_secret: SecretStr | None = None
    # An outside identity provider's keys (RS256, ES256), with its issuer and audience.
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_required: bool = False
    # A claim whose true value makes the bearer of a token an admin.
    auth_admin_claim: str = "admin"
    # Life of a guest token (a year by default: a browser keeps its chats).
    guest_token_seconds: int = Field(default=365 * 24 * 3600, ge=60)
    # Longest wait for the identity provider's keys; an unknown key id refetches them at
    # most once in this many seconds.
    auth_jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    auth_jwks_refresh_seconds: float = Field(default=10.0, ge=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "redis_url",
        "llm_model",
        "llm_fallback_model",
        "admin_token",
        "groq_api_key",
        "auth_secret",
        "auth_jwks_url",
        "auth_issuer",
        "auth_audience",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("llm_model", "llm_fallback_model")
    @classmethod
    def _model_form(cls, value: str | None) -> str | None:
        if value is None or value == OFFLINE_MODEL:
            return value
        provider, sep, name = value.partition(":")
        if not sep or not provider or not name:
            raise ValueError(
                "must be 'provider:model' (e.g. groq:llama-3.1-8b-instant) or 'offline'"
            )
        return value

    @model_validator(mode="after")
    def _cluster_needs_url(self) -> Settings:
        if self.redis_cluster and not self.redis_url:
            raise ValueError("REDIS_CLUSTER=true needs REDIS_URL naming a node of the cluster")
        return self

    @model_validator(mode="after")
    def _prompt_not_empty(self) -> Settings:
        if not self.system_prompt.strip():
            self.system_prompt = DEFAULT_SYSTEM_PROMPT
        return self

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in _split(value):
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return value

    @field_validator("auth_jwks_url")
    @classmethod
    def _jwks_scheme(cls, value: str | None) -> str | None:
        if value is None or value.startswith("https://"):
            return value
        host = urlsplit(value).hostname if value.startswith("http://") else None
        if host not in ("127.0.0.1", "localhost", "::1"):
            # Keys fetched in the clear could be swapped by anyone on the way.
            raise ValueError("AUTH_JWKS_URL must be https:// (http:// only on loopback)")
        return value

    @field_validator("auth_admin_claim")
    @classmethod
    def _admin_claim(cls, value: str) -> str:
        if value in RESERVED_CLAIMS:
            # The server sets these in the tokens it signs itself (`guest` is true in every
            # guest's): naming one would make every holder of such a token an admin.
            raise ValueError(f"{value!r} is a claim every token has or this server sets")
        return value

    @field_validator("auth_secret")
    @classmethod
    def _secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("AUTH_SECRET must have at least 32 characters")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for entry in _split(value):
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        for host in _split(value):
            if "*" in host[1:] or (host.startswith("*") and host != "*" and host[1] != "."):
                raise ValueError(f"{host!r}: a wildcard must be like *.example.com")
        return value

    @property
    def allowed_host_list(self) -> list[str]:
        return _split(self.allowed_hosts)

    @property
    def forwarded_allow_list(self) -> list[str]:
        return _split(self.forwarded_allow_ips)

    @property
    def cors_origin_list(self) -> list[str]:
        return _split(self.cors_origins)

    @property
    def cors_allow_header_list(self) -> list[str]:
        return [header.lower() for header in _split(self.cors_allow_headers)]

    @property
    def rate_limit_exempt_set(self) -> frozenset[str]:
        return frozenset(_split(self.rate_limit_exempt))

    @property
    def model_name(self) -> str:
        """The model in use: LLM_MODEL, else Groq when its key is set, else offline."""
        if self.llm_model:
            return self.llm_model
        return DEFAULT_GROQ_MODEL if self.groq_api_key else OFFLINE_MODEL


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process's settings, built once; tests call `get_settings.cache_clear()`.

    A `.env` file also reaches the provider libraries (`langchain-groq` reads
    `GROQ_API_KEY` from the environment itself); variables already set win.
    """
    load_dotenv(".env", override=False)
    return Settings()
