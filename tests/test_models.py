"""Model selection by configuration, and the built-in offline model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage

from resolvers.services.model import OFFLINE_REPLY, OfflineChatModel, build_model
from resolvers.services.settings import Settings
from tests.support import AppServer, FakeGroq, RedisServer, app_env, new_session


def settings(**values: Any) -> Settings:
    """Settings from `values` (validated by pydantic) and the environment, not `.env`."""
    return Settings(_env_file=None, **values)


def test_offline_is_the_default_without_a_provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    monkeypatch.delenv("LLM_MODEL", raising=False)
    assert settings().model_name == "offline"


def test_groq_is_the_default_when_its_key_is_set() -> None:
    assert settings(groq_api_key="k").model_name == "groq:llama-3.1-8b-instant"


def test_llm_model_wins() -> None:
    assert (
        settings(groq_api_key="k", llm_model="openai:gpt-4o-mini").model_name
        == "openai:gpt-4o-mini"
    )


@pytest.mark.parametrize("name", ["gpt-4o", ":x", "groq:"])
def test_llm_model_must_name_a_provider(name: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)llm_model"):
        settings(llm_model=name)


def test_a_provider_without_its_integration_fails_at_start_with_the_package_name() -> None:
    with pytest.raises(RuntimeError, match="pip install langchain-ollama"):
        build_model("ollama:llama3.2")


def test_an_unknown_provider_fails_at_start_naming_the_variable() -> None:
    with pytest.raises(RuntimeError, match="LLM_MODEL=nosuchprovider:some-model"):
        build_model("nosuchprovider:some-model")


async def test_offline_model_streams_its_reply_in_pieces() -> None:
    model = OfflineChatModel(token_delay=0)
    pieces = [chunk.text async for chunk in model.astream([HumanMessage(content="hi")])]
    assert len(pieces) > 10
    assert "".join(pieces) == OFFLINE_REPLY
    assert "GROQ_API_KEY" in OFFLINE_REPLY and "LLM_MODEL" in OFFLINE_REPLY


@pytest.mark.slow
async def test_any_openai_compatible_server_by_configuration_alone(
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    env = app_env(
        shared_redis_url,
        None,
        LLM_MODEL="openai:gpt-4o-mini",
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=f"{fake_groq.url}/openai/v1",
    )
    server = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session_id = await new_session(http)
        reply = await http.post("/chat", json={"session_id": session_id, "message": "hey there"})
        assert reply.text == "[n=2] hey there"
    server.stop()
    assert "model: openai:gpt-4o-mini" in server.output()


@pytest.mark.slow
async def test_the_start_log_names_redis_model_and_open_admin(
    make_app: Callable[..., AppServer],
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    server = make_app(redis_url=shared_redis_url)
    server.stop()
    log = server.output()
    assert f"redis: redis://127.0.0.1:{redis_server.port}/0" in log
    assert "model: groq:llama-3.1-8b-instant" in log
    assert "ADMIN_TOKEN is not set" in log


@pytest.mark.slow
async def test_langchains_own_stream_path_gives_the_same_turns(
    shared_redis_url: str,
    start_app: type[AppServer],
    redis_server: RedisServer,
    fake_groq: FakeGroq,
) -> None:
    env = app_env(shared_redis_url, fake_groq, LLM_FAST_STREAM="false")
    server = start_app(env=env).start()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session_id = await new_session(http)
        reply = await http.post("/chat", json={"session_id": session_id, "message": "same here"})
        assert reply.text == "[n=2] same here"
        cut = await http.post(
            "/chat",
            json={"session_id": session_id, "message": "!cut=1 a b"},
            headers={"accept": "text/event-stream"},
        )
        assert '"code": "LLM_ERROR"' in cut.text
        history = (await http.get(f"/session/{session_id}/history")).json()["history"]
        assert history == [{"input": "same here", "output": "[n=2] same here"}]
    server.stop()
