-- Where the video was posted: the thread, or the channel when the thread was gone (for links to it).
ALTER TABLE jobs ADD COLUMN delivery_channel_id {{bigint}};
