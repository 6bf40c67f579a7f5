-- Jobs: one row per /animate request, from credit reservation to delivery.
CREATE TABLE jobs (
    id                  {{id}},
    guild_id            {{bigint}} NOT NULL,
    channel_id          {{bigint}} NOT NULL,
    user_id             {{bigint}} NOT NULL,
    status_message_id   {{bigint}},
    thread_id           {{bigint}},
    prompt              TEXT    NOT NULL,
    negative_prompt     TEXT,
    resolution          TEXT    NOT NULL,
    template            TEXT,
    seed                {{bigint}},
    prompt_extend       INTEGER NOT NULL,
    image_url           TEXT,
    image_note          TEXT,
    cost                INTEGER NOT NULL,
    upload_limit        {{bigint}} NOT NULL,
    request_id          TEXT UNIQUE,
    state               TEXT    NOT NULL CHECK (state IN
                            ('awaiting_approval', 'pending', 'queued', 'running', 'delivering',
                             'delivered', 'failed', 'cancelled', 'rejected')),
    queue_position      INTEGER,
    error               TEXT,
    result_url          TEXT,
    delivery_message_id {{bigint}},
    poll_count          INTEGER NOT NULL DEFAULT 0,
    created_at          {{float}}    NOT NULL,
    submitted_at        {{float}},
    started_at          {{float}},
    finished_at         {{float}},
    updated_at          {{float}}    NOT NULL
);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('pending', 'queued', 'running', 'delivering');
CREATE INDEX jobs_by_user ON jobs (guild_id, user_id, created_at);

-- Quota ledger: a charge per job, at most one refund per job, grants by admins.
-- `period` is the quota period the credits belong to, so a refund always lands in the charge's period.
CREATE TABLE quota_ledger (
    id         {{id}},
    guild_id   {{bigint}} NOT NULL,
    user_id    {{bigint}} NOT NULL,
    job_id     {{bigint}} REFERENCES jobs (id),
    period     TEXT    NOT NULL,
    credits    INTEGER NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('charge', 'refund', 'grant')),
    reason     TEXT,
    created_at {{float}}    NOT NULL
);
CREATE UNIQUE INDEX quota_ledger_one_per_job ON quota_ledger (job_id, kind) WHERE job_id IS NOT NULL;
CREATE INDEX quota_ledger_by_user ON quota_ledger (guild_id, user_id, period);

-- Small key/value facts about the bot itself (e.g. the hash of the last synced command set).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
