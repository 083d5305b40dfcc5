-- The spine: tenants and their API keys, notifications, deliveries, attempts, outbox.
-- Statuses are text with CHECK constraints rather than enum types, so adding a state is
-- a constraint change, not an ALTER TYPE that cannot run inside a transaction.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    -- SHA-256 of the key; the key itself is shown once, at creation.
    key_hash      bytea NOT NULL UNIQUE,
    display_prefix text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE notifications (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    type            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'sent', 'partial', 'failed', 'cancelled')),
    priority        text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    data            jsonb NOT NULL DEFAULT '{}',
    content         jsonb NOT NULL DEFAULT '{}',
    correlation_id  text,
    send_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_tenant_created ON notifications (tenant_id, created_at DESC, id DESC);

CREATE TABLE deliveries (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL,
    notification_id      uuid NOT NULL REFERENCES notifications (id),
    channel              text NOT NULL CHECK (channel IN ('email', 'sms', 'whatsapp', 'novu')),
    -- The address (or Novu subscriber id) on this channel.
    recipient            text NOT NULL,
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'queued', 'sending', 'retrying', 'sent', 'delivered',
                                           'failed', 'bounced', 'undelivered', 'suppressed', 'cancelled')),
    -- Attempts started so far; the next message asks for attempts + 1.
    attempts             integer NOT NULL DEFAULT 0,
    provider             text,
    provider_message_id  text,
    last_error_code      text,
    last_error_message   text,
    next_attempt_at      timestamptz,
    sent_at              timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_notification ON deliveries (notification_id);

CREATE TABLE delivery_attempts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    delivery_id       uuid NOT NULL REFERENCES deliveries (id),
    -- Not unique: a send repeated after a crash is recorded again under the same number,
    -- so every duplicate that did happen stays visible.
    number            integer NOT NULL,
    provider          text NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('sent', 'retryable', 'ambiguous', 'permanent', 'config')),
    error_code        text,
    error_message     text,
    response_excerpt  text,
    latency_ms        integer NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, number);

-- What the relay must publish. A row is deleted in the same transaction that claimed it,
-- and that transaction commits only after the broker confirmed the message.
CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    notification_id  uuid NOT NULL,
    delivery_id      uuid NOT NULL,
    channel          text NOT NULL,
    attempt          integer NOT NULL,
    priority         smallint NOT NULL,
    available_at     timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_claim ON outbox (priority DESC, available_at, id);
CREATE INDEX outbox_available ON outbox (available_at);
