"""Concurrent decodes are bounded by their pixels (bot.admission.PixelBudget, bot.media.decode_cost)."""

from __future__ import annotations

import asyncio

from bot.admission import DECODE_PIXEL_BUDGET, PixelBudget
from bot.media import decode_cost
from tests.bot.test_media import _jpeg, _photo, _save


async def test_holds_wait_until_their_pixels_fit() -> None:
    budget = PixelBudget(16)
    inside: set[str] = set()
    peak: list[int] = []
    release = {name: asyncio.Event() for name in ("a", "b", "c", "huge")}

    async def decode(name: str, pixels: int) -> None:
        async with budget.hold(pixels):
            inside.add(name)
            peak.append(sum(1 for _ in inside))
            await release[name].wait()
            inside.discard(name)

    tasks = [asyncio.create_task(decode(n, p)) for n, p in (("a", 8), ("b", 8), ("c", 8), ("huge", 40))]
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == {"a", "b"} and budget.free == 0  # the third 8 does not fit beside them
    release["a"].set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == {"b", "c"}
    release["b"].set()
    release["c"].set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == {"huge"} and budget.free == 0  # larger than the budget: runs alone
    release["huge"].set()
    await asyncio.gather(*tasks)
    assert budget.free == 16 and max(peak) == 2


def test_decode_cost_from_the_header() -> None:
    assert decode_cost(_jpeg((1600, 1200))) == 1600 * 1200
    assert decode_cost(_save(_photo((800, 600)), "PNG")) == 800 * 600
    # A 12 MP JPEG is decoded at half scale (draft), and counted so: five fit in the budget.
    assert decode_cost(_jpeg((4032, 3024))) == 2016 * 1512 < DECODE_PIXEL_BUDGET // 5
    assert decode_cost(_jpeg((8000, 8000))) == 2000 * 2000  # 1/4 scale
    assert decode_cost(b"not an image") == 1
