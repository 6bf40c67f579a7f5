"""Prometheus instruments, and the small helpers that feed them from the bot's existing code paths.

Every label has a fixed, small set of values (no user, guild, prompt or token ever becomes a label):
unknown values are folded into "other". The instruments are not registered globally: each metrics
server builds its own registry from them (see `build_registry`), so several bots in one process (the
tests) never collide.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from storage.lifecycle import UNFINISHED, JobEvent, JobState

if TYPE_CHECKING:
    from storage.stats import StatsRepository

log = logging.getLogger(__name__)

JOB_EVENTS = frozenset(e.value for e in JobEvent)
# Normalised phases (bot.runcomfy.Phase), not RunComfy's raw words: those vary by dialect.
POLL_STATUSES = frozenset({"queued", "running", "succeeded", "failed", "cancelled", "unknown"})
SUBMIT_OUTCOMES = frozenset(
    {"accepted", "outcome_unknown", "no_balance", "token_rejected", "unknown_model", "invalid", "unavailable"}
)
DELIVERY_KINDS = frozenset({"uploaded", "reencoded", "link_only"})
RUNCOMFY_ENDPOINTS = frozenset({"submit", "status", "result", "cancel"})
# HTTP answers worth telling apart; anything else is counted by its class ("2xx", "5xx", ...).
_KNOWN_CODES = frozenset(
    {200, 201, 202, 400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504}
)
# The states shown in the in-flight gauge (in this order).
ACTIVE_STATES = tuple(s.value for s in sorted(UNFINISHED, key=list(JobState).index))
MAX_ROUTES = 64  # distinct Discord routes tracked for 429s; more are counted as "other"

JOB_EVENTS_TOTAL = Counter(
    "animate_job_events", "Job lifecycle events (the engine's job_event).", ["event"], registry=None
)
SUBMITS = Counter("animate_submits", "Submits to the video backend, by outcome.", ["outcome"], registry=None)
RUNCOMFY_REQUESTS = Counter(
    "animate_runcomfy_requests",
    "HTTP requests to RunComfy by endpoint and answer (HTTP code, 'timeout' or 'network_error').",
    ["endpoint", "answer"],
    registry=None,
)
RUNCOMFY_LATENCY = Histogram(
    "animate_runcomfy_request_seconds",
    "Latency of RunComfy requests, by endpoint.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=None,
)
POLLS = Counter(
    "animate_polls", "Status checks of running jobs, by the status read.", ["status"], registry=None
)
DELIVERIES = Counter(
    "animate_deliveries",
    "Videos posted: uploaded as is, re-encoded to fit the upload limit, or as a link only.",
    ["kind"],
    registry=None,
)
DISCORD_RATE_LIMITS = Counter(
    "animate_discord_rate_limits",
    "HTTP 429 answers from Discord, by route (ids replaced) and scope.",
    ["route", "scope"],
    registry=None,
)
LOOP_LAG = Gauge(
    "animate_event_loop_lag_seconds", "How late the event loop ran the last heartbeat tick.", registry=None
)
LOOP_LAG_HIST = Histogram(
    "animate_event_loop_lag_distribution_seconds",
    "How late the event loop ran heartbeat ticks.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=None,
)
INSTRUMENTS: tuple[Collector, ...] = (
    JOB_EVENTS_TOTAL,
    SUBMITS,
    RUNCOMFY_REQUESTS,
    RUNCOMFY_LATENCY,
    POLLS,
    DELIVERIES,
    DISCORD_RATE_LIMITS,
    LOOP_LAG,
    LOOP_LAG_HIST,
)


def bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


# ---------------------------------------------------------------------- job events, submits, polls


def count_job_event(event: JobEvent | str) -> None:
    JOB_EVENTS_TOTAL.labels(event=bounded(event, JOB_EVENTS)).inc()


def count_submit(exc: BaseException | None) -> None:
    """A submit's outcome: None when it was accepted, else the error it raised."""
    SUBMITS.labels(outcome=submit_outcome(exc)).inc()


def submit_outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "accepted"
    # Imported here: bot.runcomfy imports this module.
    from bot import runcomfy as rc

    for kind, outcome in (
        (rc.SubmitOutcomeUnknown, "outcome_unknown"),
        (rc.RunComfyBalanceError, "no_balance"),
        (rc.RunComfyAuthError, "token_rejected"),
        (rc.RunComfyModelError, "unknown_model"),
        (rc.RunComfyValidationError, "invalid"),
        (rc.RunComfyUnavailableError, "unavailable"),
    ):
        if isinstance(exc, kind):
            return outcome
    return "other"


def count_poll(status: str) -> None:
    POLLS.labels(status=bounded(status, POLL_STATUSES)).inc()


# ---------------------------------------------------------------------- deliveries

_reencoded: set[int] = set()  # job ids whose prepared video is a re-encode (until it is posted)


def mark_reencoded(job_id: int) -> None:
    _reencoded.add(job_id)


def count_delivery(job_id: int, *, uploaded: bool) -> None:
    """A video was posted: with the file (re-encoded or not) or as a link only."""
    reencoded = job_id in _reencoded
    _reencoded.discard(job_id)
    kind = "link_only" if not uploaded else ("reencoded" if reencoded else "uploaded")
    DELIVERIES.labels(kind=kind).inc()


