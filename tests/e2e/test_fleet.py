"""The fleet (issue #14): three `python -m bot` processes, one shard each, on one PostgreSQL.

Jobs are held under leases (storage migration 0008); a SIGKILLed process's jobs are taken over by the
others within 2 x LEASE_SECONDS and every video is posted exactly once, every job charged once.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from storage.db import Database, open_database
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript

LEASE = 5.0  # LEASE_SECONDS of the fleet (the smallest the bot accepts)
SHARDS = 3
# Unfinished jobs still held by an owner (a LIKE pattern).
HELD_BY = "SELECT id FROM jobs WHERE lease_owner LIKE ? AND state IN ('queued', 'running', 'delivering')"
JOB_MARK = re.compile(r"\bjob #(\d+)\b")


async def spawn_fleet(
    h: Harness, tmp_path: Path, pg_url: str, **env: str
) -> list[asyncio.subprocess.Process]:
    procs = [
        await h.spawn_bot_process(
            tmp_path,
            DATABASE_URL=pg_url,
            SHARD_COUNT=str(SHARDS),
            SHARD_IDS=str(shard),
            LEASE_SECONDS=str(LEASE),
            **env,
        )
        for shard in range(SHARDS)
    ]
    fake = h.discord
    # Generous: three interpreters start at once on a shared machine. Polled calmly, not every 5 ms.
    await fake.wait_for(
        lambda: sorted(fake.connected_shards) == list(range(SHARDS)), timeout=90, interval=0.1
    )
    await fake.wait_for(lambda: fake.find_command("animate"), timeout=60, interval=0.1)
    # Each process says when its shard is ready (after GUILD_CREATE of every guild on it).
    await fake.wait_for(
        lambda: all(re.search(r"Shard \d+ ready", log.read_text()) for log in h.process_logs[-SHARDS:]),
        timeout=60,
        interval=0.1,
    )
    return procs


def guilds_on_every_shard(h: Harness, per_shard: int, user: str) -> list[tuple[int, int, int]]:
    """(guild id, #animate channel, shard) for `per_shard` new servers on each shard, `user` in each."""
    made = []
    for shard in range(SHARDS):
        for n in range(per_shard):
            gid = h.discord.add_guild(f"Fleet {shard}.{n}", shard=(shard, SHARDS))
            cid = h.discord.add_channel("animate", guild_id=gid)
            h.discord.add_member(user, guild_id=gid)
            made.append((gid, cid, shard))
    return made


def videos_by_job(h: Harness) -> dict[int, int]:
    """How many videos (messages with an attachment and a `job #N` marker) each job got."""
    counts: dict[int, int] = {}
    for channel_id in list(h.discord.channels):
        for message in h.discord.messages(channel_id):
            match = JOB_MARK.search(str(message.get("content") or ""))
            if match and message.get("attachments"):
                job_id = int(match.group(1))
                counts[job_id] = counts.get(job_id, 0) + 1
    return counts


async def rows(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetchall(sql, params)]


async def stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), timeout=15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# Three bot processes start, connect and sync: on a loaded 2-core machine that alone can take a minute.
@pytest.mark.timeout(180)
async def test_sigkilled_process_jobs_are_taken_over_and_delivered_exactly_once(
    harness: Harness, tmp_path: Path, pg_url: str
) -> None:
    h = harness
    # Long enough to be mid-flight at the kill, short enough for a quick test.
    h.runcomfy.default_script = JobScript(queue_seconds=0.5, run_seconds=8.0)
    servers = guilds_on_every_shard(h, 2, "alice")
    procs = await spawn_fleet(h, tmp_path, pg_url, DAILY_QUOTA="20")
    db = await open_database(tmp_path / "unused.db", pg_url)
    try:
        commands = [
            h.discord.slash(
                "animate", {"image": h.image(), "prompt": f"fleet {n}"}, user="alice", channel_id=cid
            )
            for n in range(10)
            for _, cid, _ in servers
        ]
        interactions = await asyncio.gather(*commands)
        for inter in interactions:
            assert "on its way" in await h.reply(inter, timeout=30)
        jobs = await rows(db, "SELECT id, guild_id, state, lease_owner FROM jobs ORDER BY id")
        assert len(jobs) == 60

        # SIGKILL the process of shard 1 while its jobs are still with RunComfy.
        victim = procs[1]
        dead_owner = f"{socket.gethostname()}-{victim.pid}-"
        victim.kill()
        await victim.wait()
        killed_at = time.monotonic()
        held = await rows(
            db,
            HELD_BY,
            dead_owner + "%",
        )
        assert held, "the killed process held no job in flight: the test would prove nothing"
        shard_1 = {gid for gid, _, shard in servers if shard == 1}
        assert {j["guild_id"] for j in jobs if j["id"] in {r["id"] for r in held}} <= shard_1

        async def taken_over() -> bool:
            left = await rows(
                db,
                HELD_BY,
                dead_owner + "%",
            )
            return not left

        await h.discord.wait_for(taken_over, timeout=2 * LEASE, interval=0.1)
        takeover = time.monotonic() - killed_at
        assert takeover <= 2 * LEASE

        async def all_delivered() -> bool:
            states = await rows(db, "SELECT state FROM jobs")
            return all(s["state"] == "delivered" for s in states)

        await h.discord.wait_for(all_delivered, timeout=30, interval=0.2)
        # Exactly once: one video per job, anywhere in Discord.
        assert videos_by_job(h) == {j["id"]: 1 for j in jobs}
        # One charge per job, no refund; RunComfy got one submit per job.
        ledger = await rows(db, "SELECT job_id, kind, credits FROM quota_ledger ORDER BY job_id, kind")
        assert ledger == [{"job_id": j["id"], "kind": "charge", "credits": 1} for j in jobs]
        assert len(h.runcomfy.requests_to("submit")) == 60
        # Finished jobs hold no lease.
        assert await rows(db, "SELECT id FROM jobs WHERE lease_owner IS NOT NULL") == []
    finally:
        await db.close()
        await stop_all(procs)
    for n in (0, 2):
        assert "Traceback" not in h.process_logs[n].read_text()


