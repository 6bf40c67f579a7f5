-- What a job was started from when one click may arrive twice (e.g. "again:<job>:<message>" for the
-- Animate again button, "edit:<job>:<modal>" for one opened Edit prompt form). At most one unfinished
-- job per origin, across processes: a double click creates one job and one charge; once that job has
-- ended, the same button may start another.
ALTER TABLE jobs ADD COLUMN origin TEXT;
CREATE UNIQUE INDEX jobs_one_active_per_origin ON jobs (origin)
    WHERE origin IS NOT NULL AND state IN ('awaiting_approval', 'pending', 'queued', 'running', 'delivering');
