"""The whole table of awkward images from tests/bot/test_media.py, sent through /animate.

Accepted images must be submitted and pass the fake RunComfy's own validation of the hosted image;
refused ones must get the table's message, with no job, no charge and no submit.
"""

from __future__ import annotations

import time

from tests.bot.test_media import CASES, Refuse
from tests.e2e.conftest import Harness
from tests.fakes.runcomfy import JobScript

CONTENT_TYPES = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png", b"GI": "image/gif", b"BM": "image/bmp"}


async def test_every_awkward_image_is_fixed_or_clearly_refused(harness: Harness) -> None:
    h = harness
    h.runcomfy.default_script = JobScript(queue_seconds=0, run_seconds=0)
    await h.start_bot(daily_quota=1000)
    started = time.monotonic()
    for name, make, expected in CASES:
        data = make()
        content_type = CONTENT_TYPES.get(data[:2], "image/webp" if b"WEBP" in data[:16] else "image/png")
        submits = len(h.runcomfy.requests_to("submit"))
        inter = await h.animate(f"case {name}", image=h.image(data, f"{name}.img", content_type))
        text = await h.reply(inter, timeout=30)
        if isinstance(expected, Refuse):
            for fragment in expected.fragments:
                assert fragment in text, (name, text)
            assert len(h.runcomfy.requests_to("submit")) == submits, name
            row = await h.running.db.fetchone(
                "SELECT COUNT(*) AS n FROM jobs WHERE prompt = ?", (f"case {name}",)
            )
            assert row is not None and row["n"] == 0, name
        else:
            assert "on its way" in text, (name, text)
            assert len(h.runcomfy.requests_to("submit")) == submits + 1, name
    # Every submitted job passed the fake RunComfy's image validation (a 422 would have failed it).
    failed = await h.running.db.fetchall("SELECT prompt, error FROM jobs WHERE state = 'failed'")
    assert failed == [], [tuple(r) for r in failed]
    assert time.monotonic() - started < 60
