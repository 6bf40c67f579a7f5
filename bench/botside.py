"""The bot's process: runs the real AnimateBot against the fakes and drives one benchmark scenario.

Started by ``bench.run`` as ``python -m bench.botside --scenario NAME --control URL --params JSON``;
prints one JSON line with the scenario's measurements on stdout. Besides the bot, this process holds
only a 50 ms event-loop ticker (oversleep = loop lag; it also samples VmRSS) and a few control-API
calls per second to the fakes' process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import discord
import discord.asset
import discord.gateway
import discord.http
import yarl

if __package__ in (None, ""):  # `python bench/botside.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.naive import NaiveBot
from bench.stats import rss_kib, summary
from bench.taskcpu import start_taskcpu, stop_taskcpu
from bot.__main__ import tune_gc
from bot.client import AnimateBot
from bot.settings import Settings

ACTIVE_STATES = ("pending", "queued", "running", "delivering")
FINAL_STATES = ("delivered", "failed", "cancelled", "rejected")
# Settings whose production defaults are durations; --scale multiplies them (the back-off ratio is a
# ratio, so the whole schedule scales and every count stays the same).
SCALED_SETTINGS = ("poll_first_delay", "poll_max_interval", "status_edit_interval")


def default_of(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float)
    return float(value)


class LoopMonitor:
    """Measures event-loop lag (how late a 50 ms sleep wakes up) and samples resident memory."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.lags: list[tuple[float, float]] = []  # (monotonic time, lag seconds)
        self.rss: list[tuple[float, int]] = []  # (monotonic time, KiB)
        self.gc_pauses: list[tuple[float, int, float]] = []  # (monotonic time, generation, seconds)
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # The cyclic collector stops the loop too: its pauses explain loop lag the bot's code does not.
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self.gc_pauses.append((time.monotonic(), info["generation"], now - self._gc_started))

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._run(), name="bench-loop-monitor")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        tick = 0
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.lags.append((time.monotonic(), max(0.0, now - before - self.interval)))
            tick += 1
            if tick % 10 == 0:
                self.rss.append((time.monotonic(), rss_kib()))

    def window(self, start: float, end: float) -> dict[str, Any]:
        lags = [lag for t, lag in self.lags if start <= t <= end]
        rss = [kib for t, kib in self.rss if start <= t <= end]
        full = [d for t, g, d in self.gc_pauses if start <= t <= end and g == 2]
        return {
            "gc_full_collections": {"count": len(full), "seconds": sum(full), "max": max(full, default=0.0)},
            "loop_lag": summary(lags),
            "rss_peak_mib": max(rss) / 1024 if rss else None,
            "rss_mean_mib": sum(rss) / len(rss) / 1024 if rss else None,
        }