# Three bot processes start, connect and sync: on a loaded 2-core machine that alone can take a minute.
@pytest.mark.timeout(180)
async def test_200_concurrent_commands_of_a_member_make_exactly_the_allowance_on_every_process(
    harness: Harness, tmp_path: Path, pg_url: str
) -> None:
    """bob (5 credits a server, the default) sends 200 /animate at once, spread over three servers,
    one on each process (Discord sends a server's commands to its shard's process only): exactly 5
    jobs and 5 credits per server. (That one member's quota holds when several processes charge it at
    once is tests/storage/test_backends.py's 200 reservations over several connections.)"""
    h = harness
    h.runcomfy.default_script = JobScript(queue_seconds=0.2, run_seconds=0.2)
    servers = guilds_on_every_shard(h, 1, "bob")
    procs = await spawn_fleet(h, tmp_path, pg_url)
    db = await open_database(tmp_path / "unused.db", pg_url)
    try:
        image = h.image()
        interactions = await asyncio.gather(
            *(
                h.discord.slash(
                    "animate",
                    {"image": image, "prompt": f"burst {n}"},
                    user="bob",
                    channel_id=servers[n % SHARDS][1],
                )
                for n in range(200)
            )
        )
        answers = [await h.reply(inter, timeout=60) for inter in interactions]
        assert sum("on its way" in a for a in answers) == 5 * SHARDS
        for gid, _, _ in servers:
            assert len(await rows(db, "SELECT id FROM jobs WHERE guild_id = ?", gid)) == 5
            spent = await rows(db, "SELECT SUM(credits) AS spent FROM quota_ledger WHERE guild_id = ?", gid)
            assert spent == [{"spent": 5}]
        assert len(h.runcomfy.requests_to("submit")) == 5 * SHARDS
    finally:
        await db.close()
        await stop_all(procs)
