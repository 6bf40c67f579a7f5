-- Credit packs sold through Discord (Premium Apps, README "Selling credits"): one row per entitlement
-- the bot has seen, keyed by Discord's entitlement id, so an entitlement seen twice (the event, then an
-- interaction's `entitlements`) is granted once. `kind` 'credits' is a pack (user-wide credits that never
-- expire), 'guild' a server subscription (raises the server's default allowance while active).
CREATE TABLE premium_entitlements (
    id            {{bigint}} PRIMARY KEY,
    sku_id        {{bigint}} NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('credits', 'guild')),
    user_id       {{bigint}},
    guild_id      {{bigint}},
    seen_guild_id {{bigint}},
    credits       INTEGER NOT NULL,
    consumable    INTEGER NOT NULL,
    ends_at       {{float}},
    consumed_at   {{float}},
    revoked_at    {{float}},
    taken_back    INTEGER NOT NULL DEFAULT 0,
    created_at    {{float}}    NOT NULL
);
CREATE INDEX premium_entitlements_by_user ON premium_entitlements (user_id) WHERE kind = 'credits';
CREATE INDEX premium_entitlements_by_guild ON premium_entitlements (guild_id) WHERE kind = 'guild';
CREATE INDEX premium_entitlements_unconsumed ON premium_entitlements (created_at)
    WHERE consumable = 1 AND consumed_at IS NULL;
-- How many of a charge's credits came from purchased credits (a refund row carries the same, negated),
-- so a failed job's refund returns each credit to the bucket it came from.
ALTER TABLE quota_ledger ADD COLUMN purchased INTEGER NOT NULL DEFAULT 0;
CREATE INDEX quota_ledger_purchased ON quota_ledger (user_id) WHERE purchased != 0;
