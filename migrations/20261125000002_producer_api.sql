-- The producer API: idempotency keys, per-tenant rate limits, audit events, retry series.

-- An idempotency key belongs to a tenant and is bound to the hash of the request it first
-- came with. The primary key is what enforces "one notification per key": a concurrent
-- request with the same key waits on the first one's uncommitted row.
CREATE TABLE idempotency_keys (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    key              text NOT NULL,
    request_hash     bytea NOT NULL,
    notification_id  uuid NOT NULL,
    -- The 202 body, replayed as it was.
    response         jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

ALTER TABLE notifications ADD COLUMN idempotency_key text;
CREATE INDEX notifications_tenant_correlation ON notifications (tenant_id, correlation_id, created_at DESC, id DESC)
    WHERE correlation_id IS NOT NULL;

-- Intake rate per tenant; NULL means the API's configured default.
ALTER TABLE tenants
    ADD COLUMN rate_limit_per_second integer CHECK (rate_limit_per_second > 0),
    ADD COLUMN rate_limit_burst integer CHECK (rate_limit_burst > 0);

-- A delivery retried by an operator starts a new series of attempts: the retry policy
-- counts attempts after `retry_base`, while attempt numbers keep increasing.
ALTER TABLE deliveries ADD COLUMN retry_base integer NOT NULL DEFAULT 0;

-- State changes a user or operator caused.
CREATE TABLE audit_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    notification_id  uuid NOT NULL REFERENCES notifications (id),
    delivery_id      uuid,
    action           text NOT NULL CHECK (action IN ('accepted', 'cancelled', 'retried')),
    -- Who: `api_key:<id>` or `operator`.
    actor            text NOT NULL,
    detail           jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_notification ON audit_events (notification_id, id);
