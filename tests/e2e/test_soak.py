"""Soak: 200 jobs through the fakes, in a mix of RunComfy's dialects, with random faults at RunComfy
and Discord. At the end every job is finished, every delivered video was posted exactly once, and the
ledger balances to the credit."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import zlib
from collections import Counter

from tests.e2e.conftest import Harness, jpeg_bytes
from tests.fakes.runcomfy import DIALECTS, JobScript

JOBS = 200
BATCH = 25


async def inject_faults(h: Harness, rng: random.Random, stop: asyncio.Event) -> Counter[str]:
    injected: Counter[str] = Counter()
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.25:
            h.runcomfy.fail_next("status", rng.choice([500, 503]), times=rng.randint(1, 3))
            injected["status-5xx"] += 1
        elif roll < 0.35:
            h.runcomfy.fail_next("status", 429, retry_after=rng.choice([None, "0.05"]))
            injected["status-429"] += 1
        elif roll < 0.45:
            h.runcomfy.fail_next("status", 200, raw=b'{"status": "in_pro')
            injected["status-malformed"] += 1
        elif roll < 0.55:
            h.runcomfy.fail_next("result", 503)
            injected["result-503"] += 1
        elif roll < 0.60:
            h.runcomfy.fail_next("submit", 503)
            injected["submit-503"] += 1
        elif roll < 0.70:
            h.discord.fail_next("PATCH", r"/channels/\d+/messages/\d+$", 429, retry_after=0.05)
            injected["discord-edit-429"] += 1
        elif roll < 0.78:
            # Discord stores the next post (a status message, a video, a notice), then answers 503.
            h.discord.fail_after_store("POST", r"/channels/\d+/messages$", 503)
            injected["discord-post-stored-503"] += 1
        elif roll < 0.82:
            h.discord.fail_after_store("POST", r"/channels/\d+/messages$", "drop")
            injected["discord-post-stored-drop"] += 1
        elif roll < 0.90:
            # A moderator archives and locks a job's thread: its video goes to the channel.
            row = await h.running.db.fetchone(
                "SELECT thread_id FROM jobs WHERE thread_id IS NOT NULL AND state IN ('queued', 'running') "
                "ORDER BY RANDOM() LIMIT 1"
            )
            if row is not None:
                await h.discord.set_thread_state(row["thread_id"], archived=True, locked=True)
                injected["thread-locked"] += 1
        await asyncio.sleep(0.02)
    return injected


async def test_soak_200_jobs_with_random_faults(harness: Harness) -> None:
    h = harness
    rng = random.Random(20261130)
    users = ["alice", "bob", "mod", "admin", "owner"]
    for i in range(5):
        name = f"user{i}"
        h.discord.add_user(name)
        h.discord.add_member(name)
        users.append(name)
    outcomes = ["ok"] * 14 + ["failed", "video-404", "unknown-status", "slow-queue"]
    for _ in range(JOBS):
        kind = rng.choice(outcomes)
        h.runcomfy.scripts.append(
            JobScript(
                queue_seconds=1.5 if kind == "slow-queue" else rng.uniform(0, 0.3),
                run_seconds=rng.uniform(0, 0.3),
                outcome="failed" if kind == "failed" else "succeeded",
                error={"reason": "soak"} if kind == "failed" else None,
                video_status=404 if kind == "video-404" else 200,
                unknown_status="starting" if kind == "unknown-status" else None,
                # RunComfy's words are not settled: each job speaks one of the dialects the sources show.
                dialect=rng.choice(DIALECTS),
            )
        )
    h.runcomfy.video_bytes = b"\x00\x00\x00\x18ftypmp42soak"
    # A third of the outputs come as long signed URLs (1,950 characters): when the download fails,
    # the link must still reach the requester within Discord's 2,000-character limit.
    plain_url = h.runcomfy.output_url

    def output_url(request_id: str) -> str:
        if zlib.crc32(request_id.encode()) % 3:
            return plain_url(request_id)
        base = plain_url(request_id) + "?Signature="
        return base + "x" * (1950 - len(base))

    h.runcomfy.output_url = output_url  # type: ignore[method-assign]
    await h.start_bot(daily_quota=10_000, status_edit_interval=0.2)
    image = jpeg_bytes(400, 400)

    stop = asyncio.Event()
    faults = asyncio.create_task(inject_faults(h, rng, stop))
    interactions = []
    for start in range(0, JOBS, BATCH):
        batch = [
            h.animate(f"soak {n}", user=users[n % len(users)], image=h.image(image))
            for n in range(start, start + BATCH)
        ]
        interactions += await asyncio.gather(*batch)
        # Cancel a few jobs that are still queued, as their requesters would.
        rows = await h.running.db.fetchall(
            "SELECT id, user_id, status_message_id FROM jobs WHERE state = 'queued' ORDER BY RANDOM() LIMIT 2"
        )
        for row in rows:
            user = next(u for u in users if h.discord.user_ids[u] == row["user_id"])
            with contextlib.suppress(ValueError):  # it started meanwhile: the button is disabled
                await h.discord.click(row["status_message_id"], f"animate:cancel:{row['id']}", user=user)
        await asyncio.sleep(0.2)
    for inter in interactions:
        await h.reply(inter, timeout=60)
    stop.set()
    injected = await faults

    async def all_finished() -> bool:
        row = await h.running.db.fetchone(
            "SELECT COUNT(*) AS n FROM jobs WHERE state NOT IN ('delivered', 'failed', 'cancelled')"
        )
        return row is not None and row["n"] == 0

    await h.discord.wait_for(all_finished, timeout=90)

    jobs = await h.running.db.fetchall("SELECT id, state, request_id, cost FROM jobs ORDER BY id")
    assert len(jobs) == JOBS
    states = Counter(r["state"] for r in jobs)
    assert states["delivered"] > JOBS // 2, states

    # Every delivered job was posted exactly once; nothing else carries a job marker twice.
    posted: Counter[int] = Counter()
    for channel_id in [h.discord.channel_id, *h.discord.threads]:
        for message in h.discord.messages(channel_id):
            for match in re.finditer(r"\bjob #(\d+)\b", message["content"] or ""):
                posted[int(match.group(1))] += 1
    for row in jobs:
        expected = 1 if row["state"] == "delivered" else 0
        assert posted[row["id"]] == expected, (row["id"], row["state"], posted[row["id"]])
    # One status message per job, none orphaned by a lost answer, and no message over the limits.
    statuses: Counter[str] = Counter()
    for channel_id in [h.discord.channel_id, *h.discord.threads]:
        for message in h.discord.messages(channel_id):
            assert len(message["content"] or "") <= 2000
            for embed in message["embeds"]:
                statuses[(embed.get("footer") or {}).get("text", "").split(" ·")[0]] += 1
    assert all(statuses[f"Job #{row['id']}"] == 1 for row in jobs), statuses
    long_links = [r for r in await h.running.db.fetchall("SELECT result_url FROM jobs") if r["result_url"]]
    assert any(len(r["result_url"]) == 1950 for r in long_links)

    # The ledger: one charge per job, a refund exactly for the failed and cancelled ones.
    ledger = await h.running.db.fetchall(
        "SELECT job_id, kind, COUNT(*) AS n, SUM(credits) AS credits FROM quota_ledger GROUP BY job_id, kind"
    )
    by_job: dict[int, dict[str, tuple[int, int]]] = {}
    for entry in ledger:
        by_job.setdefault(entry["job_id"], {})[entry["kind"]] = (entry["n"], entry["credits"])
    for row in jobs:
        entries = by_job[row["id"]]
        assert entries["charge"] == (1, row["cost"])
        if row["state"] == "delivered":
            assert "refund" not in entries, row["id"]
        else:
            assert entries["refund"] == (1, -row["cost"]), row["id"]

    # Submits: one per job that RunComfy accepted, plus the injected 503s -- never a resubmission.
    accepted = sum(1 for r in jobs if r["request_id"])
    assert len(h.runcomfy.jobs) == accepted
    assert len(h.runcomfy.requests_to("submit")) <= accepted + injected["submit-503"]
    assert sum(injected.values()) > 50
    assert injected["discord-post-stored-503"] > 0, injected
    spoken = Counter(job.script.dialect for job in h.runcomfy.jobs.values())
    assert set(spoken) == set(DIALECTS), spoken
    print(f"soak: {dict(states)}; dialects: {dict(spoken)}; faults injected: {dict(injected)}")
