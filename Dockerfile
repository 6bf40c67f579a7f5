FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DATABASE_PATH=/data/animate.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app animate \
    && mkdir -p /data && chown animate /data

USER animate
VOLUME ["/data"]
# SIGTERM stops the bot gracefully; unfinished jobs resume on the next start.
STOPSIGNAL SIGTERM
CMD ["animate-bot"]