class WriteCounter:
    """Counts the SQL statements that write (INSERT/UPDATE/DELETE/REPLACE) on the bot's connection.

    Statements, not rows: a trace callback on aiosqlite's connection sees each statement sqlite runs.
    The bench's own queries on that connection are all SELECTs, so they never count."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

    def __init__(self) -> None:
        self.writes = 0
        self.poll_count_writes = 0

    def __call__(self, sql: str) -> None:  # runs on aiosqlite's worker thread; ints under the GIL
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head in self.WRITES:
            self.writes += 1
            if "poll_count" in sql:
                self.poll_count_writes += 1

    def mark(self) -> tuple[int, int]:
        return self.writes, self.poll_count_writes


@dataclass
class Context:
    control: str
    http: aiohttp.ClientSession
    bot: AnimateBot | None
    settings: Settings
    monitor: LoopMonitor
    scale: float
    params: dict[str, Any]
    out: dict[str, Any] = field(default_factory=dict)
    naive: NaiveBot | None = None
    writes: WriteCounter = field(default_factory=WriteCounter)

    @property
    def real(self) -> AnimateBot:
        if self.bot is None:
            raise RuntimeError("this scenario needs the real bot")
        return self.bot

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.control + path, json=body) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def states(self) -> dict[str, int]:
        if self.naive is not None:
            return self.naive.states()
        rows = await self.real.db.fetchall("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {str(r["state"]): int(r["n"]) for r in rows}

    async def slash(self, users: list[str], **extra: Any) -> list[str]:
        return list((await self.call("POST", "/slash", {"users": users, **extra}))["ids"])

    async def answers(self, ids: list[str], timeout: float) -> list[dict[str, Any]]:
        """Wait until every interaction was answered (or refused), then return what the fake saw."""
        deadline = time.monotonic() + timeout
        # Only the unanswered ones are asked about again: this runs in the bot's process, and asking
        # for all 10,000 every 0.25 s meant decoding megabytes of JSON on the bot's loop (its CPU, its
        # loop lag and its acks, measured as the bot's). One full read at the end returns them all.
        pending = list(ids)
        while pending and time.monotonic() <= deadline:
            got: list[dict[str, Any]] = (await self.call("POST", "/interactions", {"ids": pending}))[
                "interactions"
            ]
            pending = [i["id"] for i in got if not (i.get("reply") or i.get("rejected"))]
            if pending:
                await asyncio.sleep(0.25)
        return list((await self.call("POST", "/interactions", {"ids": ids}))["interactions"])

    async def until_finished(self, expected: int, timeout: float) -> dict[str, Any]:
        """Wait until `expected` jobs reached a final state; tracks the peak number in flight."""
        deadline = time.monotonic() + timeout
        peak = 0
        while True:
            states = await self.states()
            peak = max(peak, sum(states.get(s, 0) for s in ACTIVE_STATES))
            finished = sum(states.get(s, 0) for s in FINAL_STATES)
            if finished >= expected or time.monotonic() > deadline:
                return {"states": states, "peak_in_flight": peak, "timed_out": finished < expected}
            await asyncio.sleep(0.5)

    async def job_rows(self) -> list[dict[str, Any]]:
        if self.naive is not None:
            return self.naive.job_rows()
        rows = await self.real.db.fetchall(
            "SELECT id, request_id, thread_id, status_message_id, channel_id, state FROM jobs ORDER BY id"
        )
        return [
            {
                "job_id": int(r["id"]),
                "request_id": r["request_id"],
                "thread_id": r["thread_id"],
                "status_message_id": r["status_message_id"],
                "channel_id": r["channel_id"],
                "state": r["state"],
            }
            for r in rows
        ]

    async def report(self, since: dict[str, int]) -> dict[str, Any]:
        jobs = await self.job_rows()
        rep: dict[str, Any] = await self.call("POST", "/report", {"since": since, "jobs": jobs})
        states = {j["job_id"]: j["state"] for j in jobs}
        for row in rep["jobs"]:
            row["state"] = states.get(row["job_id"])
        return rep


def interaction_metrics(got: list[dict[str, Any]]) -> dict[str, Any]:
    acks = [float(i["ack_latency"]) for i in got if i.get("ack_latency") is not None]
    answers = [float(i["answer_latency"]) for i in got if i.get("answer_latency") is not None]
    return {
        "commands": len(got),
        "acked": sum(1 for i in got if i.get("acked")),
        "rejected_acks": sum(int(i.get("rejected") or 0) for i in got),
        "ack_latency": summary(acks),
        "answer_latency": summary(answers),
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> dict[str, list[float]]:
    """Per thread of this process: [user s, system s, minor faults] (Linux; {} elsewhere)."""
    out: dict[str, list[float]] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as fh:
                raw = fh.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        f = raw[raw.rindex(")") + 2 :].split()
        out[f"{name}:{tid}"] = [int(f[11]) / tick, int(f[12]) / tick, float(f[7])]
    return out


def cpu_split(before: Any, after: Any, threads0: dict[str, list[float]]) -> dict[str, Any]:
    """User vs system CPU and page faults over the window, and the busiest threads' share."""
    threads = thread_cpu()
    per = {
        k: [round(v[i] - threads0.get(k, [0.0, 0.0, 0.0])[i], 3) for i in range(3)]
        for k, v in threads.items()
    }
    busy = sorted(per.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:8]
    return {
        "user_seconds": after.ru_utime - before.ru_utime,
        "system_seconds": after.ru_stime - before.ru_stime,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "threads": dict(busy),
    }


async def measured(ctx: Context, body: Callable[[], Awaitable[None]]) -> None:
    start = time.monotonic()
    usage0, threads0 = resource.getrusage(resource.RUSAGE_SELF), thread_cpu()
    await body()
    end, usage1 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    ctx.out["wall_seconds"] = end - start
    ctx.out["bot_cpu_seconds"] = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    ctx.out["cpu_split"] = cpu_split(usage0, usage1, threads0)
    ctx.out.update(ctx.monitor.window(start, end))


# ---------------------------------------------------------------------------------------------- scenarios


