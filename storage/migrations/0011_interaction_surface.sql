-- Jobs that live in the interaction (a user-installed /animate in a DM, a group DM or a server that did
-- not add the bot): their status is the interaction's original response, the video a follow-up. The
-- token is a 15-minute credential: kept only while the job runs (so a restarted or another fleet
-- process can go on editing), cleared when the job ends or Discord rejects it. NULL surface: a
-- channel message, as before.
ALTER TABLE jobs ADD COLUMN surface TEXT;
ALTER TABLE jobs ADD COLUMN interaction_app_id {{bigint}};
ALTER TABLE jobs ADD COLUMN interaction_token TEXT;
ALTER TABLE jobs ADD COLUMN interaction_expires_at {{float}};
-- Discord's interaction context: 0 a server, 1 the DM with the bot, 2 a DM or group DM between users.
ALTER TABLE jobs ADD COLUMN interaction_context INTEGER;
