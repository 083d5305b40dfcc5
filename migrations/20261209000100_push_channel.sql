-- The push channel (FCM, APNs, Web Push): deliveries and suppressions on it, and the
-- devices subscribers' apps register (PUT /v1/subscribers/{id}/devices/{device_id}).

ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_channel_check,
    ADD CONSTRAINT deliveries_channel_check
        CHECK (channel IN ('email', 'sms', 'whatsapp', 'novu', 'chat', 'push', 'in_app'));

ALTER TABLE suppressions
    DROP CONSTRAINT suppressions_channel_check,
    ADD CONSTRAINT suppressions_channel_check CHECK (channel IN ('email', 'sms', 'whatsapp', 'novu', 'chat', 'push'));

-- A device of a subscriber: its push token on one platform. `device_id` is the app's own
-- id for the device (a push delivery's recipient). `token_hash` (SHA-256 of
-- `<platform>:<token>`) is unique: a token belongs to one subscriber of one tenant, and
-- registering it elsewhere moves it. Erasing the subscriber removes its devices.
CREATE TABLE devices (
    tenant_id     uuid NOT NULL,
    subscriber_id text NOT NULL,
    device_id     text NOT NULL CHECK (length(device_id) BETWEEN 1 AND 200),
    platform      text NOT NULL CHECK (platform IN ('fcm', 'apns', 'webpush')),
    token         text NOT NULL,
    token_hash    bytea NOT NULL,
    app           text,
    locale        text,
    timezone      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subscriber_id, device_id),
    FOREIGN KEY (tenant_id, subscriber_id) REFERENCES subscribers (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX devices_token ON devices (token_hash);

-- A device's removal is audited (the app removed it, a provider reported it gone, its
-- token moved to another subscriber, or the subscriber's bound evicted it); such an event
-- names the subscriber and, when a delivery found it gone, that delivery.
ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_action_check,
    ADD CONSTRAINT audit_events_action_check
        CHECK (action IN ('accepted', 'cancelled', 'retried', 'subscriber_erased', 'recovered', 'device_removed'));