# ---------------------------------------------------------------------- RunComfy calls


def runcomfy_endpoint(url: str) -> str:
    path = url.split("?", 1)[0].rstrip("/")
    if "/models/" in path:
        return "submit"
    last = path.rsplit("/", 1)[-1]
    return bounded(last, RUNCOMFY_ENDPOINTS)


def http_answer(status: int) -> str:
    return str(status) if status in _KNOWN_CODES else f"{status // 100}xx"


@dataclass
class _Call:
    endpoint: str
    started: float = field(default_factory=time.monotonic)
    answer: str = "network_error"

    def status(self, code: int) -> None:
        self.answer = http_answer(code)


class runcomfy_call:  # lower-case: used like a function, `with runcomfy_call(url) as call:`
    """Times one RunComfy request and counts it by endpoint and answer."""

    def __init__(self, url: str) -> None:
        self.call = _Call(runcomfy_endpoint(url))

    def __enter__(self) -> _Call:
        return self.call

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        call = self.call
        if exc_type is not None and issubclass(exc_type, TimeoutError):
            call.answer = "timeout"
        RUNCOMFY_REQUESTS.labels(endpoint=call.endpoint, answer=call.answer).inc()
        RUNCOMFY_LATENCY.labels(endpoint=call.endpoint).observe(time.monotonic() - call.started)


# ---------------------------------------------------------------------- Discord 429s

_SNOWFLAKE = re.compile(r"^\d{5,}$")
_LITERAL = re.compile(r"^@?[a-z][a-z0-9_-]{0,23}$")
_routes: set[str] = set()


def discord_route(path: str) -> str:
    """`/api/v10/channels/123/messages` -> `/channels/{id}/messages`: ids, tokens, emoji and anything
    else that is not a plain route word become placeholders, so the label set stays small and no
    interaction token ever becomes a label."""
    path = path.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api" and re.fullmatch(r"v\d+", parts[1]):
        parts = parts[2:]
    out = []
    for part in parts:
        if _SNOWFLAKE.match(part):
            out.append("{id}")
        elif _LITERAL.match(part):
            out.append(part)
        else:
            out.append("{x}")
    route = "/" + "/".join(out)
    if route not in _routes:
        if len(_routes) >= MAX_ROUTES:
            return "other"
        _routes.add(route)
    return route


async def _on_request_end(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    if params.response.status != 429:
        return
    scope = params.response.headers.get("X-RateLimit-Scope", "")
    if params.response.headers.get("X-RateLimit-Global", "").lower() == "true":
        scope = "global"
    DISCORD_RATE_LIMITS.labels(
        route=f"{params.method} {discord_route(params.url.path)}",
        scope=scope if scope in ("user", "global", "shared") else "unknown",
    ).inc()


def discord_http_trace() -> aiohttp.TraceConfig:
    """Passed to discord.py (`http_trace=`): sees every answer of its HTTP session, including the
    429s it retries internally."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_request_end)
    return trace


# ---------------------------------------------------------------------- from the database


class DatabaseCollector(Collector):
    """Jobs in flight by state and credits charged/refunded, read from SQLite by `refresh()` (async,
    before each scrape) and reported from that snapshot by `collect()` (which must be synchronous).

    Only cheap queries: the active states use the partial index on unfinished jobs, and the ledger
    is read incrementally by row id, so a scrape never scans the whole history.
    """

    def __init__(self, stats: StatsRepository) -> None:
        self.stats = stats
        self.active: dict[str, int] = dict.fromkeys(ACTIVE_STATES, 0)
        self.charged = 0
        self.refunded = 0
        self._ledger_cursor: int | None = None
        self._lock = asyncio.Lock()  # two scrapes at once must not count the same ledger rows twice

    async def start(self) -> None:
        """Count credits from now on (counters start at zero with the process, as Prometheus expects)."""
        self._ledger_cursor = await self.stats.ledger_high_water()

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        active = dict.fromkeys(ACTIVE_STATES, 0)
        active.update(await self.stats.unfinished_by_state())
        self.active = active
        if self._ledger_cursor is None:
            await self.start()
        for kind, credits, last in await self.stats.ledger_totals_after(self._ledger_cursor or 0):
            if kind == "charge":
                self.charged += credits
            else:
                self.refunded += -credits  # refunds are stored as negative credits
            self._ledger_cursor = max(self._ledger_cursor or 0, last)

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("animate_jobs", "Unfinished jobs by state.", labels=["state"])
        for state, n in self.active.items():
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily(
            "animate_jobs_in_flight",
            "Jobs reserved, submitted or being delivered.",
            value=sum(self.active.values()),
        )
        yield CounterMetricFamily(
            "animate_credits_charged", "Credits charged since the bot started.", value=self.charged
        )
        yield CounterMetricFamily(
            "animate_credits_refunded", "Credits refunded since the bot started.", value=self.refunded
        )


def build_registry(*extra: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    for collector in (*INSTRUMENTS, *extra):
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry
