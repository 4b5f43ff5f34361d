"""Starts app processes fast: a process that has imported the app's libraries once forks
a copy of itself for each app, which then runs `uvicorn main:app` as the command line
would. Importing LangChain, the Groq SDK, Strawberry and FastAPI takes about 4 s of CPU
here; a fork takes milliseconds, so the suite pays it once per test worker, not once per
app it starts.

Only third-party libraries are imported before the fork: the app's own modules (which
read the environment and the process id at import: the metrics folder, the settings)
are imported by each child, after its environment is in place, exactly as under
`uvicorn main:app`. A child is a real process with its own uvicorn, sockets and event
loop; the tests see it through `ForkedProcess`, which answers like `subprocess.Popen`.

Protocol, one JSON object a line: the test process writes `{"argv", "env", "cwd",
"log"}`; this process answers `{"pid"}` for each, and `{"exited", "code"}` when a child
ends (`code` as `Popen.returncode`: negative for a signal).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

# Imported once, before any fork: everything heavy the app imports, nothing that reads
# the environment at import (prometheus_client reads PROMETHEUS_MULTIPROC_DIR then).
PRELOADED = (
    "asyncio",
    "orjson",
    "httpx",
    "aiohttp",
    "httpx_aiohttp",
    "redis.asyncio",
    "pydantic",
    "pydantic_settings",
    "jwt",
    "graphql",
    "starlette.applications",
    "fastapi",
    "fastapi.staticfiles",
    "strawberry",
    "strawberry.fastapi",
    "uvicorn",
    "uvicorn.main",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.lifespan.on",
    "langchain_core.messages",
    "langchain_core.language_models",
    "langchain.chat_models",
    "langchain_groq",
    "groq",
)


def serve() -> None:
    """The forking process: reads commands on stdin until it closes."""
    for name in PRELOADED:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    assert threading.active_count() == 1, "a preloaded library started a thread"
    children: set[int] = set()
    commands = sys.stdin.buffer
    out = sys.stdout
    pending = b""
    while True:
        ready, _, _ = select.select([commands], [], [], 0.05)
        _reap(children, out)
        if not ready:
            continue
        chunk = os.read(commands.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            pid = _spawn(json.loads(line))
            children.add(pid)
            _say(out, {"pid": pid})
    # The test process went away: so do its apps.
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _spawn(command: dict[str, Any]) -> int:
    log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    pid = os.fork()
    if pid:
        os.close(log)
        return pid
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(devnull)
        os.close(log)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(command["env"])
        os.chdir(command["cwd"])
        sys.stdin = open(0)  # noqa: SIM115  # the child's own stdin, for its lifetime
        sys.stdout = open(1, "w", buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1)  # noqa: SIM115
        argv = command["argv"]
        sys.argv = argv
        from uvicorn.main import main as uvicorn_main

        try:
            uvicorn_main.main(args=argv[3:], prog_name="uvicorn", standalone_mode=True)
            code = 0
        except SystemExit as exit_:
            # As the interpreter does at exit: a message is printed, and the code is 1.
            if isinstance(exit_.code, int) or exit_.code is None:
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
                code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _reap(children: set[int], out: IO[str]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _say(out, {"exited": pid, "code": code})


def _say(out: IO[str], message: dict[str, int]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


class ForkedProcess:
    """A process the zygote forked, as the tests use a `subprocess.Popen`."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self._zygote = zygote
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._zygote.wait_exit(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"app process {self.pid}", timeout or 0)
        self.returncode = code
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The test process's end: starts the forking process, asks it for apps."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        self._lock = threading.Condition()
        self._started: list[int] = []
        self._exited: dict[int, int] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            message = json.loads(line)
            with self._lock:
                if "pid" in message:
                    self._started.append(int(message["pid"]))
                else:
                    self._exited[int(message["exited"])] = int(message["code"])
                self._lock.notify_all()
        with self._lock:
            self._started.append(-1)  # the zygote ended: wake whoever waits
            self._lock.notify_all()

    def spawn(self, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> ForkedProcess:
        command = {"argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}
        assert self._process.stdin is not None
        with self._lock:
            self._process.stdin.write((json.dumps(command) + "\n").encode())
            self._process.stdin.flush()
            # Four minutes: a zygote still importing on a loaded machine answers late.
            if not self._lock.wait_for(lambda: bool(self._started), timeout=240):
                raise RuntimeError("the zygote did not start the app")
            pid = self._started.pop(0)
        if pid < 0:
            raise RuntimeError("the zygote has ended")
        return ForkedProcess(self, pid)

    def exit_code(self, pid: int) -> int | None:
        with self._lock:
            return self._exited.get(pid)

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        with self._lock:
            self._lock.wait_for(lambda: pid in self._exited, timeout=timeout)
            return self._exited.get(pid)

    def close(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._reader.join(5)


if __name__ == "__main__":
    serve()
