-- Delivery is recorded before the upload starts, so a restart can look for a video that was posted
-- just before a crash instead of posting it twice.
ALTER TABLE jobs ADD COLUMN delivery_started_at {{float}};
-- When the requester was told that RunComfy is taking unusually long (told once, even across restarts).
ALTER TABLE jobs ADD COLUMN overdue_notified_at {{float}};
-- 0 once the status message had to be re-posted without the source image (the original was deleted).
ALTER TABLE jobs ADD COLUMN status_has_image INTEGER NOT NULL DEFAULT 1;
-- Where the status message lives when it is not in the job's channel (re-posted into the thread).
ALTER TABLE jobs ADD COLUMN status_channel_id {{bigint}};
