-- Per-guild administration: quotas, channels, moderation. Every row is keyed by guild_id.
-- A NULL setting means "use the bot-wide default from the environment" (DAILY_QUOTA, COST_480P, ...).
CREATE TABLE guild_settings (
    guild_id               {{bigint}} PRIMARY KEY,
    allowance              INTEGER CHECK (allowance IS NULL OR allowance >= 0),
    period                 TEXT    NOT NULL DEFAULT 'day' CHECK (period IN ('day', 'week')),
    reset_hour             INTEGER NOT NULL DEFAULT 0 CHECK (reset_hour BETWEEN 0 AND 23),
    cost_480p              INTEGER CHECK (cost_480p IS NULL OR cost_480p >= 0),
    cost_1080p             INTEGER CHECK (cost_1080p IS NULL OR cost_1080p >= 0),
    max_concurrent         INTEGER CHECK (max_concurrent IS NULL OR max_concurrent > 0),
    cooldown_seconds       INTEGER NOT NULL DEFAULT 0 CHECK (cooldown_seconds >= 0),
    daily_budget           INTEGER CHECK (daily_budget IS NULL OR daily_budget >= 0),
    unlimited_role_id      {{bigint}},
    admin_role_id          {{bigint}},
    moderator_role_id      {{bigint}},
    approval_required      INTEGER NOT NULL DEFAULT 0,
    require_age_restricted INTEGER NOT NULL DEFAULT 0,
    audit_channel_id       {{bigint}},
    updated_at             {{float}}    NOT NULL,
    updated_by             {{bigint}}
);

-- Allowance per role; a member with several of these roles gets the highest.
CREATE TABLE guild_role_allowances (
    guild_id  {{bigint}} NOT NULL,
    role_id   {{bigint}} NOT NULL,
    allowance INTEGER NOT NULL CHECK (allowance >= 0),
    PRIMARY KEY (guild_id, role_id)
);

-- Allowance for one member, beating every role.
CREATE TABLE guild_user_overrides (
    guild_id  {{bigint}} NOT NULL,
    user_id   {{bigint}} NOT NULL,
    allowance INTEGER NOT NULL CHECK (allowance >= 0),
    PRIMARY KEY (guild_id, user_id)
);

-- Channels /animate may be used in; none at all means everywhere.
CREATE TABLE guild_channels (
    guild_id   {{bigint}} NOT NULL,
    channel_id {{bigint}} NOT NULL,
    PRIMARY KEY (guild_id, channel_id)
);

-- Prompt blocklist: whole words (case-insensitive) and regular expressions.
CREATE TABLE guild_blocklist (
    id         {{id}},
    guild_id   {{bigint}} NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('word', 'regex')),
    pattern    TEXT    NOT NULL,
    added_by   {{bigint}},
    created_at {{float}}    NOT NULL,
    UNIQUE (guild_id, kind, pattern)
);

-- Members banned from the bot (not from the server).
CREATE TABLE guild_bans (
    guild_id   {{bigint}} NOT NULL,
    user_id    {{bigint}} NOT NULL,
    reason     TEXT,
    banned_by  {{bigint}},
    created_at {{float}}    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

-- The guild daily budget and /animate-stats sum a guild's charges by time.
CREATE INDEX quota_ledger_by_guild_time ON quota_ledger (guild_id, created_at);
CREATE INDEX jobs_by_guild_state ON jobs (guild_id, state);
