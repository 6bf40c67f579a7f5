-- The language of a job's public messages (status embed, thread and delivery messages, audit posts,
-- DMs): the server's Discord locale when the job was created, e.g. "de" or "en-US". NULL (jobs made
-- before this migration): English.
ALTER TABLE jobs ADD COLUMN locale TEXT;
