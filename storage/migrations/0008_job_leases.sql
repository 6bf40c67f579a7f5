-- Which bot process works on an unfinished job, and until when (README "Growing past one server").
-- The owner renews its leases while it lives; a job whose lease expired (its process died) is claimed
-- by another. A finished job has no lease.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at {{float}};
-- Claiming: unfinished jobs by lease expiry (NULL = nobody's), and renewing: one owner's jobs.
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at)
    WHERE state IN ('pending', 'queued', 'running', 'delivering');
CREATE INDEX jobs_lease_owner ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