async def scenario_ack(ctx: Context) -> None:
    """N /animate commands from N users dispatched back to back; time to ack and to answer each."""
    n = int(ctx.params.get("commands", 100))
    users = (await ctx.call("POST", "/users", {"count": n, "prefix": "ack"}))["names"]
    await ctx.call("POST", "/configure", {"default": {"queue_seconds": 1.0, "run_seconds": 2.0}})
    since = await ctx.call("GET", "/mark")

    async def body() -> None:
        ids = await ctx.slash(users)
        ctx.out.update(interaction_metrics(await ctx.answers(ids, timeout=60)))
        ctx.out.update(await ctx.until_finished(n, timeout=90))

    await measured(ctx, body)
    rep = await ctx.report(since)
    ctx.out["delivered"] = sum(1 for j in rep["jobs"] if j["state"] == "delivered")
    ctx.out["discord"] = discord_summary(rep, n)


def spread(center: float, width: float, count: int) -> list[float]:
    """`count` durations evenly spread over [center - width/2, center + width/2)."""
    if count <= 1 or width <= 0:
        return [center] * count
    return [center - width / 2 + width * i / count for i in range(count)]


async def scenario_jobs(ctx: Context) -> None:
    """Short (60 s) and long (5 min) jobs side by side: status calls, delivery lag, Discord calls."""
    s = ctx.scale
    classes = {
        "60s": (int(ctx.params.get("short", 20)), 60.0, 10.0),
        "5min": (int(ctx.params.get("long", 10)), 300.0, 30.0),
    }
    jitter = float(ctx.params.get("jitter", 10.0))
    scripts = []
    for count, seconds, queued in classes.values():
        for total in spread(seconds, jitter, count):
            scripts.append({"queue_seconds": queued * s, "run_seconds": (total - queued) * s})
    n = len(scripts)
    users = (await ctx.call("POST", "/users", {"count": n, "prefix": "job"}))["names"]
    await ctx.call("POST", "/configure", {"scripts": scripts})
    since = await ctx.call("GET", "/mark")

    async def body() -> None:
        ids = await ctx.slash(users)
        ctx.out.update(interaction_metrics(await ctx.answers(ids, timeout=60)))
        ctx.out.update(await ctx.until_finished(n, timeout=300 * s + 120))

    await measured(ctx, body)
    rep = await ctx.report(since)
    ctx.out["delivered"] = sum(1 for j in rep["jobs"] if j["state"] == "delivered")
    ctx.out["discord"] = discord_summary(rep, n)
    per_class: dict[str, Any] = {}
    for name, (_, seconds, _) in classes.items():
        rows = [j for j in rep["jobs"] if j.get("known") and abs(j["duration"] - seconds * s) <= jitter * s]
        lags = [j["delivery_lag"] / s for j in rows if j.get("delivery_lag") is not None]
        per_class[name] = {
            "jobs": len(rows),
            "delivered": sum(1 for j in rows if j["state"] == "delivered"),
            "delivery_lag": summary(lags),  # in unscaled seconds
            "status_calls": summary([j["status_calls"] for j in rows]),
            "result_calls": summary([j["result_calls"] for j in rows]),
            "status_edits": summary([j["status_edits"] for j in rows]),
        }
    ctx.out["classes"] = per_class


