-- The chat channel (Slack, Microsoft Teams, Discord): deliveries and suppressions on it,
-- and subscribers' chat addresses.

ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_channel_check,
    ADD CONSTRAINT deliveries_channel_check CHECK (channel IN ('email', 'sms', 'whatsapp', 'novu', 'chat', 'in_app'));

ALTER TABLE suppressions
    DROP CONSTRAINT suppressions_channel_check,
    ADD CONSTRAINT suppressions_channel_check CHECK (channel IN ('email', 'sms', 'whatsapp', 'novu', 'chat'));

-- Per key (`slack`, `teams`, `discord`): `{"to": <the recipient its deliveries get>,
-- "last4": <a webhook URL's last four characters>}`. A webhook URL is a secret: `to` holds
-- it sealed (`discord:v1.<key id>.<ciphertext>`), never in clear; a Slack id is in clear
-- (`slack:U024BE7LH`).
ALTER TABLE subscribers ADD COLUMN chat jsonb NOT NULL DEFAULT '{}';
