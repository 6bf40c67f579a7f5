# Pinned base: a fixed Python minor on a fixed Debian release. To pin byte-for-byte, append the digest
# (`docker buildx imagetools inspect python:3.12-slim-bookworm`), e.g. python:3.12-slim-bookworm@sha256:...
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/data/animate.db

WORKDIR /app
# Dependencies first, in their own layer: a code change does not reinstall them. The lock pins every
# package with hashes -- the same versions CI tests (requirements-test.lock is this plus test tools).
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app animate \
    && mkdir -p /data && chown animate /data

USER animate
VOLUME ["/data"]
# /healthz answers 200 only while the event loop, the gateway and the database are fine. slim has no
# curl, so Python asks. Without METRICS_PORT there is nothing to ask, and the check passes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; p = os.environ.get('METRICS_PORT'); sys.exit(0 if not p else urllib.request.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4).status != 200)"]
# SIGTERM stops the bot gracefully; unfinished jobs resume on the next start.
STOPSIGNAL SIGTERM
CMD ["animate-bot"]
