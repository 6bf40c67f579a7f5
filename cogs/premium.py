"""Credit packs and server subscriptions sold through Discord (README "Selling credits").

Every way an entitlement reaches the bot ends in `Premium.handle`: ENTITLEMENT_CREATE/UPDATE/DELETE,
an interaction's `entitlements`, and the sweep (at start-up, then every PREMIUM_SWEEP_INTERVAL), which
lists the application's entitlements for the configured SKUs to catch what arrived while the bot was
offline and consumes granted packs whose consume failed; at start-up it also lists the deleted ones,
to take back refunds made while the bot was offline. A pack is granted once per entitlement id
(storage/premium.py), *then* consumed; a consume that fails stays pending, never a second grant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord.ext import commands

from bot import premium as packs
from bot.i18n import tr, trn
from bot.premium import from_discord, from_payload
from storage.premium import Entitlement, Record

if TYPE_CHECKING:
    from bot.client import AnimateBot

log = logging.getLogger(__name__)

CONSUME_ATTEMPTS = 4
CONSUMABLE = 3  # Discord's SKU type of a consumable one-time purchase (2: durable, 5: subscription)
MAX_LIST_PAGES = 1000
MAX_KNOWN = 4096  # entitlements remembered as handled
# Discord's entitlement types that were paid for: a purchase, a test-mode purchase (the developer's
# own, granted too so the store can be tried out) and, for the server SKU, an application subscription.
PURCHASE, TEST_MODE_PURCHASE, APPLICATION_SUBSCRIPTION = 1, 4, 8


class Premium(commands.Cog):
    def __init__(self, bot: AnimateBot) -> None:
        self.bot = bot
        settings = bot.settings
        self.packs = settings.premium_packs
        self.guild_sku = settings.premium_guild_sku[0] if settings.premium_guild_sku else None
        # Consumed unless GET /skus says a pack is not a consumable (a durable one cannot be).
        self.consumable = dict.fromkeys(self.packs, True)
        # Handled (id, deleted, ends_at), most recent last: spares repeats a database read. Bounded
        # (the oldest go first); the ledger's unique key is what makes a grant happen once.
        self._known: OrderedDict[tuple[int, bool, float | None], None] = OrderedDict()
        self._consuming: set[int] = set()
        self._cursor = 0  # every pack entitlement up to this id was dealt with (see `sweep`)
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[bool]] = set()  # consumes under way

    @property
    def skus(self) -> list[int]:
        return [*self.packs, *([self.guild_sku] if self.guild_sku else [])]

    async def cog_load(self) -> None:
        if self.skus:
            self.bot.premium = self
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="premium-sweep")

    async def cog_unload(self) -> None:
        self.bot.premium = None
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()  # a consume cut short stays pending: the next start's sweep does it
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ where entitlements arrive

    @commands.Cog.listener()
    async def on_entitlement_create(self, ent: discord.Entitlement) -> None:
        await self._safely(ent, None)

    @commands.Cog.listener()
    async def on_entitlement_update(self, ent: discord.Entitlement) -> None:
        await self._safely(ent, None)

    @commands.Cog.listener()
    async def on_entitlement_delete(self, ent: discord.Entitlement) -> None:
        # The event says so whatever its payload's `deleted` flag reads.
        await self._safely_plain(dataclasses.replace(from_discord(ent), deleted=True), None)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self.absorb(interaction)

    async def absorb(self, interaction: discord.Interaction[Any]) -> None:
        """Grant what the interaction's `entitlements` carry (repeats cost nothing: see `_known`)."""
        for ent in interaction.entitlements:
            await self._safely(ent, interaction.guild_id)

    async def _safely(self, ent: discord.Entitlement, seen_guild_id: int | None) -> None:
        await self._safely_plain(from_discord(ent), seen_guild_id)

    async def _safely_plain(self, ent: Entitlement, seen_guild_id: int | None) -> bool:
        """Handle one entitlement, logging a failure: whether it is done with (False: try again)."""
        if ent.sku_id not in self.skus:
            return True  # not ours to sell (or selling is off)
        try:
            await self.handle(ent, seen_guild_id=seen_guild_id)
        except Exception:
            # The sweep finds it again (the entitlement stays listed until it is consumed).
            log.exception("Could not handle entitlement %s (SKU %s)", ent.id, ent.sku_id)
            return False
        return True

    # ------------------------------------------------------------------ what happens to them

    async def handle(self, ent: Entitlement, *, seen_guild_id: int | None = None) -> None:
        key = (ent.id, ent.deleted, ent.ends_at)
        if key in self._known:
            self._known.move_to_end(key)
            return
        premium = self.bot.store.premium
        if not ent.deleted and not self._paid_for(ent):
            self._remember(key)
            return
        if ent.sku_id == self.guild_sku:
            if ent.guild_id is not None:
                await premium.record_subscription(ent)
                log.info(
                    "Server subscription %s of guild %s: ends %s, deleted %s",
                    ent.id,
                    ent.guild_id,
                    ent.ends_at,
                    ent.deleted,
                )
            self._remember(key)
            return
        if ent.deleted:
            await self.revoke(ent, seen_guild_id)
            self._remember(key)
            return
        if ent.user_id is None:
            log.warning("Entitlement %s of a credit pack names no user; ignored", ent.id)
            return
        credits = self.packs[ent.sku_id]
        consumable = self.consumable[ent.sku_id]
        if await premium.grant(ent, credits, consumable=consumable, seen_guild_id=seen_guild_id):
            log.info("Granted %d purchased credits to user %s (entitlement %s)", credits, ent.user_id, ent.id)
        record = await premium.get(ent.id)
        if record is not None and record.consumable and not (record.consumed or record.revoked):
            # In the background: an interaction waiting on this (/quota) must still answer in 3 s.
            if ent.id not in self._consuming:
                task = asyncio.create_task(self.consume(ent.id), name=f"consume-{ent.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return  # known once consumed: until then a repeat checks storage again
        self._remember(key)

    def _remember(self, key: tuple[int, bool, float | None]) -> None:
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > MAX_KNOWN:
            self._known.popitem(last=False)

    def _paid_for(self, ent: Entitlement) -> bool:
        """Whether this entitlement's type grants anything (a gift, a free or an unknown type does not)."""
        allowed = {PURCHASE, TEST_MODE_PURCHASE}
        if ent.sku_id == self.guild_sku:
            allowed.add(APPLICATION_SUBSCRIPTION)
        if ent.type not in allowed:
            log.info(
                "Entitlement %s (SKU %s) is of type %s, not a purchase: ignored", ent.id, ent.sku_id, ent.type
            )
            return False
        if ent.type == TEST_MODE_PURCHASE:
            log.info("Entitlement %s (SKU %s) is a test-mode purchase: granted as one", ent.id, ent.sku_id)
        return True

    async def consume(self, entitlement_id: int) -> bool:
        """Tell Discord the pack is used (so it can be bought again), retrying with capped backoff and
        jitter (honouring Retry-After); False when it still failed -- it stays pending."""
        if entitlement_id in self._consuming:
            return False
        self._consuming.add(entitlement_id)
        try:
            return await self._consume(entitlement_id)
        finally:
            self._consuming.discard(entitlement_id)

    async def _consume(self, entitlement_id: int) -> bool:
        settings = self.bot.settings
        delay = settings.retry_backoff_base
        assert self.bot.application_id is not None
        for attempt in range(1, CONSUME_ATTEMPTS + 1):
            wait = random.uniform(delay / 2, delay)
            try:
                async with asyncio.timeout(settings.http_timeout):
                    await self.bot.http.consume_entitlement(self.bot.application_id, entitlement_id)
            except discord.HTTPException as exc:
                if exc.status == 429:
                    wait = max(wait, _retry_after(exc))
                elif exc.status < 500:
                    # Unknown, already consumed or not consumable: asking again cannot change that.
                    log.warning(
                        "Discord refused to consume entitlement %s (HTTP %s, code %s): not retried",
                        entitlement_id,
                        exc.status,
                        exc.code,
                    )
                    await self.bot.store.premium.mark_consumed(entitlement_id)
                    return True
                reason = f"HTTP {exc.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = type(exc).__name__
            else:
                await self.bot.store.premium.mark_consumed(entitlement_id)
                log.info("Consumed entitlement %s", entitlement_id)
                return True
            if attempt == CONSUME_ATTEMPTS:
                log.warning(
                    "Consuming entitlement %s failed (%s); the sweep retries it", entitlement_id, reason
                )
                return False
            log.info("Consuming entitlement %s failed (%s); retrying in %.1f s", entitlement_id, reason, wait)
            await asyncio.sleep(min(wait, settings.retry_backoff_cap))
            delay = min(settings.retry_backoff_cap, delay * 2)
        return False  # pragma: no cover (the loop returns)

    async def revoke(self, ent: Entitlement, seen_guild_id: int | None) -> None:
        """A refund: take back what is unspent of the pack, and say so in the audit log."""
        premium = self.bot.store.premium
        revocation = await premium.revoke(ent)
        user_id = None if revocation is None else revocation.record.user_id  # the grant's, not the payload's
        if revocation is None or user_id is None:
            return
        record, taken = revocation.record, revocation.taken_back
        log.info(
            "Entitlement %s refunded: took back %d of %d purchased credits from user %s",
            ent.id,
            taken,
            record.credits,
            user_id,
        )
        guild = await self._audit_guild(record, seen_guild_id, user_id)
        if guild is None:
            log.info("Entitlement %s refunded: no server of user %s to audit it in", ent.id, user_id)
            return
        guild_id, loc = guild.id, guild.preferred_locale
        config = await self.bot.store.guilds.get(guild_id)
        if config.audit_channel_id is None:
            log.info("Entitlement %s refunded: guild %s has no audit channel", ent.id, guild_id)
        details = trn(
            loc,
            taken,
            "<@{user}>'s credit pack ({credits} credits) was refunded: {n} unspent credit was taken back "
            "({spent} had been spent).",
            "<@{user}>'s credit pack ({credits} credits) was refunded: {n} unspent credits were taken back "
            "({spent} had been spent).",
            user=user_id,
            credits=record.credits,
            spent=record.credits - taken,
        )
        self.bot.dispatch("animate_audit", guild_id, None, tr(loc, "💸 Credit pack refunded"), details, loc)

    async def _audit_guild(
        self, record: Record, seen_guild_id: int | None, user_id: int
    ) -> discord.Guild | None:
        """Where a refund is audited: the purchase's server, else the one it was seen in, else the
        member's latest job's -- the first the bot is in (never the user-install scope, 0)."""
        for guild_id in (record.guild_id, record.seen_guild_id, seen_guild_id):
            guild = self.bot.get_guild(guild_id) if guild_id else None
            if guild is not None:
                return guild
        for guild_id in await self.bot.store.premium.recent_guilds(user_id):
            guild = self.bot.get_guild(guild_id)
            if guild is not None:
                return guild
        return None

    # ------------------------------------------------------------------ the sweep

    async def _sweep_loop(self) -> None:
        # A revocation's audit line goes to a server the bot is in: wait until the guild cache is
        # filled, or a refund found at start-up could find no server and go unaudited.
        await self.bot.wait_until_ready()
        await self._check_skus()
        try:
            await self.reconcile_refunds()
        except Exception:  # a start-up nicety: the events still cover what happens from now on
            log.exception("Could not look for refunds made while the bot was offline")
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception(
                    "The premium sweep failed; trying again in %.0f s",
                    self.bot.settings.premium_sweep_interval,
                )
            await asyncio.sleep(self.bot.settings.premium_sweep_interval)

    async def sweep(self) -> None:
        """Grant (and consume) what Discord lists and the bot missed, then consume what is pending.

        Packs are listed only past `_cursor`, the newest id up to which every pack listed was dealt
        with: entitlement ids grow with time, so an interval's sweep reads what arrived since the last
        one, not every pack ever sold (the start-up sweep reads them all once). A pack whose handling
        failed holds the cursor before it. Server subscriptions (one per subscribed server) are listed
        whole: a renewal changes an old entitlement. Each page has the HTTP timeout."""
        done, failed = self._cursor, None
        after = discord.Object(self._cursor) if self._cursor else None
        async for ent in self._timed(
            self.bot.entitlements(
                limit=None, after=after, skus=[discord.Object(s) for s in self.packs], exclude_ended=True
            )
        ):
            plain = from_discord(ent)
            if plain.consumed or await self._safely_plain(plain, None):
                done = max(done, plain.id)  # a consumed pack is used up: granted before it was consumed
            else:
                failed = plain.id if failed is None else min(failed, plain.id)
        self._cursor = done if failed is None else max(self._cursor, min(done, failed - 1))
        if self.guild_sku is not None:
            async for ent in self._timed(
                self.bot.entitlements(limit=None, skus=[discord.Object(self.guild_sku)], exclude_ended=True)
            ):
                await self._safely_plain(from_discord(ent), None)
        for record in await self.bot.store.premium.unconsumed():
            await self.consume(record.id)

    async def _timed(self, listing: AsyncIterator[discord.Entitlement]) -> AsyncIterator[discord.Entitlement]:
        """`listing` with the HTTP timeout on each step (a step that fetches a page waits for it)."""
        while True:
            try:
                async with asyncio.timeout(self.bot.settings.http_timeout):
                    ent = await anext(listing)
            except StopAsyncIteration:
                return
            yield ent

    async def reconcile_refunds(self) -> None:
        """Refunds made while the bot was offline (their ENTITLEMENT_DELETE reached nobody): list the
        deleted entitlements too and revoke those granted and not revoked yet, each once, with its
        audit line. discord.py's `entitlements()` never asks for deleted ones (`exclude_deleted`
        defaults to true), so this calls the route itself, paging by id with `after`."""
        premium, revoked = self.bot.store.premium, 0
        async for ent in self._list_with_deleted():
            if not ent.deleted or ent.sku_id not in self.skus:
                continue
            record = await premium.get(ent.id)
            if record is None or record.revoked:
                continue  # never granted here, or already taken back
            await self._safely_plain(ent, None)
            revoked += 1
        if revoked:
            log.info("Start-up: %d entitlement(s) refunded while the bot was offline were revoked", revoked)

    async def _list_with_deleted(self) -> AsyncIterator[Entitlement]:
        assert self.bot.application_id is not None
        route = discord.http.Route(
            "GET", "/applications/{application_id}/entitlements", application_id=self.bot.application_id
        )
        after, size = 0, packs.ENTITLEMENT_PAGE  # read here: tests make it smaller
        for _ in range(MAX_LIST_PAGES):  # bounded, whatever Discord answers
            params = {
                "sku_ids": ",".join(str(s) for s in self.skus),
                "exclude_deleted": "false",
                "limit": size,
                "after": after,
            }
            async with asyncio.timeout(self.bot.settings.http_timeout):
                page = await self.bot.http.request(route, params=params)
            if not isinstance(page, list):
                log.warning("Discord listed the entitlements as %s, not a list; stopped", type(page).__name__)
                return
            ents = [e for e in (from_payload(raw) for raw in page) if e is not None]
            for ent in ents:
                yield ent
            newest = max((e.id for e in ents), default=after)
            if len(page) < size or newest <= after:
                return  # the last page (or one that would not move the cursor on)
            after = newest
        log.warning("Stopped listing entitlements after %d pages", MAX_LIST_PAGES)

    async def _check_skus(self) -> None:
        """Warn about configured SKUs the application does not sell as expected (start-up only)."""
        try:
            skus = {sku.id: sku for sku in await self.bot.fetch_skus()}
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("Could not list the application's SKUs (%s); assuming the packs are consumable", exc)
            return
        for sku_id in self.skus:
            sku = skus.get(sku_id)
            if sku is None:
                log.warning(
                    "SKU %s (PREMIUM_SKUS / PREMIUM_GUILD_SKU) is not one of this application's", sku_id
                )
            elif sku_id in self.packs and sku.type.value != CONSUMABLE:
                self.consumable[sku_id] = False
                log.warning("SKU %s is not a consumable: each member can buy it only once", sku_id)


def _retry_after(exc: discord.HTTPException) -> float:
    try:
        return float(exc.response.headers.get("Retry-After", 0))
    except (TypeError, ValueError, AttributeError):
        return 0.0


async def setup(bot: AnimateBot) -> None:
    await bot.add_cog(Premium(bot))