async def scenario_load(ctx: Context) -> None:
    """1,000 jobs in flight at once through real /animate commands: memory, loop lag, all delivered."""
    s = ctx.scale
    n = int(ctx.params.get("jobs", 1000))
    batch = int(ctx.params.get("batch", 50))
    pause = float(ctx.params.get("batch_interval", 1.0))
    duration = float(ctx.params.get("duration", 90.0)) * s
    users = (await ctx.call("POST", "/users", {"count": max(1, n // 10), "prefix": "load"}))["names"]
    await ctx.call(
        "POST", "/configure", {"default": {"queue_seconds": 10.0 * s, "run_seconds": duration - 10.0 * s}}
    )
    ctx.out["rss_before_mib"] = rss_kib() / 1024
    since = await ctx.call("GET", "/mark")

    async def body() -> None:
        ids: list[str] = []
        started = time.monotonic()
        for i in range(0, n, batch):
            wanted = [users[(i + k) % len(users)] for k in range(min(batch, n - i))]
            ids += await ctx.slash(wanted)
            await asyncio.sleep(max(0.0, started + pause * (i // batch + 1) - time.monotonic()))
        ctx.out["submit_seconds"] = time.monotonic() - started
        finished = asyncio.create_task(ctx.until_finished(n, timeout=duration + 240))
        ctx.out.update(interaction_metrics(await ctx.answers(ids, timeout=120)))
        ctx.out.update(await finished)

    await measured(ctx, body)
    ctx.out["rss_hwm_mib"] = rss_kib("VmHWM") / 1024
    rep = await ctx.report(since)
    ctx.out["delivered"] = sum(1 for j in rep["jobs"] if j["state"] == "delivered")
    ctx.out["jobs"] = n
    ctx.out["discord"] = discord_summary(rep, n)
    ctx.out["status_calls"] = summary([j["status_calls"] for j in rep["jobs"] if j.get("known")])
    lags = [j["delivery_lag"] / s for j in rep["jobs"] if j.get("delivery_lag") is not None]
    ctx.out["delivery_lag"] = summary(lags)


async def scenario_quota(ctx: Context) -> None:
    """N concurrent /animate commands from one user holding `quota` credits -> exactly `quota` jobs."""
    n = int(ctx.params.get("commands", 200))
    await ctx.call("POST", "/configure", {"default": {"queue_seconds": 0.5, "run_seconds": 0.5}})
    since = await ctx.call("GET", "/mark")

    async def body() -> None:
        ids = await ctx.slash(["alice"] * n)
        got = await ctx.answers(ids, timeout=60)
        ctx.out.update(interaction_metrics(got))
        ctx.out["out_of_credits_replies"] = sum(1 for i in got if "out of credits" in (i.get("reply") or ""))
        ctx.out.update(await ctx.until_finished(0, timeout=0))
        await asyncio.sleep(0)

    await measured(ctx, body)
    rows = await ctx.job_rows()
    ctx.out.update(await ctx.until_finished(len(rows), timeout=30))
    rep = await ctx.report(since)
    ctx.out["job_rows"] = len(rows)
    ctx.out["submitted"] = rep["runcomfy_endpoints"].get("submit", 0)
    ctx.out["delivered"] = sum(1 for j in rep["jobs"] if j["state"] == "delivered")
    ctx.out["quota"] = ctx.settings.daily_quota
    standing = await ctx.real.db.fetchall("SELECT * FROM jobs WHERE state NOT IN ('failed', 'cancelled')")
    ctx.out["charged_jobs"] = len(standing)


# Job-duration shapes of issue #13: (first, last) total seconds, spread evenly.
SHAPES: dict[str, tuple[float, float]] = {
    "tight": (55.0, 65.0),
    "5min": (285.0, 315.0),
    "wide": (30.0, 180.0),
}
# What each shape's members upload: photos, and screenshots with alpha in the wide shape.
SHAPE_IMAGES = {"tight": "photo", "5min": "photo", "wide": "screenshot"}
OVERSIZED_EVERY = 5  # every 5th job returns a 1080p clip over the upload limit: re-encoding is measured


def shape_scripts(shape: str, count: int, scale: float) -> list[dict[str, Any]]:
    first, last = SHAPES[shape]
    out = []
    for i, total in enumerate(spread((first + last) / 2, last - first, count)):
        queued = min(10.0, total / 6)
        out.append(
            {
                "queue_seconds": queued * scale,
                "run_seconds": (total - queued) * scale,
                "video": "clip1080" if i % OVERSIZED_EVERY == OVERSIZED_EVERY - 1 else "clip480",
            }
        )
    return out


async def submitted(ctx: Context) -> int:
    return int((await ctx.call("GET", "/mark"))["submits"])


async def run_shapes(ctx: Context, counts: dict[str, int], prefix: str) -> int:
    """Dispatch every shape's jobs, one shape after the other: the fake RunComfy hands out scripts in
    submit order, so a shape's scripts are queued only once the previous shape's jobs were submitted."""
    total = 0
    for shape, count in counts.items():
        if count <= 0:
            continue
        users = (
            await ctx.call("POST", "/users", {"count": count, "prefix": f"{prefix}{shape}-", "space": shape})
        )["names"]
        await ctx.call("POST", "/configure", {"scripts": shape_scripts(shape, count, ctx.scale)})
        before = await submitted(ctx)
        await ctx.slash(users, space=shape, image=SHAPE_IMAGES[shape])
        deadline = time.monotonic() + 120
        while True:  # another process' state: polled over the control API
            if await submitted(ctx) >= before + count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        total += count
    return total


async def scenario_shapes(ctx: Context) -> None:
    """Issue #13's duration shapes side by side (one guild each, so history never mixes), Discord rate
    limits on. Warm: first a warm-up of `warmup` jobs per shape, all finished, then the measured jobs."""
    s = ctx.scale
    counts = {shape: int(ctx.params.get(shape, 10)) for shape in SHAPES}
    warmup = int(ctx.params.get("warmup", 0))
    await ctx.call("POST", "/configure", {"ratelimits": True})
    longest = max(SHAPES[k][1] for k, v in counts.items() if v) * s
    if warmup:
        started = time.monotonic()
        n = await run_shapes(ctx, {k: warmup for k, v in counts.items() if v}, "warm")
        await ctx.until_finished(n, timeout=longest + 180)
        ctx.out["warmup_jobs"] = n
        ctx.out["warmup_seconds"] = time.monotonic() - started
    before_rows = {j["job_id"] for j in await ctx.job_rows()}
    since = await ctx.call("GET", "/mark")
    writes = ctx.writes.mark()

    async def body() -> None:
        n = await run_shapes(ctx, counts, "shape")
        ctx.out.update(await ctx.until_finished(n + len(before_rows), timeout=longest + 240))

    await measured(ctx, body)
    rep = await ctx.report(since)
    rows = [j for j in rep["jobs"] if j["job_id"] not in before_rows]
    by_channel = {j["job_id"]: j["channel_id"] for j in await ctx.job_rows()}
    channel_shape = {int(v["channel_id"]): k for k, v in (await ctx.call("GET", "/spaces")).items()}
    n = len(rows)
    ctx.out["jobs"] = n
    ctx.out["delivered"] = sum(1 for j in rows if j["state"] == "delivered")
    ctx.out["discord"] = discord_summary(rep, n)
    ctx.out["db_writes_per_job"] = (ctx.writes.writes - writes[0]) / n if n else None
    ctx.out["db_poll_count_writes_per_job"] = (ctx.writes.poll_count_writes - writes[1]) / n if n else None
    shapes: dict[str, Any] = {}
    for shape in SHAPES:
        mine = [j for j in rows if channel_shape.get(int(by_channel.get(j["job_id"]) or 0)) == shape]
        if not mine:
            continue
        lags = [j["delivery_lag"] / s for j in mine if j.get("delivery_lag") is not None]
        known = [j for j in mine if j.get("known")]
        shapes[shape] = {
            "jobs": len(mine),
            "delivered": sum(1 for j in mine if j["state"] == "delivered"),
            "delivery_lag": summary(lags),  # unscaled seconds
            "runcomfy_calls": summary(
                [j["status_calls"] + j["result_calls"] + j["cancel_calls"] for j in known]
            ),
            "status_calls": summary([j["status_calls"] for j in known]),
            "result_calls": summary([j["result_calls"] for j in known]),
            "status_edits": summary([j["status_edits"] for j in mine]),
        }
    ctx.out["shapes"] = shapes


async def scenario_photos(ctx: Context) -> None:
    """N real photos (`image`: photo = 1600x1200, phone = 12 MP with EXIF rotation) at once, spread over
    20 channels, rate limits on, jobs of 5-35 s with 480p clips: the bot process' CPU per job and its
    peak memory."""
    n = int(ctx.params.get("commands", 100))
    image = str(ctx.params.get("image", "photo"))
    spaces = ["main", *(f"main-{i}" for i in range(1, 20))]
    users = (await ctx.call("POST", "/users", {"count": n, "prefix": f"{image}-"}))["names"]
    # Jobs end over 5-35 s, as real ones would: all 100 videos landing in the same instant would measure
    # 100 downloads at once instead of the photos.
    scripts = [
        {"queue_seconds": 1.0 * ctx.scale, "run_seconds": (total - 1.0) * ctx.scale, "video": "clip480"}
        for total in spread(20.0, 30.0, n)
    ]
    await ctx.call("POST", "/configure", {"ratelimits": True, "scripts": scripts})
    since = await ctx.call("GET", "/mark")
    writes = ctx.writes.mark()

    async def body() -> None:
        ids = await ctx.slash(users, image=image, spaces=spaces)
        ctx.out.update(interaction_metrics(await ctx.answers(ids, timeout=120)))
        ctx.out.update(await ctx.until_finished(n, timeout=300))

    await measured(ctx, body)
    ctx.out["rss_hwm_mib"] = rss_kib("VmHWM") / 1024
    rep = await ctx.report(since)
    ctx.out["jobs"] = n
    ctx.out["delivered"] = sum(1 for j in rep["jobs"] if j["state"] == "delivered")
    ctx.out["cpu_per_job"] = ctx.out["bot_cpu_seconds"] / n
    ctx.out["discord"] = discord_summary(rep, n)
    ctx.out["db_writes_per_job"] = (ctx.writes.writes - writes[0]) / n


async def phase(name: str) -> None:
    """Tell bench.run this process reached `name` (a JSON line on stdout) and wait for its go-ahead
    (a line on stdin): the fleet's three processes start driving together, and the database's
    statistics are read between the phases, without the bench's own report queries."""
    print(json.dumps({"phase": name}), flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)  # a thread: the loop keeps serving the bot
    if not line:
        raise SystemExit(f"bench.run went away at phase {name}")


# The fleet's drivers stop waiting for videos after this long (scaled; at least the minimum) without
# a request to either fake: no job is left in flight.
FLEET_QUIET = 120.0
FLEET_QUIET_MIN = 10.0


def on_shard(guild_id: int, shard_id: int, shard_count: int) -> bool:
    return (guild_id >> 22) % shard_count == shard_id  # Discord's rule (tests.fakes.discord.shard_of)


async def scenario_fleet(ctx: Context) -> None:
    """One of the fleet's processes (SHARD_IDS=i of SHARD_COUNT, one PostgreSQL for all): `jobs` is the
    fleet's total; this process drives the share aimed at its own shard's guilds, in batches, and waits
    until the fake Discord accepted a video for each. Completion is read from the fake, not from the
    shared database, so the database's load is the bots' alone."""
    s, bot = ctx.scale, ctx.real
    count, mine_id = bot.settings.shard_count or 1, (bot.settings.shard_ids or (0,))[0]
    total = int(ctx.params.get("jobs", 10000))
    spaces = await ctx.call("GET", "/spaces")
    fleet = sorted((k for k in spaces if k.startswith("fleet-")), key=lambda k: int(k.split("-")[1]))
    mine = [k for k in fleet if on_shard(int(spaces[k]["guild_id"]), mine_id, count)]
    if not mine:
        raise SystemExit(f"no fleet guild on shard {mine_id}")
    # Command i of the fleet goes to fleet guild i % guilds: this process takes those on its shard.
    targets = [fleet[i % len(fleet)] for i in range(total)]
    targets = [k for k in targets if k in mine]
    n = len(targets)
    my_guilds = [int(spaces[k]["guild_id"]) for k in mine]
    # A member sends at most `per_user` commands (the daily quota stays far away).
    per_user = int(ctx.params.get("per_user", 20))
    users: dict[str, list[str]] = {}
    for k in mine:
        share = targets.count(k)
        users[k] = (
            await ctx.call(
                "POST", "/users", {"count": max(1, -(-share // per_user)), "prefix": f"{k}-u", "space": k}
            )
        )["names"]
    duration = float(ctx.params.get("duration", 10.0)) * s
    queued = min(2.0 * s, duration / 4)
    await ctx.call(
        "POST", "/configure", {"default": {"queue_seconds": queued, "run_seconds": duration - queued}}
    )
    batch = int(ctx.params.get("batch", 34))
    pause = float(ctx.params.get("batch_interval", 1.0))
    since = await ctx.call("GET", "/mark")
    await phase("ready")

    async def posted() -> tuple[int, float]:
        got = await ctx.call("POST", "/videos", {"guilds": my_guilds})
        return int(got["posted"]), float(got["quiet_seconds"])

    async def body() -> None:
        ids: list[str] = []
        started = time.monotonic()
        seen: dict[str, int] = {}
        for i in range(0, n, batch):
            chunk = targets[i : i + batch]
            by_space: dict[str, list[str]] = {}
            for k in chunk:
                seen[k] = seen.get(k, -1) + 1
                by_space.setdefault(k, []).append(users[k][seen[k] % len(users[k])])
            for k, who in by_space.items():
                ids += await ctx.slash(who, space=k)
            await asyncio.sleep(max(0.0, started + pause * (i // batch + 1) - time.monotonic()))
        ctx.out["submit_seconds"] = time.monotonic() - started
        ctx.out.update(interaction_metrics(await ctx.answers(ids, timeout=300)))
        deadline = time.monotonic() + float(ctx.params.get("timeout", 3600))
        # A job that ended without a video (failed, refunded) never posts one, so "all n posted" alone
        # would wait out the deadline: once neither fake has seen a request for `quiet` seconds (the
        # bot polls, edits or works through its REST queue every few seconds while a job is left),
        # nothing is in flight any more and the shortfall is the result.
        quiet = max(FLEET_QUIET_MIN, FLEET_QUIET * s)
        got, last_video = 0, time.monotonic()
        while True:  # another process' state: polled over the control API
            now_got, silent = await posted()
            if now_got > got:
                got, last_video = now_got, time.monotonic()
            if got >= n or silent >= quiet or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        ctx.out["timed_out"] = got < n and silent < quiet
        ctx.out["ended_quiet"] = got < n and silent >= quiet
        ctx.out["videos_posted"] = got
        ctx.out["drive_seconds"] = last_video - started

    await measured(ctx, body)
    ctx.out["rss_hwm_mib"] = rss_kib("VmHWM") / 1024
    await phase("driven")
    rows = await bot.db.fetchall(
        "SELECT id, request_id, thread_id, status_message_id, channel_id, state FROM jobs WHERE guild_id IN ("
        + ", ".join("?" for _ in my_guilds)
        + ") ORDER BY id",
        my_guilds,
    )
    jobs = [
        {
            "job_id": int(r["id"]),
            "request_id": r["request_id"],
            "thread_id": r["thread_id"],
            "status_message_id": r["status_message_id"],
            "channel_id": r["channel_id"],
            "state": r["state"],
        }
        for r in rows
    ]
    rep = await ctx.call("POST", "/report", {"since": since, "jobs": jobs})
    posts = [int(j["video_posts"]) for j in rep["jobs"]]
    ctx.out.update(
        {
            "shard": mine_id,
            "shard_count": count,
            "guilds": len(mine),
            "jobs": n,
            "job_rows": len(jobs),
            "delivered": sum(1 for j in jobs if j["state"] == "delivered"),
            "states": dict(sorted(Counter(str(j["state"]) for j in jobs).items())),
            "delivered_once": sum(1 for p in posts if p == 1),
            "duplicate_posts": sum(p - 1 for p in posts if p > 1),
            "cpu_per_job": ctx.out["bot_cpu_seconds"] / n,
            "process_cpu_seconds": cpu_seconds(),  # start-up and connecting included
            "rest_rate": bot.settings.discord_rest_rate,
            # Read after every process finished driving (bench.run waits for all before "report"), so
            # the calls since this process' mark are the whole fleet's: per job of the fleet.
            "fleet_discord": discord_summary(rep, total),
        }
    )


UNPACED = frozenset({"flood"})
UNLIMITED_REST = 100_000


async def scenario_flood(ctx: Context) -> None:
    """10,000 jobs in flight in one process (flat image, no rate limits: they would make it take hours):
    every job delivered, ack p99, event-loop lag p99, memory."""
    await scenario_load(ctx)


def discord_summary(rep: dict[str, Any], jobs: int) -> dict[str, Any]:
    kinds: dict[str, int] = rep["discord_kinds"]
    return {
        "calls": rep["discord_calls"],
        "per_job": rep["discord_calls"] / jobs if jobs else None,
        "by_kind_per_job": {k: v / jobs for k, v in sorted(kinds.items())} if jobs else {},
        "failures": rep["discord_failures"],
        "unknown_routes": rep["unknown_routes"],
        "runcomfy_per_job": {k: v / jobs for k, v in sorted(rep["runcomfy_endpoints"].items())}
        if jobs
        else {},
        "rate_limited": rep.get("rejected", {}),
        "rate_limited_per_job": sum(rep.get("rejected", {}).values()) / jobs if jobs else None,
        "fakes_gc_full_collections": rep.get("fakes_gc_full_collections"),
    }


SCENARIOS: dict[str, tuple[Callable[[Context], Awaitable[None]], int]] = {
    # name: (driver, daily_quota for the bot)
    "ack": (scenario_ack, 1000),
    "jobs": (scenario_jobs, 1000),
    "load": (scenario_load, 1000),
    "quota": (scenario_quota, 5),
    "shapes": (scenario_shapes, 1000),
    "photos": (scenario_photos, 1000),
    "flood": (scenario_flood, 1000),
    "fleet": (scenario_fleet, 1000),
}
NAIVE_SCENARIOS = ("shapes", "photos")


def start_profile() -> Any:
    """Opt-in: with BENCH_PROFILE=path the scenario's driving runs under cProfile (the event loop's
    thread only), dumped to path (pstats format) when it ends. Off by default: it slows the bot."""
    if not os.environ.get("BENCH_PROFILE"):
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def stop_profile(profiler: Any, naive: bool = False) -> None:
    if profiler is not None:
        profiler.disable()
        # The naive run follows the bot's in the same bench run: its own file, or it would overwrite.
        profiler.dump_stats(os.environ["BENCH_PROFILE"] + ("-naive" if naive else ""))


def point_discord_at(info: dict[str, Any]) -> None:
    """What tests.fakes.discord.patched_discord does, from URLs only (the fake lives elsewhere)."""
    discord.http.Route.BASE = info["api_base"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(info["gateway_url"])
    discord.asset.Asset.BASE = info["discord_url"]


async def run(
    scenario: str,
    control: str,
    scale: float,
    params: dict[str, Any],
    workdir: Path,
    naive: bool = False,
    fleet: dict[str, Any] | None = None,
) -> dict[str, Any]:
    driver, quota = SCENARIOS[scenario]
    if naive and scenario not in NAIVE_SCENARIOS:
        raise SystemExit(f"the naive bot runs only {', '.join(NAIVE_SCENARIOS)}")
    async with aiohttp.ClientSession() as http:
        async with http.get(control + "/info") as resp:
            info = await resp.json()
        point_discord_at(info)
        overrides: dict[str, Any] = {name: default_of(name) * scale for name in SCALED_SETTINGS}
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            discord_token=info["discord_token"],
            runcomfy_api_token=info["runcomfy_token"],
            runcomfy_base_url=info["runcomfy_base_url"],
            database_path=workdir / "bench.db",
            daily_quota=int(params.get("quota", quota)),
            **overrides,
            **(fleet or {}),
            # Capacity runs turn the fake's rate limits off; the bot's own share of Discord's global
            # limit goes with them, or it (not the engine) would be what the run measures.
            **({"discord_rest_rate": UNLIMITED_REST} if scenario in UNPACED else {}),
        )
        monitor = LoopMonitor()
        monitor.start()
        client: discord.Client
        if naive:
            client = NaiveBot(
                runcomfy_base_url=info["runcomfy_base_url"],
                runcomfy_token=info["runcomfy_token"],
                poll_interval=max(0.01, scale),  # every second, in bench time
            )
        else:
            client = AnimateBot(settings, guild_ready_timeout=0.05)
        await client.login(info["discord_token"])
        if not naive:
            tune_gc()  # as `python -m bot` does once the bot is built and its storage open
        task = asyncio.create_task(client.connect(reconnect=False))
        await asyncio.wait_for(client.wait_until_ready(), 30)
        ctx = Context(
            control,
            http,
            client if isinstance(client, AnimateBot) else None,
            settings,
            monitor,
            scale,
            params,
            naive=client if isinstance(client, NaiveBot) else None,
        )
        conn = getattr(ctx.bot.db, "_conn", None) if ctx.bot is not None else None
        if conn is not None:  # SQLite (aiosqlite); on PostgreSQL the fleet reads pg_stat_database
            await conn.set_trace_callback(ctx.writes)
        ctx.out["rss_idle_mib"] = rss_kib() / 1024
        profiler, meter = start_profile(), start_taskcpu()
        try:
            await driver(ctx)
        finally:
            stop_taskcpu(meter, naive)
            stop_profile(profiler, naive)
            await client.close()
            await asyncio.gather(task, return_exceptions=True)
            await monitor.stop()
        ctx.out["settings"] = {
            "poll_first_delay": settings.poll_first_delay,
            "poll_max_interval": settings.poll_max_interval,
            "poll_backoff_ratio": settings.poll_backoff_ratio,
            "status_edit_interval": settings.status_edit_interval,
            "daily_quota": settings.daily_quota,
        }
        ctx.out["bot"] = "naive" if naive else "bot"
        return {"scenario": scenario, "scale": scale, "params": params, "metrics": ctx.out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one benchmark scenario in this (the bot's) process.")
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--control", required=True, help="the fakes' control URL")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--params", default="{}", help="scenario parameters as JSON")
    parser.add_argument("--log-file", default=None)
    parser.add_argument("--naive", action="store_true", help="run the naive reference bot instead")
    parser.add_argument("--log-level", default="INFO")
    # The fleet: this process' shard, the shared database and its share of the REST limit.
    parser.add_argument("--shard-count", type=int)
    parser.add_argument("--shard-id", type=int)
    parser.add_argument("--database-url")
    parser.add_argument("--rest-rate", type=int)
    args = parser.parse_args(argv)
    fleet: dict[str, Any] = {}
    if args.shard_count is not None:
        fleet.update(shard_count=args.shard_count, shard_ids=str(args.shard_id or 0))
    if args.database_url:
        fleet["database_url"] = args.database_url
    if args.rest_rate is not None:
        fleet["discord_rest_rate"] = args.rest_rate
    logging.basicConfig(
        level=args.log_level,
        filename=args.log_file,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(args.log_level)))
    with tempfile.TemporaryDirectory(prefix="animate-bench-") as tmp:
        result = asyncio.run(
            run(
                args.scenario, args.control, args.scale, json.loads(args.params), Path(tmp), args.naive, fleet
            )
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
