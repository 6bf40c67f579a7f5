-- Spoilers (issue #15). A job remembers whether its source image and video are posted as spoilers
-- (Discord blurs an attachment named SPOILER_…), so a restart or another process delivers it the same
-- way; a server may force spoilers on every job.
ALTER TABLE jobs ADD COLUMN spoiler INTEGER NOT NULL DEFAULT 0;
ALTER TABLE guild_settings ADD COLUMN force_spoiler INTEGER NOT NULL DEFAULT 0;
