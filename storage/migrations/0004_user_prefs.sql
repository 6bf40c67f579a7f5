-- Per-user preferences, across servers (a DM reaches the same person wherever they used the bot).
CREATE TABLE user_prefs (
    user_id      {{bigint}} PRIMARY KEY,
    dm_on_finish INTEGER NOT NULL DEFAULT 0,
    updated_at   {{float}}    NOT NULL
);
