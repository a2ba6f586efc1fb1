-- Events may carry a context (device, platform, channel, locale, coarse geo, network): the
-- archive keeps it minimized (docs/privacy.md).
ALTER TABLE events ADD COLUMN IF NOT EXISTS context jsonb;
