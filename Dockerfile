# The chat session server in a container: `uvicorn main:app` run from /app, with the
# dependencies installed from uv.lock (never the project itself: see [tool.uv] in
# pyproject.toml). docs/operations.md ("Containers") says how to build and run it.
#
#   docker build -t chat-session-server .
#   docker compose up --build            # with Redis, from compose.yaml
#
# Both stages use the same base image, so the virtual environment built in the first
# finds the same Python at the same path in the second.

FROM python:3.11-slim-bookworm AS build

# The uv version the Makefile pins (UV_VERSION there); tests/test_containers.py checks
# that the two agree.
ARG UV_VERSION=0.13.9
# Optional extras, space-separated: `--build-arg EXTRAS="openai ollama"`.
ARG EXTRAS=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv

RUN pip install "uv==${UV_VERSION}"

WORKDIR /app
COPY pyproject.toml uv.lock ./
# As `make run` installs, less the test group: the exact locked versions, no project.
RUN set -eu; \
    for extra in ${EXTRAS}; do set -- "$@" --extra "$extra"; done; \
    uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3.11 "$@"


FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/opt/venv/bin:${PATH}" \
    DATA_DIR=/data

# A fixed, unprivileged user; /data is where the embedded Redis keeps its files when
# REDIS_URL is unset, so it belongs to that user (a new named volume copies the owner).
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --home-dir /app --no-create-home --no-log-init \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
COPY pyproject.toml uv.lock main.py ./
COPY schema/ schema/
COPY resolvers/ resolvers/
COPY static/ static/

# By number, so an orchestrator can tell it is not root (runAsNonRoot).
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# /healthz answers while the process runs, whatever ALLOWED_HOSTS says; slim has no
# curl, so Python's own urllib asks (a non-2xx answer or no answer raises: exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# uvicorn reads WEB_CONCURRENCY (worker processes) and FORWARDED_ALLOW_IPS from the
# environment, and any option as UVICORN_<OPTION>; other arguments: override CMD.
CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000"]
